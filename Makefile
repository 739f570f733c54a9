# The two set-up commands are `make up` and `make test`; everything else is a convenience.
SHELL := /bin/bash
PY := .venv/bin/python
VENV_STAMP := .venv/.installed

.PHONY: up down clean status test test-unit test-integration lint venv anomaly dashboards bench-simulator bench-simulator-kafka bench-flow bench-decode bench-flow-kafka bench-flow-latency bench-flow-memory bench-redis-bars bench-pg-bars bench-ticks bench-api bench-api-ws bench-ws-floor

venv: $(VENV_STAMP)

# (Re)install the project into .venv whenever pyproject.toml or the Rust extension changes; uv makes a fresh
# install take seconds, plus about two minutes to compile native/tickscan and native/kafkaread (librdkafka from source,
# so C and C++ compilers and make too) the first time (cargo, from rustup).
NATIVE_SOURCES := $(wildcard native/*/Cargo.* native/*/pyproject.toml native/*/*.pyi native/*/src/*.rs)
$(VENV_STAMP): pyproject.toml $(NATIVE_SOURCES)
	@command -v python3 >/dev/null || { echo "python3 (3.11+) is required"; exit 1; }
	@command -v cargo >/dev/null || { echo "cargo (Rust 1.74+, https://rustup.rs) is required to build native/tickscan and native/kafkaread"; exit 1; }
	@command -v cc >/dev/null && command -v c++ >/dev/null && command -v make >/dev/null || { echo "C and C++ compilers (cc, c++) and make are required to build librdkafka for native/kafkaread"; exit 1; }
	@test -x $(PY) || python3 -m venv .venv
	@$(PY) -m pip install -q --disable-pip-version-check uv
	@$(PY) -m uv pip install -q --python $(PY) -e '.[dev]'
	@touch $(VENV_STAMP)

## make up: install what is missing, start Kafka, PostgreSQL, Redis, Prometheus and the platform, print URLs
up: venv
	@test -f .env || cp .env.example .env
	$(PY) -m stack up

## make down: stop every process `make up` started (data is kept)
down: venv
	$(PY) -m stack down

## make clean: stop and delete all local data and logs (downloaded jars are kept)
clean: venv
	$(PY) -m stack clean

status: venv
	$(PY) -m stack status

## make test: install what the tests need, then run lint, unit, integration and end-to-end tests
test: venv
	$(PY) -m stack install
	$(MAKE) lint
	$(PY) -m pytest

## make anomaly: run the anomalies flow in the foreground (make up already runs it under supervisord)
anomaly: venv
	$(PY) -m bytewax.run flows.anomalies

## make dashboards: regenerate grafana/dashboards/*.json from the dashboards-as-code in grafana/*.py
dashboards: venv
	$(PY) -m grafana

test-unit: venv
	$(PY) -m pytest tests/unit

test-integration: venv
	$(PY) -m stack install
	$(PY) -m pytest tests/integration tests/e2e

lint: venv
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy contracts common simulator flows api stack sql grafana
	cargo fmt --manifest-path native/tickscan/Cargo.toml --check
	cargo clippy --quiet --manifest-path native/tickscan/Cargo.toml --release -- -D warnings
	cargo fmt --manifest-path native/kafkaread/Cargo.toml --check
	cargo clippy --quiet --manifest-path native/kafkaread/Cargo.toml --release -- -D warnings

## benchmarks (one command each, printing a table; results go to docs/benchmarks.md)
bench-simulator: venv
	$(PY) bench/bench_simulator_generate.py

bench-simulator-kafka: venv
	$(PY) bench/bench_simulator_kafka.py --start-broker

bench-flow: venv
	$(PY) bench/bench_flow_bars.py

bench-decode: venv
	$(PY) bench/bench_decode.py

bench-flow-kafka: venv
	$(PY) bench/bench_flow_kafka.py

bench-flow-latency: venv
	$(PY) bench/bench_flow_latency.py

bench-flow-memory: venv
	$(PY) bench/bench_flow_memory.py

bench-redis-bars: venv
	$(PY) bench/bench_redis_bars.py

bench-pg-bars: venv
	$(PY) bench/bench_pg_bars.py

bench-ticks: venv
	$(PY) bench/bench_flow_ticks.py

bench-api: venv
	$(PY) bench/bench_api_rest.py

bench-api-ws: venv
	$(PY) bench/bench_api_ws.py

bench-ws-floor: venv
	$(PY) bench/bench_ws_floor.py
