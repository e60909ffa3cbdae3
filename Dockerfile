# syntax=docker/dockerfile:1
# One image for all six services; the command picks the service: `python -m <service>`.

# --- build: resolve the locked runtime dependencies into /app/.venv with uv -------------
FROM python:3.11-slim AS build
COPY --from=ghcr.io/astral-sh/uv:0.9 /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never
WORKDIR /app
COPY pyproject.toml uv.lock ./
RUN uv sync --locked --no-dev --no-install-project
COPY events ./events
COPY users ./users
COPY orders ./orders
COPY payments ./payments
COPY notifier ./notifier
COPY analytics ./analytics
COPY recommender ./recommender

# --- runtime: no build tools, no dev dependencies, not root --------------------------------
FROM python:3.11-slim
RUN groupadd --system --gid 10001 app && useradd --system --uid 10001 --gid app --home-dir /app app
WORKDIR /app
COPY --from=build --chown=app:app /app /app
ENV PATH="/app/.venv/bin:$PATH" PYTHONUNBUFFERED=1 LOG_FORMAT=json
USER 10001
EXPOSE 8001 8002
# Overridden per service in compose.yaml.
CMD ["python", "-m", "users"]
