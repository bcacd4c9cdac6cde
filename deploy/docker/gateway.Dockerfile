# syntax=docker/dockerfile:1
# Sailcast gateway image. Build from the repository root:
#   docker build -f deploy/docker/gateway.Dockerfile -t REGISTRY/sailcast/gateway:0.1.0 .
# Runs `sailcast gateway` as uid 10001, listening on 0.0.0.0:1337 (Socket.IO) and
# :9464 (ops: /metrics, /healthz, /readyz). Configure with SAILCAST_* variables
# (docs/gateway-contract.md); the Helm chart in deploy/helm/sailcast-gateway does.

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/sailcast
WORKDIR /src
# Only what the distribution needs: packaging metadata and the three packages.
COPY pyproject.toml README.md ./
COPY shared/ shared/
COPY publisher/ publisher/
COPY gateway/ gateway/
# The gateway extra only (aiohttp, prometheus-client, pyjwt, uvloop); no test tools.
# pip and setuptools are not needed at run time (about 24 MB): removed from the venv.
RUN /opt/sailcast/bin/pip install ".[gateway]" \
 && /opt/sailcast/bin/python -m compileall -q /opt/sailcast/lib \
 && /opt/sailcast/bin/python -m pip uninstall --yes --quiet setuptools pip

FROM ${PYTHON_IMAGE}
ARG SAILCAST_UID=10001
RUN groupadd --system --gid "${SAILCAST_UID}" sailcast \
 && useradd --system --uid "${SAILCAST_UID}" --gid sailcast --no-create-home \
      --home-dir /nonexistent --shell /usr/sbin/nologin sailcast
COPY --from=build /opt/sailcast /opt/sailcast
ENV PATH=/opt/sailcast/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    SAILCAST_HOST=0.0.0.0 \
    SAILCAST_LOG_FORMAT=json
LABEL org.opencontainers.image.title="sailcast-gateway" \
      org.opencontainers.image.description="Sailcast Socket.IO gateway (fanout over NATS)"
EXPOSE 1337 9464
# Numeric so Kubernetes can verify runAsNonRoot.
USER 10001:10001
STOPSIGNAL SIGTERM
# Outside Kubernetes (docker run, compose): the same liveness check the chart uses.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('SAILCAST_METRICS_PORT', '9464'), timeout=2)"]
ENTRYPOINT ["sailcast"]
CMD ["gateway"]
