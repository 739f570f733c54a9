"""The committed dashboard JSON is exactly what the dashboards-as-code generate, and it is well formed."""

from __future__ import annotations

import json
import re
from pathlib import Path

from grafana.__main__ import DASHBOARDS, OUT_DIR, main, rendered

ROOT = Path(__file__).resolve().parents[2]


def test_committed_json_equals_generator_output() -> None:
    for name, text in rendered().items():
        path = OUT_DIR / name
        assert path.exists(), f"{path} missing: run `python -m grafana`"
        assert path.read_text() == text, f"{path} is stale: run `python -m grafana`"
    assert main(["--check"]) == 0


def test_check_reports_a_stale_file(tmp_path: Path, monkeypatch: object) -> None:
    import grafana.__main__ as gen

    (tmp_path / "pipeline.json").write_text("{}")
    monkeypatch.setattr(gen, "OUT_DIR", tmp_path)  # type: ignore[attr-defined]
    assert gen.main(["--check"]) == 1
    assert gen.main([]) == 0  # writes the files
    assert gen.main(["--check"]) == 0


def test_dashboards_have_unique_uids_ids_and_known_datasources() -> None:
    provisioned = (ROOT / "grafana" / "provisioning" / "datasources" / "datasources.yml").read_text()
    uids = set()
    for name in DASHBOARDS:
        board = json.loads((OUT_DIR / name).read_text())
        uids.add(board["uid"])
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids)), name
        for panel in board["panels"]:
            if panel["type"] == "row":
                continue
            assert panel["targets"], f"{name}: panel {panel['title']!r} has no query"
            uid = panel["datasource"]["uid"]
            assert re.search(rf"^\s+uid: {uid}$", provisioned, re.M), f"{name}: unknown datasource {uid}"
    assert len(uids) == len(DASHBOARDS)
