"""Real nginx and Caddy in front of PicGate for tests, configured with the snippets of
``docs/DEPLOY.en.md`` ("The proxy sends the bytes"), so the docs and the tests cannot drift.

    with NginxServer(tmp_path / "nginx", upstream_port=gw.server.port, images_dir=d) as proxy:
        httpx.get(f"{proxy.url}/images/…")

Each snippet is read out of the doc's fenced block and only what a test must change is replaced:
the listen address (plain HTTP on a free 127.0.0.1 port instead of TLS on 443), PicGate's
port, the images folder. Each replacement must match exactly once, so a doc edit that moves one
fails here instead of leaving a production value in the test. Around the snippet a test-only
frame keeps the proxy off ``/var/log``, ``/run`` and ports 80/443/2019 (bound to 127.0.0.1
only): pid, logs, temp folders and Caddy's state all live in the server's own folder, and it
runs in the foreground as the current user (under root, nginx's workers too, via ``user``).

The binaries come from Debian's ``nginx`` and ``caddy`` (scripts/test.sh installs them);
without them ``proxy_binary()`` raises: these tests never skip.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import shutil
from pathlib import Path
from typing import Self

import httpx

from tests.support.processes import ServerProcess
from tests.support.servers import free_port

DEPLOY_EN = Path(__file__).resolve().parent.parent / "docs" / "DEPLOY.en.md"
DEPLOY_ZH = DEPLOY_EN.with_name("DEPLOY.md")

DOC_PORT = "127.0.0.1:5643"
DOC_IMAGES_DIR = "/srv/picgate/data/images"
NGINX_PREFIX = "/_picgate_files/"  # SENDFILE_PREFIX the nginx snippet is written for
CADDY_PREFIX = "/"  # and the Caddy one


def proxy_binary(name: str) -> Path:
    """``nginx`` or ``caddy`` from Debian's packages; raises (never skips) when missing."""
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin")
    if found is None:
        raise RuntimeError(
            f"no {name} binary on PATH or in /usr/sbin:/usr/bin: run the tests through "
            "scripts/test.sh, which installs Debian's nginx and caddy"
        )
    return Path(found)


def doc_block(language: str, doc: Path = DEPLOY_EN) -> str:
    """The one fenced ``language`` block of the sendfile section of ``doc``."""
    text = doc.read_text(encoding="utf-8")
    heading = re.search(r"^### .*X-Accel-Redirect / X-Sendfile.*$", text, flags=re.M)
    if heading is None:
        raise AssertionError(f"{doc.name}: no X-Accel-Redirect / X-Sendfile section")
    section = text[heading.end() : text.index("\n---", heading.end())]
    blocks = re.findall(rf"^```{language}\n(.*?)^```$", section, flags=re.S | re.M)
    if len(blocks) != 1:
        raise AssertionError(f"{doc.name}: {len(blocks)} ```{language} blocks in the section")
    return str(blocks[0])


def substitute(snippet: str, replacements: dict[str, str]) -> str:
    """``snippet`` with each key replaced by its value; each key must occur exactly once."""
    for old, new in replacements.items():
        count = snippet.count(old)
        if count != 1:
            raise AssertionError(f"{old!r} occurs {count} times in the documented snippet")
        snippet = snippet.replace(old, new)
    return snippet


class ProxyServer(ServerProcess):
    """A proxy on a free loopback port in front of PicGate; its files under ``root``."""

    def __init__(self, root: Path, *, upstream_port: int, images_dir: Path) -> None:
        super().__init__(root / f"{self.name}.log")
        self.root = root
        self.port = free_port()
        self.upstream_port = upstream_port
        self.images_dir = images_dir.resolve()
        self.config = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _answers(self) -> bool:
        return httpx.get(f"{self.url}/health", timeout=2).status_code == 200

    def _check_config(self) -> None:
        for forbidden in ("/var/log", "/run/", "example.com", ":443", ":80", " 443", " 80", "ssl"):
            pattern = re.escape(forbidden) + r"(?![\w.])"  # not the start of a longer port
            assert not re.search(pattern, self.config), f"{forbidden!r} in the {self.name} config"


class NginxServer(ProxyServer):
    """nginx with the documented ``upstream`` and ``server`` blocks in a test ``http`` frame
    (Debian's defaults: ``mime.types``, ``sendfile on``)."""

    name = "nginx"

    def build_config(self) -> str:
        snippet = substitute(
            doc_block("nginx"),
            {
                f"server {DOC_PORT};": f"server 127.0.0.1:{self.upstream_port};",
                "listen 443 ssl;": f"listen 127.0.0.1:{self.port};",
                "server_name img.example.com;": "server_name 127.0.0.1;",
                f"alias {DOC_IMAGES_DIR}/;": f"alias {self.images_dir}/;",
            },
        )
        tmp = self.root
        user = ""
        if os.geteuid() == 0:  # else the workers would run as nobody
            owner = pwd.getpwuid(os.geteuid()).pw_name
            user = f"user {owner} {grp.getgrgid(os.getegid()).gr_name};"
        return f"""
{user}
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log {tmp}/access.log;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    sendfile on;

{snippet}
}}
"""

    def start(self) -> Self:
        self.root.mkdir(parents=True, exist_ok=True)
        self.config = self.build_config()
        self._check_config()
        conf = self.root / "nginx.conf"
        conf.write_text(self.config)
        binary = proxy_binary("nginx")
        # -e: the error log before the config is read (else /var/log/nginx/error.log)
        command = [str(binary), "-p", str(self.root), "-c", str(conf)]
        self._launch([*command, "-e", str(self.root / "error.log")], dict(os.environ))
        return self


class CaddyServer(ProxyServer):
    """Caddy with the documented site block; the global options keep it off its admin port
    and automatic HTTPS, and its state in ``root``."""

    name = "caddy"

    def build_config(self) -> str:
        snippet = substitute(
            doc_block("caddyfile"),
            {
                "img.example.com {": f"http://127.0.0.1:{self.port} {{",
                f"reverse_proxy {DOC_PORT} {{": f"reverse_proxy 127.0.0.1:{self.upstream_port} {{",
                f"root * {DOC_IMAGES_DIR}\n": f"root * {self.images_dir}\n",
            },
        )
        return f"""{{
	admin off
	auto_https off
	default_bind 127.0.0.1
	storage file_system {self.root}/data
}}

{snippet}"""

    def start(self) -> Self:
        self.root.mkdir(parents=True, exist_ok=True)
        self.config = self.build_config()
        self._check_config()
        conf = self.root / "Caddyfile"
        conf.write_text(self.config)
        binary = proxy_binary("caddy")
        home = str(self.root)  # autosave.json and the like go under these, not ~/.config
        env = {**os.environ, "HOME": home, "XDG_CONFIG_HOME": home, "XDG_DATA_HOME": home}
        self._launch([str(binary), "run", "--config", str(conf), "--adapter", "caddyfile"], env)
        return self
