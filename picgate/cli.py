"""``picgate serve | cleanup | admin create``."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

# Longer than the idle expiry of the clients and proxies in front of PicGate (aiohttp, which
# OpenWebUI uses: 15 s; nginx upstream keepalive and AWS load balancers: 60 s). With uvicorn's
# default of 5 s the server closes idle connections those clients still mean to reuse, and a
# request sent as the close crosses it fails (a reset, or a 502 from the proxy).
KEEP_ALIVE_SECONDS = 75


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from picgate.app import create_app
    from picgate.config import Settings, SettingsError, trusted_networks
    from picgate.protocol import MAX_HEAD_BYTES, bounded_protocol

    try:
        settings = Settings()
        _configure_logging(settings.log_level)
        app = create_app(settings)
    except (SettingsError, ValueError) as exc:
        print(f"picgate: configuration error: {exc}", file=sys.stderr)
        return 2
    # X-Forwarded-* only from the configured proxies: trusting them from any loopback peer let
    # one address pose as many (the per-address login limit) and write what it liked in the log
    proxies = trusted_networks(settings.trusted_proxies)
    host = args.host or settings.host
    port = args.port or settings.port
    uvicorn.run(
        app,
        host=host,
        port=port,
        proxy_headers=bool(proxies),
        forwarded_allow_ips=proxies or None,
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
        log_level=settings.log_level.lower(),
        # h11 rather than httptools: it bounds the size of a request head (httptools takes
        # megabytes); picgate.protocol adds a deadline for the head and JSON error answers
        http=bounded_protocol(settings.request_header_timeout_seconds),
        h11_max_incomplete_event_size=MAX_HEAD_BYTES,
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="picgate", description="PicGate image gateway")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the server")
    serve.add_argument("--host", default=None, help="listen address (env HOST, default 0.0.0.0)")
    serve.add_argument(
        "--port", type=int, default=None, help="listen port (env PORT, default 5643)"
    )
    serve.set_defaults(func=cmd_serve)

    from picgate.admin.cli import register as register_admin
    from picgate.jobs.cli import register as register_jobs

    register_jobs(sub)
    register_admin(sub)

    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
