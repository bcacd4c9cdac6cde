# syntax=docker/dockerfile:1
# Base image for an app worker that publishes to Sailcast (the publisher library only:
# nats-py and orjson, no Socket.IO/aiohttp). Build from the repository root:
#   docker build -f deploy/docker/worker.Dockerfile -t REGISTRY/sailcast/worker:0.1.0 .
# Your app then builds on it:
#   FROM REGISTRY/sailcast/worker:0.1.0
#   COPY --chown=10001:10001 requirements.txt /app/
#   RUN pip install -r /app/requirements.txt
#   COPY --chown=10001:10001 myapp/ /app/myapp/
#   CMD ["python", "-m", "myapp.worker"]
# and connects with the gateway's NATS variables (SAILCAST_NATS_URL, _USER, _PASSWORD,
# _TOKEN, _CREDS, ...):
#   pub = await Publisher.connect(nats_settings=NatsSettings.from_env(),
#                                 prefix=os.environ["SAILCAST_PREFIX"])
# See deploy/examples/worker.yaml for the Kubernetes side.

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/sailcast
WORKDIR /src
COPY pyproject.toml README.md ./
COPY shared/ shared/
COPY publisher/ publisher/
COPY gateway/ gateway/
# The base distribution without the [gateway] extra.
RUN /opt/sailcast/bin/pip install . \
 && /opt/sailcast/bin/python -m compileall -q /opt/sailcast/lib

FROM ${PYTHON_IMAGE}
ARG SAILCAST_UID=10001
RUN groupadd --system --gid "${SAILCAST_UID}" app \
 && useradd --system --uid "${SAILCAST_UID}" --gid app --home-dir /app --shell /usr/sbin/nologin app \
 && mkdir -p /app \
 && chown "${SAILCAST_UID}:${SAILCAST_UID}" /app
COPY --from=build --chown=10001:10001 /opt/sailcast /opt/sailcast
ENV PATH=/opt/sailcast/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
USER 10001:10001
# Replace in your app's image: proves the publisher imports without the gateway extra
# and shows the NATS servers NatsSettings.from_env() would use.
CMD ["python", "-c", "import publisher; from shared.config import NatsSettings; print('sailcast publisher ready', NatsSettings.from_env().describe())"]
