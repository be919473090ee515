"""``picgate keys create --name NAME [--daily-images N] [--json]``, ``picgate keys list
[--json]``, ``picgate keys revoke NAME``: named gateway keys without the browser.

``create`` prints the key once (``--json``: ``{"name", "key", "prefix", "daily_images", ...}``).
``list`` prints name, prefix, created, last used, requests and images today and in total.
Exit status: 0 done, 1 nothing to revoke, 2 refused (bad name, taken, bad settings).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from picgate.admin.cli import _database
from picgate.errors import PicGateError
from picgate.keyring import KeyRing, KeyUsage


def _ring() -> KeyRing | None:
    opened = _database()
    if opened is None:
        return None
    db, _where = opened  # not printed: `--json` output is one JSON object
    db.migrate()
    return KeyRing(db)


def cmd_keys_create(args: argparse.Namespace) -> int:
    ring = _ring()
    if ring is None:
        return 2
    try:
        usage, key = ring.create(args.name, daily_images=args.daily_images)
    except PicGateError as exc:
        print(f"picgate: {exc.message}", file=sys.stderr)
        return 2
    finally:
        ring.db.dispose()
    if args.json:
        print(json.dumps({"name": usage.name, "key": key, **usage.as_json()}))
        return 0
    limit = f", at most {usage.daily_images} images a day" if usage.daily_images else ""
    print(f"picgate: key {usage.name!r} created{limit}. It is shown only this once:")
    print(key)
    return 0


def _table(rows: list[KeyUsage]) -> str:
    head = ("name", "prefix", "created", "last used", "req today", "img today", "req", "img")
    lines = [head]
    for row in rows:
        limit = f"/{row.daily_images}" if row.daily_images else ""
        lines.append(
            (
                row.name + (" (revoked)" if row.revoked else ""),
                row.prefix + "...",
                row.created_at.strftime("%Y-%m-%d %H:%M"),
                row.last_used_at.strftime("%Y-%m-%d %H:%M") if row.last_used_at else "-",
                str(row.requests_today),
                f"{row.images_today}{limit}",
                str(row.requests_total),
                str(row.images_total),
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) for line in lines
    )


def cmd_keys_list(args: argparse.Namespace) -> int:
    ring = _ring()
    if ring is None:
        return 2
    try:
        rows = ring.listing()
    finally:
        ring.db.dispose()
    if args.json:
        print(json.dumps([row.as_json() for row in rows]))
    elif rows:
        print(_table(rows))
    else:
        print("picgate: no named keys yet (GATEWAY_API_KEY is the only key)")
    return 0


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    ring = _ring()
    if ring is None:
        return 2
    try:
        revoked = ring.revoke(args.name)
    finally:
        ring.db.dispose()
    if not revoked:
        print(f"picgate: no live key named {args.name!r}", file=sys.stderr)
        return 1
    print(f"picgate: key {args.name!r} revoked")
    return 0


def register(subparsers: Any) -> None:
    """Add ``keys create|list|revoke`` to the ``picgate`` command line."""
    keys = subparsers.add_parser("keys", help="named gateway keys with usage and limits")
    sub = keys.add_subparsers(dest="keys_command", required=True)
    create = sub.add_parser("create", help="make a key (printed once)")
    create.add_argument("--name", required=True, help="the key's name (unique)")
    create.add_argument(
        "--daily-images", type=int, default=None, help="images it may store per UTC day"
    )
    create.add_argument("--json", action="store_true", help="print a JSON object")
    create.set_defaults(func=cmd_keys_create)
    listing = sub.add_parser("list", help="keys with their usage")
    listing.add_argument("--json", action="store_true", help="print a JSON array")
    listing.set_defaults(func=cmd_keys_list)
    revoke = sub.add_parser("revoke", help="refuse a key from now on")
    revoke.add_argument("name")
    revoke.set_defaults(func=cmd_keys_revoke)
