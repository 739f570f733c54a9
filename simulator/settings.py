"""Simulator settings (env prefix ``SIM_``), derived from the project's :class:`SharedSettings`.

Kafka address and topic names come from the shared (unprefixed) variables; everything the simulator alone
needs is ``SIM_*``: the universe preset, seed, tick rate, session mode, backfill window, resume from the topic,
producer tuning and the Prometheus port. Invalid values fail at start with the field named.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from common.errors import ConfigError
from common.settings import BASE_CONFIG, SharedSettings


class SimulatorSettings(SharedSettings):
    """Settings of ``python -m simulator``."""

    model_config = SettingsConfigDict(**BASE_CONFIG, env_prefix="SIM_")

    preset: str = Field("default", min_length=1, description="built-in preset name or path to a YAML universe")
    seed: int = Field(42, ge=0)
    tick_rate: float = Field(10.0, gt=0, le=1000, description="ticks per second per ticker")
    slice_ms: int = Field(
        10, ge=1, le=60_000, description="spread each step's tickers over slices of this length (>= interval: off)"
    )
    session_mode: Literal["24/7", "exchange"] = "24/7"
    session_timezone: str = "America/New_York"
    backfill: timedelta = Field(timedelta(days=2), ge=timedelta(0), description="history produced before real time")
    resume: bool = Field(
        True,
        description="run: continue each ticker from its last tick in the ticks topic (seq, price, time) instead of"
        " producing a new backfill window; false: always backfill SIM_BACKFILL ending now",
    )
    resume_scan_max: int = Field(
        1_000_000,
        ge=1_000,
        le=1_000_000_000,
        description="run with resume: at most this many messages are read back from the end of the ticks topic"
        " to find each ticker's last tick; a ticker not found by then starts afresh (seq 0)",
    )
    batch_ticks: int = Field(50_000, ge=1, le=5_000_000)
    max_block_mb: int = Field(
        1024,
        ge=1,
        le=1_048_576,
        description="largest one-minute block of ticks (tickers x 60 s x tick rate x 68 B) accepted at start, MiB",
    )
    threads: int = Field(2, ge=1, le=64)
    metrics_port: int = Field(9101, ge=0, le=65535, description="0 disables the Prometheus endpoint")
    compression: Literal["lz4", "zstd", "snappy", "gzip", "none"] = "lz4"
    linger_ms: int = Field(50, ge=0, le=10_000)
    batch_bytes: int = Field(1_000_000, ge=1_000, le=100_000_000)
    buffer_kbytes: int = Field(262_144, ge=1_024, le=2_097_151, description="producer queue bound (size)")
    buffer_messages: int = Field(1_000_000, ge=1_000, le=10_000_000, description="producer queue bound (count)")
    delivery_timeout_ms: int = Field(300_000, ge=1_000)
    connect_attempts: int = Field(10, ge=1, le=1_000)

    @field_validator("tick_rate")
    @classmethod
    def _whole_ms(cls, v: float) -> float:
        ms = 1000.0 / v
        if abs(ms - round(ms)) > 1e-9 or 60_000 % round(ms):
            msg = f"tick_rate must give a whole-millisecond interval dividing one minute, got {v!r}/s"
            raise ValueError(msg)
        return v

    @model_validator(mode="after")
    def _slice_divides_interval(self) -> SimulatorSettings:
        if self.slice_ms < self.tick_ms and self.tick_ms % self.slice_ms:
            msg = f"slice_ms must divide the tick interval of {self.tick_ms} ms, got {self.slice_ms!r}"
            raise ValueError(msg)
        return self

    @property
    def effective_slice_ms(self) -> int:
        """Slice length passed to the engine (the whole interval when ``slice_ms`` is not shorter)."""
        return min(self.slice_ms, self.tick_ms)

    @property
    def tick_ms(self) -> int:
        """Tick interval per ticker in milliseconds."""
        return round(1000.0 / self.tick_rate)

    def check_block_memory(self, n_tickers: int) -> None:
        """Raise :class:`ConfigError` when one engine block of ``n_tickers`` would exceed ``max_block_mb``."""
        from simulator.engine import BYTES_PER_TICK, block_bytes  # numpy: not needed to read the settings

        size = block_bytes(n_tickers, self.tick_ms)
        if size > self.max_block_mb * 2**20:
            msg = (
                f"one 60 s block of {n_tickers:,} tickers at {self.tick_rate:g} ticks/s each is {size / 2**20:,.0f}"
                f" MiB of ticks ({BYTES_PER_TICK} B each; a real-time run holds about two), over"
                f" SIM_MAX_BLOCK_MB={self.max_block_mb}: lower SIM_TICK_RATE, use a smaller universe (SIM_PRESET)"
                " or raise SIM_MAX_BLOCK_MB if the memory is there"
            )
            raise ConfigError(msg)
