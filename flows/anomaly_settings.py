"""Settings of the anomalies flow and its webhook notifier (env prefix ``ANOMALY_``).

Connection endpoints and topic names (``alerts`` is ``TOPIC_ALERTS``) come from the shared, unprefixed
variables. List values accept JSON or comma-separated text (``ANOMALY_TIMEFRAMES=1m,5m``). Construction fails
fast, naming the offending field.
"""

from __future__ import annotations

from typing import Annotated, Any, Self

from pydantic import Field, HttpUrl, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from common.settings import BASE_CONFIG, SharedSettings, split_list
from contracts.anomaly import Severity
from contracts.bar import TIMEFRAMES
from flows.detectors import DetectorConfig
from flows.settings import ReaderKind


class AnomalySettings(SharedSettings):
    """Configuration of ``flows.anomalies``; every field is read from ``ANOMALY_<NAME>``."""

    model_config = SettingsConfigDict(**BASE_CONFIG, env_prefix="ANOMALY_", hide_input_in_errors=True)

    #: final bars of these timeframes are examined (default 1m only: a jump seen on 1m is also on 5m..1d)
    timeframes: Annotated[tuple[str, ...], NoDecode] = ("1m",)
    period: int = Field(20, ge=2, le=10_000, description="bars in the price and volume baselines")
    price_spike_pct: float = Field(5.0, gt=0, description="percent deviation of the close from the average")
    volume_spike_ratio: float = Field(3.0, gt=0, description="multiple of the average volume")
    rsi_overbought: float = Field(70.0, gt=0, lt=100)
    rsi_oversold: float = Field(30.0, gt=0, lt=100)
    rsi_rearm_points: float = Field(5.0, ge=0, description="RSI must come this far back inside before re-arming")
    latency_ms: float = Field(100.0, gt=0, description="pipeline latency threshold (live bars' lag_ms)")
    latency_max_age_ms: int = Field(600_000, gt=0, description="larger lags are a backlog being worked off: skipped")
    rearm_fraction: float = Field(0.8, gt=0, le=1, description="ratio detectors re-arm below this x threshold")
    severity_bands: Annotated[tuple[float, float, float], NoDecode] = (0.2, 0.5, 1.0)

    #: Slack-compatible incoming-webhook URL; unset disables notifications
    webhook_url: SecretStr | None = None
    webhook_min_severity: Severity = Severity.HIGH
    webhook_cooldown_s: float = Field(300.0, ge=0, description="per (ticker, type)")
    webhook_timeout_s: float = Field(5.0, gt=0)
    webhook_attempts: int = Field(4, ge=1, le=20, description="tries per message, exponential backoff between")
    webhook_backoff_s: float = Field(0.5, gt=0, description="first retry delay; doubles, capped at 30 s")
    webhook_queue: int = Field(1_000, ge=1, description="pending notifications; beyond this they are dropped")

    batch_size: int = Field(10_000, ge=1, le=1_000_000, description="values per Kafka source batch")
    kafka_reader: ReaderKind = Field(
        "native", description="how the Kafka source reads a partition: native or confluent (docs/flows.md)"
    )
    #: Prometheus exporter port of the flow process; 0 disables it
    metrics_port: int = Field(9111, ge=0, le=65535)
    #: address the exporter binds (0.0.0.0 in containers, so Prometheus in another container can scrape it)
    metrics_host: str = Field("127.0.0.1", min_length=1)

    @field_validator("timeframes", "severity_bands", mode="before")
    @classmethod
    def _lists(cls, value: Any) -> Any:
        return split_list(value)

    @field_validator("timeframes")
    @classmethod
    def _known_timeframes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [tf for tf in value if tf not in TIMEFRAMES]
        if not value or unknown:
            msg = f"timeframes={value!r}: need some of {list(TIMEFRAMES)}"
            raise ValueError(msg)
        return value

    @field_validator("webhook_url")
    @classmethod
    def _webhook_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value():
            return None
        HttpUrl(value.get_secret_value())  # raises naming the field; the URL itself stays secret in errors
        return value

    @model_validator(mode="after")
    def _check_detectors(self) -> Self:
        self.detector_config()  # ValueError naming the fields, wrapped by pydantic
        return self

    def detector_config(self) -> DetectorConfig:
        """The thresholds as the pure-logic config."""
        return DetectorConfig(
            period=self.period,
            price_spike_pct=self.price_spike_pct,
            volume_spike_ratio=self.volume_spike_ratio,
            rsi_overbought=self.rsi_overbought,
            rsi_oversold=self.rsi_oversold,
            rsi_rearm_points=self.rsi_rearm_points,
            latency_ms=self.latency_ms,
            latency_max_age_ms=self.latency_max_age_ms,
            rearm_fraction=self.rearm_fraction,
            severity_bands=self.severity_bands,
        )
