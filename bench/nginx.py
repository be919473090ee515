"""A real nginx in front of PicGate for benchmarks: its own config in a temporary folder, run
in the foreground on 127.0.0.1 (no daemon, pid and logs in that folder).

The config is the one ``docs/DEPLOY.md`` shows for ``SENDFILE_HEADER=X-Accel-Redirect``, plus
``/direct/``, where nginx serves ``IMAGES_DIR`` itself (the ceiling for the handoff).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.procs import free_port, wait_http

PREFIX = "/_picgate_files/"

CONF = """
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    include /etc/nginx/mime.types;
    sendfile on;
    tcp_nopush on;

    upstream picgate {{
        server 127.0.0.1:{upstream_port};
        keepalive 32;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://picgate;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
        }}
        # SENDFILE_HEADER=X-Accel-Redirect, SENDFILE_PREFIX={prefix}
        location {prefix} {{
            internal;
            alias {images_dir}/;
            # PicGate's strong ETag, not nginx's own (nginx keeps only Content-Type,
            # Content-Disposition, Cache-Control, Expires, Accept-Ranges and Set-Cookie of
            # the upstream's answer on an internal redirect)
            etag off;
            add_header ETag $upstream_http_etag;
            add_header X-Content-Type-Options nosniff always;
            add_header X-Frame-Options DENY always;
            add_header Referrer-Policy no-referrer always;
        }}
        location /direct/ {{
            alias {images_dir}/;
        }}
    }}
}}
"""


@contextmanager
def nginx(upstream_port: int, images_dir: Path) -> Iterator[str]:
    """nginx on a free loopback port proxying to PicGate on ``upstream_port``; its base URL."""
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="picgate-nginx-") as tmp:
        Path(tmp).chmod(0o755)  # for its workers, which run unprivileged when it starts as root
        conf = Path(tmp) / "nginx.conf"
        conf.write_text(
            CONF.format(
                tmp=tmp,
                port=port,
                upstream_port=upstream_port,
                prefix=PREFIX,
                images_dir=images_dir.resolve(),
            )
        )
        proc = subprocess.Popen(
            [binary, "-p", tmp, "-c", str(conf), "-e", f"{tmp}/error.log"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_http(f"http://127.0.0.1:{port}/health")
            yield f"http://127.0.0.1:{port}"
        finally:
            proc.terminate()
            proc.wait(timeout=20)


def available() -> bool:
    return shutil.which("nginx") is not None or Path("/usr/sbin/nginx").exists()
