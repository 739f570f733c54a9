"""The gateway: FastAPI REST over Redis/PostgreSQL and a WebSocket relay of the Kafka topics (see docs/api.md)."""
