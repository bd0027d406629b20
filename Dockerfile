# pointspace in a container: a plain install (no extras), a non-root user, data in a volume.
#
#   docker build -t pointspace .
#   docker run -d --name pointspace -p 127.0.0.1:1155:1155 -v pointspace-data:/data pointspace
#
# It binds 0.0.0.0 inside the container (the only way a published port reaches it), so every
# Host header is accepted (web/edge.py: the loopback-only Host check applies to loopback
# binds) and JWT is off until you give keys: publish the port on 127.0.0.1 as above, or
# mount RSA public keys and turn JWT on before publishing it anywhere else:
#
#   docker run -d -p 1155:1155 -v pointspace-data:/data -v /etc/pointspace/jwt:/jwt:ro \
#     -e POINTSPACE_JWT_KEY_DIR=/jwt pointspace
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# A dedicated user owning only the data directory.
RUN useradd --system --uid 1155 --home-dir /data --shell /usr/sbin/nologin pointspace \
    && mkdir /data && chown pointspace:pointspace /data

WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY engine ./engine
COPY snapshots ./snapshots
COPY web ./web
COPY client ./client
COPY cluster ./cluster
RUN pip install . && rm -rf /src

# Settings by environment (web/serving/config.py): any POINTSPACE_<SETTING> overrides these.
ENV POINTSPACE_HOST=0.0.0.0 \
    POINTSPACE_PORT=1155 \
    POINTSPACE_DATA_DIR=/data \
    POINTSPACE_FSYNC=everysec \
    POINTSPACE_LOG_FORMAT=json

USER pointspace
WORKDIR /data
VOLUME ["/data"]
EXPOSE 1155

# /healthz never needs a token; python:3.11-slim has no curl.
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:1155/healthz', timeout=2).status != 200)"]

# SIGTERM (docker stop) writes a final snapshot; give it time with `docker stop -t 60`.
STOPSIGNAL SIGTERM
CMD ["pointspace", "serve"]
