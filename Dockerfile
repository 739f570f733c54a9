# One image for every platform process (simulator, flows, gateway); docker-compose picks the command.

# The flows' Rust parts as wheels for CPython 3.11 (Debian bookworm's, the same minor version and C library as
# python:3.11-slim's): the decoder fast path (native/tickscan) and the Kafka reader (native/kafkaread, which builds
# librdkafka from its bundled source: make and C and C++ compilers; zlib comes with every Debian image)
FROM rust:1-slim-bookworm AS native
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-venv make gcc g++ libc6-dev \
    && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/maturin && /opt/maturin/bin/pip install --no-cache-dir "maturin>=1.7,<2"
COPY native/tickscan /src/tickscan
COPY native/kafkaread /src/kafkaread
RUN /opt/maturin/bin/maturin build --release --manifest-path /src/tickscan/Cargo.toml -i python3 -o /wheels \
    && /opt/maturin/bin/maturin build --release --manifest-path /src/kafkaread/Cargo.toml -i python3 -o /wheels

FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY contracts ./contracts
COPY common ./common
COPY simulator ./simulator
COPY flows ./flows
COPY api ./api
COPY stack ./stack
COPY sql ./sql
COPY --from=native /wheels /wheels
# --no-sources: take tickscan and kafkaread from the wheels above, not from pyproject's path sources (not in the image)
RUN pip install --upgrade pip uv \
    && uv pip install --system --no-sources /wheels/tickscan-*.whl /wheels/kafkaread-*.whl . && rm -rf /wheels
RUN useradd --create-home --uid 10001 app && mkdir -p /data/recovery && chown -R app /data
USER app
EXPOSE 8000 9101 9102
CMD ["python", "-m", "api"]
