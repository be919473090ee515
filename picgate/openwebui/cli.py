"""``picgate openwebui migrate --database-url URL [--base-url URL] [--dry-run] [--vacuum]
[--json]``: move the base64 images of an existing Open WebUI database into PicGate.

Run it where PicGate runs (the same ``DATABASE_URL`` and ``IMAGES_DIR``), after backing up the
Open WebUI database. Exit status: 0 done, 1 stopped by an image that could not be stored
(chats before it are migrated, the rest untouched; run again), 2 a bad setting or database.

``PICGATE_OPENWEBUI_HOLD_AT=N`` (tests): before committing the N-th rewritten chat, say so on
stderr and wait to be killed, so a test can stop a run inside a transaction without timing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from typing import Any

HOLD_ENV = "PICGATE_OPENWEBUI_HOLD_AT"


def register(subparsers: Any) -> None:
    """Add ``openwebui migrate`` to the ``picgate`` command line."""
    openwebui = subparsers.add_parser("openwebui", help="work on an Open WebUI database")
    sub = openwebui.add_subparsers(dest="openwebui_command", required=True)
    migrate = sub.add_parser(
        "migrate", help="move the base64 images in Open WebUI's chats into PicGate"
    )
    migrate.add_argument(
        "--database-url",
        required=True,
        help="Open WebUI's database: sqlite:///path/to/webui.db (or a file path), or "
        "postgresql://user:password@host:5432/database",
    )
    migrate.add_argument(
        "--base-url",
        default=None,
        help="the PicGate address written into the chats (default: PUBLIC_BASE_URL)",
    )
    migrate.add_argument("--dry-run", action="store_true", help="change nothing; report only")
    migrate.add_argument(
        "--vacuum",
        action="store_true",
        help="afterwards give the freed space back (SQLite VACUUM; PostgreSQL plain VACUUM)",
    )
    migrate.add_argument("--json", action="store_true", help="print the report as JSON")
    migrate.set_defaults(func=cmd_migrate)


def _fail(message: str) -> int:
    print(f"picgate openwebui migrate: {message}", file=sys.stderr)
    return 2


def cmd_migrate(args: argparse.Namespace) -> int:
    from picgate.config import Settings, SettingsError
    from picgate.openwebui.database import OpenWebUIError, open_database
    from picgate.services import Services

    try:
        services = Services(Settings())
    except (SettingsError, ValueError) as exc:
        return _fail(f"configuration error: {exc}")
    try:
        # first-start banners go to stderr: stdout carries the report (JSON with --json)
        with contextlib.redirect_stdout(sys.stderr):
            services.prepare()
        current = services.config.current()
        base_url = (args.base_url or current.public_base_url or "").rstrip("/")
        if not base_url.startswith(("http://", "https://")):
            return _fail(
                "set PUBLIC_BASE_URL or pass --base-url https://your-picgate: the chats need "
                "the absolute address browsers load PicGate's images from"
            )
        try:
            database = open_database(args.database_url)
        except OpenWebUIError as exc:
            return _fail(f"--database-url: {exc}")
        try:
            report = _run(args, services, database, base_url, current.max_image_mb)
        finally:
            database.close()
    finally:
        asyncio.run(services.stop())
    if args.json:
        print(json.dumps(report.as_dict(), ensure_ascii=False, indent=2))
    else:
        print(format_report(report.as_dict()))
    return 1 if report.errors else 0


def _run(args: argparse.Namespace, services: Any, database: Any, base_url: str, mb: int) -> Any:
    from picgate.openwebui.migration import Migration
    from picgate.openwebui.sink import PicGateSink

    sink = PicGateSink(library=services.library, base_url=base_url)
    progress = _ProgressBar() if sys.stderr.isatty() else None
    migration = Migration(
        database=database,
        sink=sink,
        base_url=base_url,
        max_image_bytes=mb * 2**20,
        dry_run=args.dry_run,
        before_commit=_hold_hook(),
        progress=progress,
    )
    report = migration.run()
    if progress is not None:
        progress.done()
    if args.vacuum and not args.dry_run and not report.errors:
        database.vacuum()
        report.file_bytes_after = database.size()
    return report


def _hold_hook() -> Any:
    hold_at = int(os.environ.get(HOLD_ENV) or 0)
    if hold_at <= 0:
        return None
    seen = [0]

    def hold(chat_id: str) -> None:
        seen[0] += 1
        if seen[0] == hold_at:
            print(f"holding chat {chat_id} before commit", file=sys.stderr, flush=True)
            while True:
                time.sleep(60)

    return hold


class _ProgressBar:
    """``[#####.....] 120/400 chats`` on stderr, redrawn in place (terminals only)."""

    WIDTH = 30

    def __call__(self, done: int, total: int) -> None:
        filled = self.WIDTH * done // max(total, 1)
        bar = "#" * filled + "." * (self.WIDTH - filled)
        sys.stderr.write(f"\r[{bar}] {done}/{total} chats")
        sys.stderr.flush()

    def done(self) -> None:
        sys.stderr.write("\n")


_LABELS = (
    ("chats_scanned", "chats scanned"),
    ("chats_with_images", "chats holding base64 images"),
    ("chats_rewritten", "chats rewritten"),
    ("images_found", "base64 images found (every copy)"),
    ("images_distinct", "distinct images (per chat)"),
    ("images_skipped", "images left in place (not PNG/JPEG/WebP/GIF, or too big)"),
    ("bytes_before", "chat JSON bytes before"),
    ("bytes_after", "chat JSON bytes after"),
    # SQLite: the file; PostgreSQL: the chat tables with their TOAST and indexes
    ("file_bytes_before", "database bytes on disk before"),
    ("file_bytes_after", "database bytes on disk after"),
)


def format_report(report: dict[str, Any]) -> str:
    title = "dry run, nothing changed" if report["dry_run"] else "done"
    if report["errors"]:
        title = "stopped"
    lines = [f"picgate openwebui migrate: {title}"]
    width = max(len(label) for _, label in _LABELS)
    for key, label in _LABELS:
        value = report.get(key)
        lines.append(f"  {label:<{width}}  {'-' if value is None else value}")
    for error in report["errors"]:
        lines.append(f"  error: {error}")
    return "\n".join(lines)
