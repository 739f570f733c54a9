"""The local stack's servers start from our own scripts and behave as the platform needs."""

from __future__ import annotations

import psycopg
import pytest
import redis
from confluent_kafka import Producer

from common.errors import StackError
from stack.services import TICKS_TOPIC_CONFIG, ensure_topic_config
from tests.support import read_topic

pytestmark = pytest.mark.integration


def test_kafka_round_trip_on_a_fresh_topic(kafka_bootstrap: str, make_topic) -> None:
    topic = make_topic(partitions=3)
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "enable.idempotence": True})
    for i in range(30):
        producer.produce(topic, key=f"K{i % 3}", value=str(i).encode())
    assert producer.flush(10) == 0
    messages = read_topic(kafka_bootstrap, topic)
    got = [int(m.value()) for m in messages]
    assert {m.key() for m in messages} == {b"K0", b"K1", b"K2"}
    assert sorted(got) == list(range(30))


def test_topics_are_not_auto_created(kafka_bootstrap: str) -> None:
    from confluent_kafka.admin import AdminClient

    producer = Producer({"bootstrap.servers": kafka_bootstrap, "message.timeout.ms": 2000})
    producer.produce("typo-topic-never-created", value=b"x")
    producer.flush(5)
    topics = AdminClient({"bootstrap.servers": kafka_bootstrap}).list_topics(timeout=5).topics
    assert "typo-topic-never-created" not in topics


def timestamp_type(bootstrap: str, topic: str) -> str:
    from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType

    resource = ConfigResource(ResourceType.TOPIC, topic)
    admin = AdminClient({"bootstrap.servers": bootstrap})  # kept alive until the answer: a freed client fails it
    configs = admin.describe_configs([resource])[resource].result(10)
    return str(configs["message.timestamp.type"].value)


def test_the_ticks_topic_gets_broker_timestamps_new_or_existing(kafka_bootstrap: str, make_topic) -> None:
    """``make up`` creates market-ticks with LogAppendTime and switches one an older version created."""
    fresh = make_topic(partitions=1, config=TICKS_TOPIC_CONFIG)
    assert timestamp_type(kafka_bootstrap, fresh) == "LogAppendTime"
    assert ensure_topic_config(kafka_bootstrap, fresh, TICKS_TOPIC_CONFIG) == {}  # nothing to change
    older = make_topic(partitions=1)
    assert timestamp_type(kafka_bootstrap, older) == "CreateTime"
    changed = ensure_topic_config(kafka_bootstrap, older, TICKS_TOPIC_CONFIG)
    assert changed == {"message.timestamp.type": "CreateTime"}
    assert timestamp_type(kafka_bootstrap, older) == "LogAppendTime"
    with pytest.raises(StackError, match="no-such-topic"):
        ensure_topic_config(kafka_bootstrap, "no-such-topic", TICKS_TOPIC_CONFIG)


def test_migrations_create_native_partitioned_tables(pg_url: str) -> None:
    with psycopg.connect(pg_url) as conn:
        kinds = dict(
            conn.execute(
                "SELECT relname, relkind FROM pg_class WHERE relname IN ('market_ticks', 'market_bars', 'tickers')"
            ).fetchall()
        )
        assert kinds == {"market_ticks": "p", "market_bars": "p", "tickers": "r"}
        made = conn.execute(
            "SELECT md_ensure_partitions('market_ticks', TIMESTAMPTZ '2020-01-01',"
            " TIMESTAMPTZ '2020-01-03', INTERVAL '1 day')"
        ).fetchone()
        assert made == (2,)
        conn.execute(
            "INSERT INTO market_ticks VALUES ('2020-01-01 10:00+00', 'SYNTH', 1, 150.25, 150.24, 150.26, 1, 1, 100)"
        )
        # retention drops whole partitions older than the cutoff, and nothing newer
        dropped = conn.execute("SELECT md_drop_partitions_before('market_ticks', TIMESTAMPTZ '2020-01-02')").fetchone()
        assert dropped == (1,)
        assert conn.execute("SELECT count(*) FROM market_ticks").fetchone() == (0,)
        assert conn.execute("SELECT to_regclass('market_ticks_p20200102')").fetchone() == ("market_ticks_p20200102",)


def test_tick_rows_are_idempotent_on_ticker_time_seq(pg_url: str) -> None:
    row = ("SYNTH", 7, 150.25, 150.24, 150.26, 3, 4, 100)
    with psycopg.connect(pg_url) as conn:
        for _ in range(2):
            conn.execute(
                "INSERT INTO market_ticks (time, ticker, seq, price, bid, ask, bid_size, ask_size, volume)"
                " VALUES (now() - interval '1 hour', %s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT DO NOTHING",
                row,
            )
        # now() is the transaction start: both inserts carry the same time, so the second is a no-op
        assert conn.execute("SELECT count(*) FROM market_ticks").fetchone() == (1,)


def test_invalid_tick_rows_are_rejected_by_the_schema(pg_url: str) -> None:
    with psycopg.connect(pg_url) as conn, pytest.raises(psycopg.errors.CheckViolation):
        conn.execute("INSERT INTO market_ticks VALUES (now(), 'SYNTH', 1, 150.25, 150.30, 150.20, 1, 1, 100)")


def test_redis_answers_and_the_test_server_keeps_nothing_on_disk(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    client.set("k", "v")
    assert client.get("k") == b"v"
    # prepare_redis(durable=False): no RDB snapshots, no append-only file
    assert client.config_get("save") == {"save": ""}
    assert client.config_get("appendonly") == {"appendonly": "no"}
