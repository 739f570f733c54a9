"""Grafana dashboards as code (grafana-foundation-sdk): ``python -m grafana`` writes ``grafana/dashboards/*.json``.

:mod:`grafana.pipeline` reads Prometheus, :mod:`grafana.market` reads ``market_bars`` in PostgreSQL/TimescaleDB.
docker-compose provisions the generated JSON (grafana/provisioning). ``python -m grafana --check`` fails when
the committed JSON differs from the code; tests/integration/test_dashboards.py runs every query for real.
"""
