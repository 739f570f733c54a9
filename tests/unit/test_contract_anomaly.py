"""The alerts contract anomaly.v1: round trip, JSON Schema agreement, invalid values rejected with a reason."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from common.errors import ContractError
from contracts.anomaly import Anomaly, AnomalyType, Severity, decode_anomaly, encode_anomaly

SCHEMA = json.loads((Path(__file__).resolve().parents[2] / "contracts" / "schemas" / "anomaly.v1.json").read_text())


def _anomaly(**change: object) -> Anomaly:
    fields: dict[str, object] = {
        "ticker": "TECH", "type": AnomalyType.PRICE_SPIKE, "severity": Severity.HIGH, "timeframe": "1m",
        "time": 1_767_609_000_000, "value": 8.1, "threshold": 5.0, "reference": 300.12,
        "detected_at": 1_767_609_062_000, "message": "TECH 1m: close is +8.10% from the 20-bar average",
    }  # fmt: skip
    return Anomaly(**{**fields, **change})  # type: ignore[arg-type]


def test_round_trip_and_schema() -> None:
    a = _anomaly()
    raw = encode_anomaly(a)
    jsonschema.Draft202012Validator(SCHEMA).validate(json.loads(raw))
    assert decode_anomaly(raw) == a
    assert json.loads(raw)["version"] == 1
    assert a.natural_key == ("TECH", "price_spike", "1m", 1_767_609_000_000)


def test_schema_enums_match_the_code() -> None:
    props = SCHEMA["properties"]
    assert props["type"]["enum"] == [t.value for t in AnomalyType]
    assert props["severity"]["enum"] == [s.value for s in Severity]


@pytest.mark.parametrize(
    ("change", "reason"),
    [({"timeframe": "2m"}, "timeframe"), ({"value": float("nan")}, "finite"), ({"reference": float("inf")}, "finite"),
     ({"time": -1}, "epoch"), ({"version": 2}, "version")],
)  # fmt: skip
def test_invalid_anomalies_are_rejected(change: dict[str, object], reason: str) -> None:
    with pytest.raises(ContractError, match=reason):
        _anomaly(**change)


@pytest.mark.parametrize("raw", [b"nope", b'{"ticker":"TECH"}', b'{"ticker":"TECH","type":"meteor"}'])
def test_malformed_bytes_raise_contract_error(raw: bytes) -> None:
    with pytest.raises(ContractError, match="contract v1"):
        decode_anomaly(raw)


def test_relay_frame_of_an_alert_with_bad_utf8_in_an_unknown_field_is_a_contract_error() -> None:
    """msgspec skips unknown fields without checking their UTF-8; the relay forwards the raw message, so it must
    refuse it with ContractError (which it counts and skips) instead of raising UnicodeDecodeError."""
    from api.relay import anomaly_event  # noqa: PLC0415 -- the gateway side of this contract

    good = encode_anomaly(_anomaly())
    assert '"type":"anomaly"' in anomaly_event(good).frame
    bad = good[:-1] + b',"note":"\xff"}'
    assert decode_anomaly(bad) == _anomaly()  # accepted by the decoder
    with pytest.raises(ContractError, match="invalid UTF-8"):
        anomaly_event(bad)
