"""The KRaft cluster id the stack formats Kafka storage with (``stack.services._kafka_cluster_id``)."""

from __future__ import annotations

import base64
from pathlib import Path

from stack.services import _kafka_cluster_id


def test_a_stored_id_is_kept(tmp_path: Path) -> None:
    (tmp_path / "cluster.id").write_text("MkU3OEVBNTcwNTJENDM2Qk\n")
    assert _kafka_cluster_id(tmp_path) == "MkU3OEVBNTcwNTJENDM2Qk"


def test_a_fresh_id_is_a_base64_uuid_and_persisted(tmp_path: Path) -> None:
    first = _kafka_cluster_id(tmp_path)
    assert len(base64.urlsafe_b64decode(first + "==")) == 16
    assert not first.startswith("-")
    assert _kafka_cluster_id(tmp_path) == first == (tmp_path / "cluster.id").read_text()


def test_an_id_starting_with_a_dash_is_replaced(tmp_path: Path) -> None:
    # `kafka-storage format -t -Xyz...` takes the id for an option and fails: such an id is never used
    (tmp_path / "cluster.id").write_text("-U3OEVBNTcwNTJENDM2Qk")
    fresh = _kafka_cluster_id(tmp_path)
    assert not fresh.startswith("-")
    assert len(fresh) == 22
    assert (tmp_path / "cluster.id").read_text() == fresh
