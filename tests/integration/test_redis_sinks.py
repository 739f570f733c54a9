"""The flows' Redis sinks against a real Redis: which keys hold what after a batch, TTLs, and script reloads."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

import flows.sinks as sinks
from contracts import redis_keys
from contracts.bar import Bar, Indicators, encode_bar, timeframe_ms
from flows.decode import WireTick
from tests.ticks import wire_tick

pytestmark = pytest.mark.integration

T0 = 1_705_316_400_000  # 2024-01-15 11:00 UTC, on every timeframe's grid up to 1h


def bar(ticker: str, timeframe: str, start: int, close: float, final: bool) -> Bar:
    length = timeframe_ms(timeframe)
    return Bar(
        ticker=ticker, timeframe=timeframe, start=start, end=start + length, open=1.0, high=max(1.0, close) + 1,
        low=0.5, close=close, volume=10, vwap=1.0, trades=2, first_tick=start, last_tick=start + 1, final=final,
        indicators=Indicators(sma_20=close) if final else None,
    )  # fmt: skip


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis[bytes]]:
    c = redis.Redis.from_url(redis_url)
    yield c
    c.close()


def write_bars(redis_url: str, bars: list[Bar]) -> None:
    part = sinks.RedisBarSink(redis_url).build("bars", 0, 1)
    try:
        part.write_batch([sinks.EncodedBar(b, encode_bar(b)) for b in bars])
    finally:
        part.close()


def test_final_bars_and_indicators_keep_the_last_bar_of_each_key(redis_url: str, client: redis.Redis[bytes]) -> None:
    bars = [
        bar("AAA", "1m", T0, 10.0, final=True),
        bar("AAA", "5m", T0, 11.0, final=True),
        bar("BBB", "1m", T0, 20.0, final=True),
        bar("AAA", "1m", T0 + 60_000, 12.0, final=True),  # same key again: the later bar wins
    ]
    write_bars(redis_url, bars)
    assert client.get(redis_keys.final_bar("AAA", "1m")) == encode_bar(bars[3])
    assert client.get(redis_keys.final_bar("AAA", "5m")) == encode_bar(bars[1])
    assert client.get(redis_keys.final_bar("BBB", "1m")) == encode_bar(bars[2])
    assert client.hgetall(redis_keys.indicators("AAA")) == {b"1m": encode_bar(bars[3]), b"5m": encode_bar(bars[1])}
    assert client.hgetall(redis_keys.indicators("BBB")) == {b"1m": encode_bar(bars[2])}
    assert client.ttl(redis_keys.final_bar("AAA", "1m")) == -1  # no expiry
    assert not client.keys("bar:*:live")


def test_live_bars_get_their_ttl_in_chunks_and_survive_a_script_cache_flush(
    redis_url: str, client: redis.Redis[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sinks, "SCRIPT_KEYS", 3)  # several script calls per batch
    tickers = [f"T{i}" for i in range(4)]
    first = [bar(t, tf, T0, 5.0, final=False) for t in tickers for tf in ("1m", "1h")]
    first.insert(5, bar("T0", "1m", T0, 5.5, final=False))  # T0 1m again, in a later script call: this one wins
    final = bar("T3", "1m", T0, 9.0, final=True)
    part = sinks.RedisBarSink(redis_url).build("bars", 0, 1)  # one partition for the whole test, as in a flow
    try:
        part.write_batch([sinks.EncodedBar(b, encode_bar(b)) for b in [*first, final]])  # live and final mixed
        client.script_flush()  # a restarted Redis has no scripts: the next batch must still work
        later = [bar("T1", "1m", T0, 7.0, final=False), bar("T2", "1h", T0, 8.0, final=False)]
        part.write_batch([sinks.EncodedBar(b, encode_bar(b)) for b in later])
    finally:
        part.close()
    expected = {redis_keys.live_bar(b.ticker, b.timeframe): b for b in [*first, *later]}  # later ones win
    assert len(expected) == 8
    assert expected[redis_keys.live_bar("T0", "1m")].close == 5.5
    for key, live in expected.items():
        assert client.get(key) == encode_bar(live), key
        ttl = client.ttl(key)
        assert 0 < ttl <= redis_keys.live_bar_ttl_s(timeframe_ms(live.timeframe)), (key, ttl)
    assert client.ttl(redis_keys.live_bar("T0", "1h")) > redis_keys.live_bar_ttl_s(timeframe_ms("1m"))
    assert client.keys("bar:*:final") == [redis_keys.final_bar("T3", "1m").encode()]
    assert client.get(redis_keys.final_bar("T3", "1m")) == encode_bar(final)


def test_latest_quote_is_the_newest_tick_per_ticker_as_on_kafka(redis_url: str, client: redis.Redis[bytes]) -> None:
    def tick(ticker: str, seq: int) -> WireTick:
        return wire_tick(ticker, seq, T0 + seq, 10.0, volume=5)

    part = sinks.RedisQuoteSink(redis_url).build("latest", 0, 1)
    try:
        part.write_batch([[tick("AAA", 1), tick("BBB", 2)], [tick("AAA", 3)]])
        part.write_batch([])
    finally:
        part.close()
    encode = sinks._TICK_ENCODER.encode
    assert client.get(redis_keys.latest_price("AAA")) == encode(tick("AAA", 3))
    assert client.get(redis_keys.latest_price("BBB")) == encode(tick("BBB", 2))
    assert sorted(client.keys("*")) == [b"latest_price:AAA", b"latest_price:BBB"]


def test_latest_quote_never_goes_back_in_event_time(redis_url: str, client: redis.Redis[bytes]) -> None:
    """A tick older than the stored one (later dead-lettered as late, or replayed after a restart) leaves the
    latest quote alone, within a batch and across batches; a newer one, or the same time with a higher seq,
    replaces it; a stored value that is not a tick is overwritten."""

    def tick(ticker: str, seq: int, ts: int, price: float = 10.0) -> WireTick:
        return wire_tick(ticker, seq, ts, price)

    encode = sinks._TICK_ENCODER.encode
    client.set(redis_keys.latest_price("CCC"), b"not json")
    part = sinks.RedisQuoteSink(redis_url).build("latest", 0, 1)
    try:
        part.write_batch([[tick("AAA", 5, T0 + 100_000, 15.0)], [tick("AAA", 6, T0 + 30_000, 9.0)]])
        assert client.get(redis_keys.latest_price("AAA")) == encode(tick("AAA", 5, T0 + 100_000, 15.0))
        part.write_batch([[tick("AAA", 7, T0 + 50_000, 9.0), tick("CCC", 1, T0)]])  # older: a late tick
        assert client.get(redis_keys.latest_price("AAA")) == encode(tick("AAA", 5, T0 + 100_000, 15.0))
        assert client.get(redis_keys.latest_price("CCC")) == encode(tick("CCC", 1, T0))
        part.write_batch([[tick("AAA", 8, T0 + 100_000, 16.0)]])  # same time, higher seq
        assert client.get(redis_keys.latest_price("AAA")) == encode(tick("AAA", 8, T0 + 100_000, 16.0))
        part.write_batch([[tick("AAA", 9, T0 + 100_001, 17.0)]])
        assert client.get(redis_keys.latest_price("AAA")) == encode(tick("AAA", 9, T0 + 100_001, 17.0))
    finally:
        part.close()
