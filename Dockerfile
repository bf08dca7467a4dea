# The DMS image: `podman build -t dms .` (or docker build), then
#   podman run -p 8080:8080 -v ./model_store:/mnt/models/model-store:ro dms --models squeezenet=squeezenet.mar
# Arguments after the image name are `dms serve` flags. docs/deploy.md has the rest (keys, Kubernetes, KServe).
#
# BASE_IMAGE: any Debian-like image with python3 (3.11 or newer) and its venv module; an official Python image
# for users, a local one in the tests (tests/container). EXTRAS: the extras to install, e.g. "torch" or
# "torch,sklearn" (torch comes from TORCH_INDEX_URL, its CPU build, pinned as pyproject.toml pins it).
ARG BASE_IMAGE=docker.io/library/python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS build
ARG EXTRAS=""
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
RUN python3 -m venv /opt/dms
COPY pyproject.toml README.md /src/
COPY src /src/src
RUN set -eu; \
    case ",${EXTRAS}," in *,torch,*|*,keras,*|*,all,*) \
        /opt/dms/bin/pip install --index-url "${TORCH_INDEX_URL}" torch==2.13.0 ;; esac; \
    /opt/dms/bin/pip install "/src${EXTRAS:+[${EXTRAS}]}"; \
    find /opt/dms -depth \( -name tests -o -name __pycache__ \) -type d -path '*/site-packages/*' -exec rm -rf {} +; \
    /opt/dms/bin/python -m compileall -q -j 0 /opt/dms/lib >/dev/null

FROM ${BASE_IMAGE}
COPY --from=build /opt/dms /opt/dms
RUN useradd --uid 1000 --user-group --create-home --home-dir /home/dms --shell /usr/sbin/nologin dms \
    && mkdir -p /mnt/models/model-store
# Every port on all the container's addresses; models from the store KServe and the manifests mount; the state
# (pid file, generated keys, snapshot) and extracted archives under /tmp, the one writable place a read-only
# root filesystem keeps (an emptyDir in deploy/kubernetes); one JSON object per log line on stdout/stderr.
ENV PATH=/opt/dms/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    DMS_INFERENCE_ADDRESS=0.0.0.0:8080 \
    DMS_MANAGEMENT_ADDRESS=0.0.0.0:8081 \
    DMS_METRICS_ADDRESS=0.0.0.0:8082 \
    DMS_GRPC_ADDRESS=0.0.0.0:7070 \
    DMS_MODEL_STORE=/mnt/models/model-store \
    DMS_STATE_DIR=/tmp/dms \
    DMS_ARCHIVE_CACHE_DIR=/tmp/dms/archives \
    DMS_SNAPSHOT=false \
    DMS_LOG_FORMAT=json
USER 1000:1000
WORKDIR /home/dms
EXPOSE 8080 8081 8082 7070
# SIGTERM: no new connections, accepted requests finish (graceful_shutdown_s, 30 s), then the workers stop.
STOPSIGNAL SIGTERM
ENTRYPOINT ["dms", "serve"]
