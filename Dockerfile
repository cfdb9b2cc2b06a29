# Allot's image: one image for every process role (`allot serve | api | worker | relay | timers |
# migrate`); the role is the container's command. Not built by CI (see docs/scaling.md).
#   docker build -t allot:local .
#   docker run --rm -p 8000:8000 allot:local            # all-in-one on SQLite, in the container
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# Every wheel Allot needs exists for linux/amd64 and arm64 (asyncpg, uvloop, httptools,
# argon2-cffi...), so no compiler is installed. Versions are the ones CI tested.
COPY pyproject.toml constraints.txt README.md ./
COPY allot ./allot
RUN python -m venv /opt/allot \
    && /opt/allot/bin/pip install -c constraints.txt .

FROM python:3.11-slim
ENV PATH=/opt/allot/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    ALLOT_ENVIRONMENT=production \
    ALLOT_DATA_DIR=/var/lib/allot
RUN groupadd --system --gid 10001 allot \
    && useradd --system --uid 10001 --gid allot --home-dir /var/lib/allot --create-home allot
COPY --from=build /opt/allot /opt/allot
USER 10001:10001
WORKDIR /var/lib/allot
EXPOSE 8000
# For the HTTP roles (serve, api). worker, relay and timers have no HTTP port: their compose
# services and Kubernetes pods check ALLOT_HEARTBEAT_FILE's age instead.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
ENTRYPOINT ["allot"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
