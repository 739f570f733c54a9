"""Shared pieces of the dashboards: data source references, query builders, panel defaults, JSON rendering."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from grafana_foundation_sdk.builders import prometheus, timeseries
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import dashboard as models

#: uids of the data sources in grafana/provisioning/datasources/datasources.yml
PROMETHEUS = models.DataSourceRef(type_val="prometheus", uid="prometheus")
POSTGRES = models.DataSourceRef(type_val="grafana-postgresql-datasource", uid="timescaledb")


@dataclass
class SqlQuery(cogvariants.Dataquery):
    """A Grafana PostgreSQL data source query (the SDK ships no builder for it): raw SQL in code mode."""

    ref_id: str
    raw_sql: str
    format: str = "time_series"

    def to_json(self) -> dict[str, Any]:
        """The target object Grafana stores in the panel."""
        return {
            "datasource": {"type": POSTGRES.type_val, "uid": POSTGRES.uid},
            "editorMode": "code",
            "format": self.format,
            "rawQuery": True,
            "rawSql": self.raw_sql,
            "refId": self.ref_id,
        }


class Sql(cogbuilder.Builder[cogvariants.Dataquery]):
    """Builder wrapper so :class:`SqlQuery` goes through the SDK's ``with_target``."""

    def __init__(self, ref_id: str, raw_sql: str, fmt: str = "time_series") -> None:
        self._query = SqlQuery(ref_id, " ".join(raw_sql.split()), fmt)

    def build(self) -> SqlQuery:
        """The query object."""
        return self._query


def prom(expr: str, legend: str, ref_id: str = "A") -> prometheus.Dataquery:
    """A range query with a legend format."""
    return prometheus.Dataquery().expr(" ".join(expr.split())).legend_format(legend).ref_id(ref_id).range()


def timeseries_panel(
    title: str, unit: str, description: str, datasource: models.DataSourceRef | None = None
) -> timeseries.Panel:
    """A time series panel with the common defaults: 1 px lines, 10 % fill, 8 high, half the width.

    ``datasource`` sets the panel's data source (left unset when ``None``).
    """
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .unit(unit)
        .line_width(1)
        .fill_opacity(10)
        .height(8)
        .span(12)
    )
    if datasource is not None:
        panel = panel.datasource(datasource)
    return panel


def _drop_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_nulls(v) for v in value]
    return value


def to_dict(board: Any) -> dict[str, Any]:
    """The dashboard as Grafana JSON: unset fields left out (not ``null``), panels numbered 1, 2, ... in order."""
    data: dict[str, Any] = _drop_nulls(json.loads(json.dumps(board, cls=JSONEncoder)))
    for number, panel in enumerate(data.get("panels", []), start=1):
        panel["id"] = number
    return data


def render(board: Any) -> str:
    """Stable JSON text of a built dashboard (sorted keys, two-space indent, trailing newline)."""
    return json.dumps(to_dict(board), indent=2, sort_keys=True) + "\n"
