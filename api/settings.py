"""Settings of the gateway (prefix ``API_``): server, security, rate limits, WebSocket and query bounds.

Connection endpoints and topic names come from :class:`common.settings.SharedSettings` (unprefixed variables).
Lists are read from the environment as JSON (``API_KEYS='["k1","k2"]'``) or comma-separated text.
"""

from __future__ import annotations

from ipaddress import ip_address, ip_network
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from common.settings import BASE_CONFIG, SharedSettings, split_list


class ApiSettings(SharedSettings):
    """Everything the gateway process can be configured with; frozen, validated at start-up."""

    model_config = SettingsConfigDict(**BASE_CONFIG, env_prefix="API_")

    # --- server -------------------------------------------------------------------------------------------------
    bind_host: str = Field("0.0.0.0", description="address uvicorn listens on")  # noqa: S104 - a server
    port: int = Field(8000, ge=1, le=65535)
    workers: int = Field(1, ge=1, le=64, description="uvicorn worker processes")
    title: str = "Synthetic Market Data API"
    version: str = "1.0.0"
    log_level: str = Field("INFO", pattern=r"^(DEBUG|INFO|WARNING|ERROR)$")
    access_log: bool = Field(True, description="one structured log line per HTTP request")
    fast_routes: bool = Field(True, description="answer /quote and /latest in the middleware, before FastAPI")
    backlog: int = Field(2048, ge=16, le=65535, description="listen() backlog of the server socket")
    gc_threshold: int = Field(
        50_000,
        ge=0,
        description="generation-0 threshold of the garbage collector (0: Python's 700); the default keeps the "
        "oldest generation's 60-200 ms collections (every few seconds with 1,000 clients at 700) off the event "
        "loop (common.collector)",
    )

    # --- security -----------------------------------------------------------------------------------------------
    keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list, description="accepted API keys; empty = authentication off"
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    forwarded_allow_ips: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["127.0.0.1", "::1"],
        description="peers (addresses or networks, '*' for any) whose X-Forwarded-For/-Proto are believed: the "
        "client address, which requests without a valid key are rate-limited by, is then the forwarded one; empty "
        "= trust none (no proxy in front). Default loopback, as uvicorn's. uvicorn's own FORWARDED_ALLOW_IPS is NOT "
        "read: images often set it to '*', which would silently let every client choose its rate-limit address",
    )

    # --- rate limiting ------------------------------------------------------------------------------------------
    rate_limit: str = Field("1200/minute", description="per API key (or client IP) in `limits` notation; empty = off")
    rate_limit_ws_connect: str = Field("60/minute", description="WebSocket connections per key or IP")
    rate_limit_prefetch: int = Field(
        16, ge=1, le=1000, description="units a worker takes from the Redis budget per hit (capped at 1/64 of it)"
    )

    # --- WebSocket ----------------------------------------------------------------------------------------------
    ws_max_clients: int = Field(5000, ge=1)
    ws_max_subscriptions: int = Field(500, ge=1, description="subscription keys per client")
    ws_send_queue: int = Field(2048, ge=4, description="frames waiting per client before it is lagging")
    ws_lag_grace_s: float = Field(5.0, gt=0, description="a lagging client is dropped after this long")
    ws_max_dropped: int = Field(10_000, ge=1, description="a client is dropped after this many lost frames")
    ws_heartbeat_s: float = Field(15.0, gt=0)
    ws_batch_interval_ms: int = Field(25, ge=5, le=1000, description="frame period of batched mode")
    ws_max_message_bytes: int = Field(
        64 * 1024,
        ge=1024,
        description="largest client message accepted (bytes); a larger one gets a too_large error, one over 4x "
        "(at least 1 MiB) is not read and closes the connection (1009)",
    )
    ws_per_message_deflate: bool = Field(False, description="compress frames (costs CPU per client)")
    ws_protocol: Literal["frame-writer", "websockets-sansio", "websockets"] = Field(
        "frame-writer",
        description="WebSocket implementation: uvicorn's sans-I/O one plus a send-many-frames-per-write "
        "extension (api/ws_protocol.py), or one of uvicorn's own by name (one write per frame)",
    )

    # --- Kafka relay --------------------------------------------------------------------------------------------
    relay_enabled: bool = True
    relay_batch: int = Field(2000, ge=1, le=100_000, description="max messages per consume() call")
    relay_poll_s: float = Field(
        0.1, gt=0, le=1.0, description="longest wait for a message when none is queued (not a batching delay)"
    )
    relay_coalesce_ms: float = Field(
        2.0, ge=0, le=100, description="after a message arrives, also relay those arriving within this many ms"
    )
    relay_max_pending: int = Field(
        64,
        ge=1,
        le=10_000,
        description="relayed batches handed to the event loop and not yet fanned out; at this many the relay "
        "waits for the loop (Kafka holds the rest) instead of queueing without bound",
    )

    # --- queries ------------------------------------------------------------------------------------------------
    history_default_limit: int = Field(1000, ge=1)
    history_max_limit: int = Field(10_000, ge=1)
    history_max_range_s: int = Field(31 * 86_400, ge=60, description="widest /history window")
    bars_default_limit: int = Field(500, ge=1)
    bars_max_limit: int = Field(5000, ge=1)
    bars_max_range_bars: int = Field(100_000, ge=1, description="widest /bars window, in bars of the timeframe")
    ticks_default_limit: int = Field(100, ge=1)
    db_pool_min: int = Field(1, ge=0)
    db_pool_max: int = Field(10, ge=1)
    db_statement_timeout_ms: int = Field(5000, ge=100)
    ready_timeout_s: float = Field(2.0, gt=0)
    ticker_cache_s: float = Field(30.0, ge=0, description="how long the known-ticker set is trusted")
    ticker_miss_refresh_s: float = Field(
        1.0, ge=0, description="an unknown ticker reloads the set at most this often (new tickers show up this fast)"
    )

    # --- metrics ------------------------------------------------------------------------------------------------
    prometheus_multiproc_dir: Path | None = Field(
        None, validation_alias="PROMETHEUS_MULTIPROC_DIR", description="set = multi-process metrics"
    )

    @field_validator("keys", "cors_origins", "forwarded_allow_ips", mode="before")
    @classmethod
    def _lists(cls, value: Any) -> Any:
        return split_list(value)

    @field_validator("forwarded_allow_ips")
    @classmethod
    def _proxies(cls, value: list[str]) -> list[str]:
        # uvicorn takes an entry that is no address or network as a literal that never matches a TCP peer: say so
        for entry in value:
            if entry == "*":
                continue
            try:
                if "/" in entry:
                    ip_network(entry)
                else:
                    ip_address(entry)
            except ValueError as err:
                msg = f"{entry!r} is not an IP address, a network such as 10.0.0.0/8 (no host bits), or '*'"
                raise ValueError(msg) from err
        if "*" in value and len(value) > 1:
            msg = "'*' trusts every peer and cannot be combined with addresses"
            raise ValueError(msg)
        return value

    @field_validator("prometheus_multiproc_dir", mode="before")
    @classmethod
    def _unset_when_empty(cls, value: Any) -> Any:
        # an empty PROMETHEUS_MULTIPROC_DIR means "off" (as prometheus-client reads it), never the directory "."
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.history_default_limit > self.history_max_limit:
            msg = f"history_default_limit {self.history_default_limit!r} exceeds history_max_limit"
            raise ValueError(msg)
        if self.bars_default_limit > self.bars_max_limit:
            msg = f"bars_default_limit {self.bars_default_limit!r} exceeds bars_max_limit"
            raise ValueError(msg)
        if self.db_pool_min > self.db_pool_max:
            msg = f"db_pool_min {self.db_pool_min!r} exceeds db_pool_max {self.db_pool_max!r}"
            raise ValueError(msg)
        if any(not k.get_secret_value() for k in self.keys):
            msg = "keys: an API key must not be empty"
            raise ValueError(msg)
        for number, key in enumerate(self.keys, 1):
            if not _sendable_key(key.get_secret_value()):  # the message never repeats the key
                msg = (
                    f"keys: API key #{number} must be printable ASCII without leading or trailing blanks, or"
                    " clients cannot present it alike as X-API-Key, Bearer token and api_key"
                )
                raise ValueError(msg)
        for name in ("rate_limit", "rate_limit_ws_connect"):
            value = getattr(self, name)
            if value:
                from limits import parse_many

                try:
                    parse_many(value)
                except ValueError as err:
                    msg = f"{name}: {value!r} is not a `limits` expression such as '100/minute'"
                    raise ValueError(msg) from err
        return self

    @property
    def auth_enabled(self) -> bool:
        """True when at least one API key is configured."""
        return bool(self.keys)


def _sendable_key(key: str) -> bool:
    """True when a client can present ``key`` alike in a header, a bearer token and ``?api_key=``.

    Header values reach the gateway as bytes (decoded as Latin-1) and the query string percent-decoded as UTF-8,
    so a non-ASCII key matched one way only (``ключ`` only in the query, ``café`` only as Latin-1 header bytes);
    control characters cannot be sent in a header at all, and blanks around a header value are removed.
    """
    return key.isascii() and key.isprintable() and key == key.strip()
