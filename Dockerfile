# One image for every platform process (simulator, flows, gateway); docker-compose picks the command.
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
RUN pip install --upgrade pip uv && uv pip install --system .
RUN useradd --create-home --uid 10001 app && mkdir -p /data/recovery && chown -R app /data
USER app
EXPOSE 8000 9101 9102
CMD ["python", "-m", "api"]
