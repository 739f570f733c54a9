"""Reads one Kafka partition in batches straight into Python lists (Rust over librdkafka; see ``src/lib.rs``)."""

#: the version of the librdkafka built into this module
LIBRDKAFKA_VERSION: str

class PartitionReader:
    """A librdkafka consumer of one partition of one topic, assigned (never subscribed, never committing)."""

    def __init__(self, config: dict[str, str], topic: str, partition: int) -> None:
        """librdkafka settings as strings; ValueError names a setting librdkafka rejects."""

    def fetch_metadata(self, timeout_s: float) -> None:
        """Learn the topic's partition leaders, waiting up to ``timeout_s``; RuntimeError if no broker answered."""

    def assign(self, offset: int) -> None:
        """Start reading at ``offset`` (-2: the beginning, -1: the end)."""

    def read(
        self, max_messages: int, timeout_s: float, stamps: bool = False
    ) -> tuple[list[int], list[bytes], list[tuple[int, int]] | None, bool, list[tuple[str, bool]]] | None:
        """``(offsets, values, timestamps, eof, errors)`` of up to ``max_messages`` records, or None if nothing
        came within ``timeout_s``. ``timestamps`` (with ``stamps``) are ``(type, ms)`` pairs as confluent-kafka's
        ``Message.timestamp()``; ``errors`` are ``(text, fatal)`` per error record before an end of partition."""

    def watermarks(self) -> tuple[int, int] | None:
        """The low and high watermarks as of the last fetch (no request), or None if not known yet."""

    def close(self) -> None:
        """Leave the partition and free the consumer (idempotent; reading afterwards raises RuntimeError)."""
