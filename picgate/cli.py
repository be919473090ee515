"""``picgate serve | cleanup | admin create``, and ``picgate --version``."""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
from collections.abc import Sequence

from picgate import __version__

# Longer than the idle expiry of the clients and proxies in front of PicGate (aiohttp, which
# OpenWebUI uses: 15 s; nginx upstream keepalive and AWS load balancers: 60 s). With uvicorn's
# default of 5 s the server closes idle connections those clients still mean to reuse, and a
# request sent as the close crosses it fails (a reset, or a 502 from the proxy).
KEEP_ALIVE_SECONDS = 75


def _configure_logging(level: str) -> None:
    number = getattr(logging, level.upper(), logging.INFO)
    logging.basicConfig(level=number, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Alembic narrates every start at INFO (its plugins, the SQLite DDL mode): lines that bury
    # the setup link; its warnings and errors still show, and LOG_LEVEL=DEBUG brings them back
    quiet = number if number <= logging.DEBUG else max(number, logging.WARNING)
    logging.getLogger("alembic").setLevel(quiet)


class ListenError(ValueError):
    """A port or address ``picgate serve`` cannot listen on; the message names the flag."""


def listen_port(flag: str | None, env: str | None) -> int:
    """The port to listen on: ``--port`` (``flag``), else ``PORT`` (``env``), else 5643.

    Anything but a whole number in 1..65535 is refused (ListenError), never replaced by the
    default: a typo in the port must not start a server somewhere the user is not looking.
    """
    from picgate.config import Settings

    name, value = ("--port", flag) if flag is not None else ("PORT", env)
    if value is None or (name == "PORT" and not value.strip()):
        default: int = Settings.model_fields["port"].default
        return default
    try:
        port = int(value.strip())
    except ValueError:
        port = -1
    if not 1 <= port <= 65535:
        raise ListenError(f"{name} must be a port number from 1 to 65535, got {value!r}")
    return port


def bind(host: str, port: int) -> socket.socket:
    """A socket bound to ``host``:``port`` (as uvicorn binds one), before the app starts: the
    banner then names the address really held, and a busy port is one line, not a traceback."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except (OSError, OverflowError) as exc:
        sock.close()
        reason = getattr(exc, "strerror", None) or str(exc)
        raise ListenError(
            f"cannot listen on {host}:{port}: {reason} "
            "(choose another port with --port/PORT, or another address with --host/HOST)"
        ) from None
    sock.set_inheritable(True)
    return sock


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from picgate.app import create_app
    from picgate.config import Settings, SettingsError, trusted_networks
    from picgate.protocol import MAX_HEAD_BYTES, bounded_protocol, fit_open_files

    try:
        # the flags win over HOST/PORT, and the settings carry them so every printed URL
        # (the setup link) names the address that is listened on
        settings = Settings(port=listen_port(args.port, os.environ.get("PORT")))
        if args.host:
            settings = settings.model_copy(update={"host": args.host})
        _configure_logging(settings.log_level)
        app = create_app(settings)
        sock = bind(settings.host, settings.port)
    except ListenError as exc:
        print(f"picgate: {exc}", file=sys.stderr)
        return 2
    except (SettingsError, ValueError) as exc:
        print(f"picgate: configuration error: {exc}", file=sys.stderr)
        return 2
    try:
        # the schema before the server starts (after the port is held: a busy port creates
        # nothing): a half-applied migration is one line here, inside uvicorn's startup it
        # would be a traceback
        app.state.services.db.migrate()
    except (SettingsError, ValueError) as exc:
        sock.close()
        print(f"picgate: configuration error: {exc}", file=sys.stderr)
        return 2
    max_connections, warning = fit_open_files(settings.max_connections)
    if warning:
        print(f"picgate: warning: {warning}", file=sys.stderr)
    # X-Forwarded-* only from the configured proxies: trusting them from any loopback peer let
    # one address pose as many (the per-address login limit) and write what it liked in the log
    proxies = trusted_networks(settings.trusted_proxies)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        proxy_headers=bool(proxies),
        forwarded_allow_ips=proxies or None,
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
        log_level=settings.log_level.lower(),
        # h11 rather than httptools: it bounds the size of a request head (httptools takes
        # megabytes); picgate.protocol adds a deadline for the head and JSON error answers
        http=bounded_protocol(settings.request_header_timeout_seconds, max_connections),
        h11_max_incomplete_event_size=MAX_HEAD_BYTES,
    )
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"PicGate {__version__} listening on http://{shown}:{port} (CTRL+C to quit)", flush=True)
    uvicorn.Server(config).run(sockets=[sock])
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="picgate", description="PicGate image gateway")
    parser.add_argument("--version", action="version", version=f"picgate {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the server")
    serve.add_argument("--host", default=None, help="listen address (env HOST, default 0.0.0.0)")
    serve.add_argument("--port", default=None, help="listen port, 1-65535 (env PORT, default 5643)")
    serve.set_defaults(func=cmd_serve)

    from picgate.admin.cli import register as register_admin
    from picgate.admin.images_cli import register as register_images
    from picgate.admin.keys_cli import register as register_keys
    from picgate.jobs.cli import register as register_jobs
    from picgate.openwebui.cli import register as register_openwebui

    register_jobs(sub)
    register_admin(sub)
    register_openwebui(sub)
    register_images(sub)
    register_keys(sub)

    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
