# PicGate in server mode: uvicorn on 5643, SQLite and the image cache in the /app/data volume.
#   docker build -t picgate .
#   docker run -d -p 5643:5643 -v picgate-data:/app/data picgate
# (or infra/docker-compose.yml). Settings come from the environment or the admin console.

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# uv.lock is the one lock file (also used by scripts/test.sh and infra/build-lambda-layer.sh):
# the image gets exactly the versions the tests ran with, checked against their hashes
COPY pyproject.toml uv.lock README.md ./
COPY picgate ./picgate
COPY admin_templates ./admin_templates
RUN pip install --quiet "uv>=0.13,<0.15" \
 && uv export --quiet --frozen --no-dev --no-emit-project --extra postgres -o /tmp/requirements.txt \
 && python -m venv /opt/venv \
 && /opt/venv/bin/pip install -r /tmp/requirements.txt \
 && /opt/venv/bin/pip install --no-deps .

FROM python:3.11-slim
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DATA_DIR=/app/data \
    DATABASE_URL=sqlite:////app/data/db/picgate.db \
    HOST=0.0.0.0 \
    PORT=5643
RUN useradd --system --uid 10001 --user-group --home-dir /app --shell /usr/sbin/nologin picgate \
 && mkdir -p /app/data \
 && chown -R picgate:picgate /app
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
# numeric, so the host and Kubernetes runAsNonRoot can tell it is not root
USER 10001:10001
VOLUME ["/app/data"]
EXPOSE 5643
# python, not curl: the slim image has no curl; urlopen raises on 503 (database down)
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('PORT', '5643'), timeout=4)"]
CMD ["picgate", "serve"]
