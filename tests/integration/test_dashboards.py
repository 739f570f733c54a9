"""The Grafana dashboards work against the real system, without a Grafana server.

Runs Kafka, PostgreSQL and Redis (session fixtures), a real Prometheus with the repo's config and rules
(file_sd targets as ``make up`` writes them), and the simulator, the bars, ticks and anomalies flows and a
two-worker gateway as subprocesses. Then every PromQL expression of every dashboard, with Grafana's variables
substituted, must be valid and return data from Prometheus's HTTP API, and so must every series the panels split
by (each ``path`` of the end-to-end latency, each ``stage`` of the tick rates), so a panel cannot pass on one
series of several; every SQL query (panels and variables), with ``$ticker``, each value of ``$timeframe`` and
``$__timeFilter(...)`` substituted, must run against the database and return rows. It also checks that the two
gateway workers report as one (prometheus-client multiprocess mode), and the gateway's ticks/s is the stream's
rate, not twice it.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from confluent_kafka import Producer
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from grafana.__main__ import DASHBOARDS
from grafana.common import to_dict
from stack.runner import running
from stack.services import ServiceSpec, free_port, http_ok, metrics_ready, prepare_prometheus
from stack.settings import REPO_ROOT, StackSettings
from tests.support import seed_universe, service_env

pytestmark = pytest.mark.integration

#: what Grafana puts for ``$__rate_interval`` at a 5 s scrape interval is 20 s; a little more is steadier here
RATE_INTERVAL = "30s"
WAIT_S = 150.0
#: ``end_to_end_latency_seconds`` paths this stack produces: the flows' stored bars, the gateway's four channels
LATENCY_PATHS = ("final_bar_stored", "live_bar_stored", "ws_ticks", "ws_bars", "ws_indicators", "ws_anomalies")
#: series the split panels must each show (a panel with data from one of its series is not enough)
REQUIRED = {
    **{f"latency path {p}": f'end_to_end_latency_seconds_count{{path="{p}"}} > 0' for p in LATENCY_PATHS},
    **{
        f"ticks/s stage {s}": f'messages_per_second{{stage="{s}"}} > 0'
        for s in ("simulator", "bars", "ticks", "gateway")
    },
    **{f"ticks received stage {s}": f'tick_messages_received_total{{stage="{s}"}} > 0' for s in ("bars", "ticks")},
    "anomalies flow up": 'up{job="flow-anomalies"} == 1',
    **{
        f"process metrics of {job}": f'process_resident_memory_bytes{{job="{job}"}} > 0'
        for job in ("simulator", "flow-bars", "gateway")  # the gateway runs two workers here
    },
    "anomalies detected": "flow_anomalies_detected_total > 0",
}


def _targets(board: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            yield panel["title"], target


def _prom_exprs() -> list[tuple[str, str]]:
    out = []
    for name, build in DASHBOARDS.items():
        board = to_dict(build())
        for title, target in _targets(board):
            if "expr" in target:
                out.append((f"{name}: {title} [{target['refId']}]", target["expr"]))
    return out


def _prom_variables() -> list[tuple[str, str, str]]:
    """(what, metric, label) of every ``label_values(metric, label)`` variable."""
    out = []
    for name, build in DASHBOARDS.items():
        for variable in to_dict(build()).get("templating", {}).get("list", []):
            if variable.get("datasource", {}).get("type") == "prometheus":
                match = re.fullmatch(r"label_values\((\w+), (\w+)\)", variable["query"]["query"])
                assert match, f"{name}: variable {variable['name']}: unsupported query {variable['query']!r}"
                out.append((f"{name}: variable {variable['name']}", *match.groups()))
    return out


def _sql_queries() -> list[tuple[str, str]]:
    out = []
    for name, build in DASHBOARDS.items():
        board = to_dict(build())
        out += [(f"{name}: {t}", target["rawSql"]) for t, target in _targets(board) if "rawSql" in target]
    return out


def _timeframes() -> list[str]:
    """Every value the market dashboard's ``$timeframe`` variable offers."""
    values: list[str] = []
    for build in DASHBOARDS.values():
        for variable in to_dict(build()).get("templating", {}).get("list", []):
            if variable["name"] == "timeframe":
                values += [v.strip() for v in variable["query"].split(",")]
    assert values, "no $timeframe variable"
    return values


def _history_window(now: datetime) -> tuple[datetime, datetime]:
    """An hour before the last UTC midnight at least two hours ago until 5 minutes after it: produced before the
    live simulator starts, it closes a 1h and a (partial) 1d bar, which a few minutes of live data cannot."""
    midnight = (now - timedelta(hours=2)).replace(hour=0, minute=0, second=0, microsecond=0)
    return midnight - timedelta(hours=1), midnight + timedelta(minutes=5)


def _sql_variables() -> list[tuple[str, str]]:
    out = []
    for name, build in DASHBOARDS.items():
        for variable in to_dict(build()).get("templating", {}).get("list", []):
            if variable["type"] == "query" and variable["datasource"]["type"] != "prometheus":
                out.append((f"{name}: variable {variable['name']}", variable["query"]))
    return out


def _promql(expr: str) -> str:
    """Grafana's substitutions: the multi-value ``$job`` with "All" selected, and ``$__rate_interval``."""
    expr = expr.replace("$__rate_interval", RATE_INTERVAL).replace("$job", ".*")
    assert "$" not in expr, f"unsubstituted variable in {expr!r}"
    return expr


def _sql(query: str, ticker: str, timeframe: str, start: datetime, end: datetime) -> str:
    """Grafana's PostgreSQL substitutions: single-value variables and the ``$__timeFilter`` macro."""
    query = re.sub(
        r"\$__timeFilter\((\w+)\)",
        lambda m: f"{m.group(1)} BETWEEN '{start.isoformat()}' AND '{end.isoformat()}'",
        query,
    )
    query = query.replace("$ticker", ticker).replace("$timeframe", timeframe)
    assert "$" not in query, f"unsubstituted variable in {query!r}"
    return query


def _has_data(client: httpx.Client, expr: str) -> tuple[bool, str]:
    """(non-empty result with a number, detail) for a range query over the last two minutes (as Grafana asks)."""
    end = time.time()
    resp = client.get("/api/v1/query_range", params={"query": expr, "start": end - 120, "end": end, "step": 5})
    body = resp.json()
    if resp.status_code != 200 or body.get("status") != "success":
        return False, f"error {resp.status_code}: {body.get('error')}"
    series = body["data"]["result"]
    values = [float(v) for s in series for _, v in s["values"]]
    finite = [v for v in values if v == v]  # NaN (e.g. a quantile of no events) is not data
    return bool(finite), f"{len(series)} series, {len(finite)} finite samples"


def _value(client: httpx.Client, expr: str) -> float | None:
    """The single value of an instant query, None when it has none."""
    result = client.get("/api/v1/query", params={"query": expr}).json()["data"]["result"]
    return float(result[0]["value"][1]) if len(result) == 1 else None


def _spec(name: str, argv: list[str], port: int, env: dict[str, str], ready: Callable[[], bool]) -> ServiceSpec:
    return ServiceSpec(name=name, argv=argv, port=port, port_setting=name, ready=ready, env=env, cwd=REPO_ROOT)


def _inject_bad_ticks(bootstrap: str, topic: str) -> None:
    """A few malformed values, so the dead-letter panel shows real events as well as zeros."""
    producer = Producer({"bootstrap.servers": bootstrap})
    for i in range(5):
        producer.produce(topic, key=b"SYNTH", value=b'{"ticker": "SYNTH", "price": "broken %d"}' % i)
    assert producer.flush(10) == 0


def _drain(ws: ClientConnection) -> None:
    with contextlib.suppress(ConnectionClosed):
        for _ in ws:
            pass


def test_every_dashboard_query_returns_data(
    kafka_bootstrap: str, make_topic: Callable[..., str], pg_url: str, redis_url: str, tmp_path: Path
) -> None:
    tickers = seed_universe(pg_url, "default")  # the preset the simulator below runs (SIM_PRESET is set)
    topics = {
        "ticks": make_topic(3, "ticks"),
        "bars": make_topic(3, "bars"),
        "dead_letter": make_topic(1, "dlq"),
        "alerts": make_topic(1, "alerts"),
    }
    base_env = service_env(kafka_bootstrap, pg_url, redis_url, **topics)
    sim_env = {**base_env, "SIM_PRESET": "default", "SIM_RESUME": "false"}  # run: a fresh backfill, not the history
    sim_port, bars_port, ticks_port, anomalies_port, api_port, prom_port = (free_port() for _ in range(6))
    multiproc = tmp_path / "gateway-metrics"
    py = sys.executable
    history_start, history_end = _history_window(datetime.now(tz=UTC))
    subprocess.run(  # 1 tick/s per ticker: ~20,000 ticks of history
        [py, "-m", "simulator", "--no-progress", "backfill", "--start", history_start.isoformat(),
         "--end", history_end.isoformat()],
        env={**sim_env, "SIM_METRICS_PORT": "0", "SIM_TICK_RATE": "1"}, cwd=REPO_ROOT, check=True, timeout=300,
    )  # fmt: skip
    flows = (("bars", bars_port, "FLOW"), ("ticks", ticks_port, "FLOW"), ("anomalies", anomalies_port, "ANOMALY"))
    specs = [
        *(
            _spec(
                name,
                [py, "-m", "bytewax.run", f"flows.{name}"],
                port,
                {**base_env, f"{prefix}_METRICS_PORT": str(port)},
                metrics_ready(port),
            )
            for name, port, prefix in flows
        ),
        _spec(
            "gateway",
            [py, "-m", "api"],
            api_port,
            {
                **base_env,
                "API_PORT": str(api_port),
                "API_BIND_HOST": "127.0.0.1",
                "API_WORKERS": "2",
                "API_RATE_LIMIT": "",
                "PROMETHEUS_MULTIPROC_DIR": str(multiproc),
            },
            lambda: http_ok(f"http://127.0.0.1:{api_port}/health"),
        ),
        _spec(
            "simulator",
            [py, "-m", "simulator", "run", "--backfill", "0.25"],  # 15 minutes of history, then real time
            sim_port,
            {**sim_env, "SIM_METRICS_PORT": str(sim_port)},
            metrics_ready(sim_port),
        ),
    ]
    targets = {
        "simulator": [f"127.0.0.1:{sim_port}"],
        "flow-bars": [f"127.0.0.1:{bars_port}"],
        "flow-ticks": [f"127.0.0.1:{ticks_port}"],
        "flow-anomalies": [f"127.0.0.1:{anomalies_port}"],
        "gateway": [f"127.0.0.1:{api_port}"],
    }
    prom_settings = StackSettings(home=tmp_path / "stack", prometheus_port=prom_port)
    specs.append(prepare_prometheus(prom_settings, tmp_path / "data", targets))
    logs = tmp_path / "logs"

    with ExitStack() as stack:
        for spec in specs:
            stack.enter_context(running(spec, logs, timeout_s=120))
        _inject_bad_ticks(kafka_bootstrap, topics["ticks"])
        api = stack.enter_context(httpx.Client(base_url=f"http://127.0.0.1:{api_port}", timeout=10))
        ws = stack.enter_context(connect(f"ws://127.0.0.1:{api_port}/ws", ping_interval=None))
        ws.send(json.dumps({"type": "subscribe", "tickers": tickers[:1]}))
        # keep the client drained, or the gateway drops it as lagging
        threading.Thread(target=_drain, args=(ws,), daemon=True).start()
        prom = stack.enter_context(httpx.Client(base_url=f"http://127.0.0.1:{prom_port}", timeout=10))

        requests = 0
        pending = {**dict(_prom_exprs()), **REQUIRED}
        detail: dict[str, str] = {}
        deadline = time.monotonic() + WAIT_S
        while pending and time.monotonic() < deadline:
            for path in ("/api/v1/tickers", f"/api/v1/quote/{tickers[0]}", f"/api/v1/bars/{tickers[0]}", "/nope"):
                api.get(path)
                requests += 1
            for what, expr in list(pending.items()):
                ok, detail[what] = _has_data(prom, _promql(expr))
                if ok:
                    del pending[what]
            time.sleep(2)
        missing = "\n".join(f"  {w}: {pending[w]!r} -> {detail[w]}" for w in pending)
        assert not pending, f"PromQL without data after {WAIT_S:.0f} s:\n{missing}\nlogs in {logs}"

        for what, metric, label in _prom_variables():  # what Grafana asks for label_values(metric, label)
            values = prom.get(f"/api/v1/label/{label}/values", params={"match[]": metric}).json()["data"]
            assert set(targets) <= set(values), f"{what}: {values}"

        # every process is scraped through file_sd, and the two gateway workers report as one
        up = prom.get("/api/v1/query", params={"query": "up"}).json()["data"]["result"]
        assert {(r["metric"]["job"], r["value"][1]) for r in up} == {(job, "1") for job in targets}
        assert _value(prom, "sum(api_workers)") == 2
        # each worker relays every tick: the gateway's ticks/s is the stream's (as the ticks flow receives it), not
        # twice it; wait for the start-up backfill burst to leave the rule's 1 m window
        ratio = None
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            ratio = _value(prom, 'sum(messages_per_second{stage="gateway"}) / sum(messages_per_second{stage="ticks"})')
            if ratio is not None and 0.8 < ratio < 1.25:
                break
            time.sleep(5)
        assert ratio is not None, "no gateway or ticks flow rate"
        assert 0.8 < ratio < 1.25, f"gateway ticks/s is {ratio:.2f} x the ticks flow's"
        text = api.get("/metrics").text
        counted = sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("api_requests_total{") and 'route="/api/v1/tickers"' in line
        )
        assert counted == requests / 4, "both workers' requests must be in one /metrics answer"
        assert len(list(multiproc.glob("counter_*.db"))) == 2, "one counter file per worker"
        merged = [line for line in text.splitlines() if line.startswith("api_") and "pid=" in line]
        assert merged == [], "multiprocess samples are merged, not reported per worker"
        processes = [line for line in text.splitlines() if line.startswith("process_resident_memory_bytes{")]
        assert len(processes) == 3, f"one series per worker and one for the supervisor: {processes}"

    now = datetime.now(tz=UTC)
    end = now + timedelta(minutes=1)
    # every timeframe over a range reaching back to the history window (a final 1d bar starts at least a day ago,
    # so the default 6 h range never holds one; a user looking at daily bars picks a wider range), and the
    # timeframes whose bars the few live minutes close for sure over the dashboard's default range (6 h): the
    # first 15m window of the live backfill may close only after the test
    ranges = {tf: [history_start - timedelta(days=1)] for tf in _timeframes()}
    for tf in ("1m", "5m"):
        ranges[tf].append(now - timedelta(hours=6))
    with psycopg.connect(pg_url) as conn:
        for what, query in _sql_variables():
            rows = conn.execute(query).fetchall()  # type: ignore[arg-type]
            assert rows, f"{what}: no rows"
            assert {r[0] for r in rows} == set(tickers), what
        for what, query in _sql_queries():
            for timeframe, starts in ranges.items():
                for start in starts:
                    sql = _sql(query, tickers[0], timeframe, start, end)
                    rows = conn.execute(sql).fetchall()  # type: ignore[arg-type]
                    assert rows, f"{what} ({timeframe}, from {start:%Y-%m-%d %H:%M}): no rows for {sql}"
