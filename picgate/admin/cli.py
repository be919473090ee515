"""``picgate admin create --username U --password P``: create or reset the admin account.

Works without the browser (a lost password, an automated deployment). Resetting ends every
session of the admin. Exit status: 0 done, 2 refused (bad name, short password, bad settings).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any


def cmd_admin_create(args: argparse.Namespace) -> int:
    from picgate.admin import auth
    from picgate.config import Settings, SettingsError
    from picgate.db.engine import Database

    password = args.password
    if password is None:
        password = os.environ.get("PICGATE_ADMIN_PASSWORD", "")
    problem = auth.check_credentials_shape(args.username, password)
    if problem == "auth.error.username_invalid":
        print("picgate: the user name must be 1-64 letters, digits or _ . @ -", file=sys.stderr)
        return 2
    if problem is not None:
        print("picgate: the password must be 8-256 characters long", file=sys.stderr)
        return 2
    try:
        settings = Settings()
    except (SettingsError, ValueError) as exc:
        print(f"picgate: configuration error: {exc}", file=sys.stderr)
        return 2
    db = Database(settings.database_url, auth_token=settings.database_auth_token)
    try:
        db.migrate()
        created = db.call(lambda s: auth.set_admin(s, username=args.username, password=password))
    finally:
        db.dispose()
    verb = "created" if created else "updated (its sessions were ended)"
    print(f"picgate: admin account {args.username!r} {verb}")
    return 0


def register(subparsers: Any) -> None:
    """Add ``admin create`` to the ``picgate`` command line."""
    admin = subparsers.add_parser("admin", help="manage the admin console account")
    admin_sub = admin.add_subparsers(dest="admin_command", required=True)
    create = admin_sub.add_parser("create", help="create the admin, or reset its password")
    create.add_argument("--username", required=True, help="the admin's user name")
    create.add_argument(
        "--password",
        default=None,
        help="the new password (8+ characters; or set PICGATE_ADMIN_PASSWORD)",
    )
    create.set_defaults(func=cmd_admin_create)
