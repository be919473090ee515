"""``picgate cleanup``: run every scheduled job once, print the report.

Exit status: 0 when every step succeeded, 1 when a step failed or another runner kept the lease
for longer than ``--wait`` seconds, 2 for a configuration error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

POLL_SECONDS = 2.0

_LABELS = (
    ("uploaded", "uploaded to R2"),
    ("upload_retried", "uploads to retry later"),
    ("upload_failed", "uploads failed"),
    ("ttl_removed", "local copies past the TTL removed"),
    ("cap_removed", "local copies removed for the size cap"),
    ("expired_for_good", "  of which had no R2 copy (now 410)"),
    ("kept_unsafe", "kept: only copy, not in R2 yet"),
    ("bytes_freed", "bytes freed"),
    ("rows_deleted", "rows past retention deleted"),
    ("r2_objects_deleted", "R2 objects deleted"),
    ("logs_trimmed", "log lines trimmed"),
    ("sessions_deleted", "expired admin sessions deleted"),
    ("login_attempts_deleted", "stale login attempts deleted"),
    ("orphans_removed", "files without a row removed"),
    ("missing_marked", "rows whose file was missing fixed"),
    ("relinked", "rows re-marked as local"),
    ("tmp_removed", "stale temporary files removed"),
)


def register(subparsers: Any) -> None:
    """Add ``cleanup`` to the ``picgate`` command (called by ``picgate.cli``)."""
    parser = subparsers.add_parser(
        "cleanup",
        help="run every scheduled job once (uploads, TTL, size cap, retention, logs, repair)",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument(
        "--wait",
        type=float,
        default=120.0,
        help="seconds to wait while another runner holds the cleanup lease (default 120)",
    )
    parser.set_defaults(func=cmd_cleanup)


def cmd_cleanup(args: argparse.Namespace) -> int:
    from picgate.config import Settings, SettingsError
    from picgate.db.location import Whereabouts
    from picgate.jobs.scheduler import run_scheduled
    from picgate.services import Services

    try:
        settings = Settings()
        services = Services(settings)
    except (SettingsError, ValueError) as exc:
        print(f"picgate: configuration error: {exc}", file=sys.stderr)
        return 2
    where = Whereabouts.before_opening(settings.database_url)
    try:
        try:
            services.prepare()
        except SettingsError as exc:  # a half-applied migration: one line, not a traceback
            print(f"picgate: {exc}", file=sys.stderr)
            return 2
        deadline = time.monotonic() + max(0.0, args.wait)
        while True:
            # every pending and failed upload is tried at once (DESIGN: picgate cleanup)
            result = run_scheduled(services.cleanup, include_failed=True)
            if result["ran"] or time.monotonic() >= deadline:
                break
            time.sleep(POLL_SECONDS)
    finally:
        asyncio.run(services.stop())
    # stderr: with --json, stdout is the report alone
    for line in where.lines():
        print(f"picgate cleanup: {line}", file=sys.stderr)
    if not result["ran"]:
        print(f"picgate cleanup: not run: {result['reason']}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result, ensure_ascii=False, indent=2))
    else:
        print(format_report(result))
    return 0 if result["ok"] else 1


def format_report(result: dict[str, Any]) -> str:
    lines = [f"picgate cleanup: {'ok' if result['ok'] else 'finished with errors'}"]
    width = max(len(label) for _, label in _LABELS)
    for key, label in _LABELS:
        lines.append(f"  {label:<{width}}  {result.get(key, 0)}")
    for error in result.get("errors", []):
        lines.append(f"  error: {error}")
    return "\n".join(lines)
