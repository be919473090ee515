"""``picgate admin create --username U --password P``: create or reset the admin account.
``picgate admin unlock [--username U]``: forget failed logins (all, or one account's).

Work without the browser (a lost password, an automated deployment, an admin locked out by
someone guessing). Resetting ends every session of the admin. Exit status: 0 done, 2 refused
(bad name, short password, bad settings).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from picgate.db.engine import Database
    from picgate.db.location import Whereabouts


def _database() -> tuple[Database, Whereabouts] | None:
    """The database the settings point at and where it is (None, with the reason printed,
    when the settings are bad)."""
    from picgate.config import Settings, SettingsError
    from picgate.db.engine import Database
    from picgate.db.location import Whereabouts

    try:
        settings = Settings()
        # Database checks DATABASE_URL (DatabaseUrlError is a SettingsError): one line, no trace
        db = Database(settings.database_url, auth_token=settings.database_auth_token)
    except (SettingsError, ValueError) as exc:
        print(f"picgate: configuration error: {exc}", file=sys.stderr)
        return None
    return db, Whereabouts.before_opening(settings.database_url)


def _say_where(where: Whereabouts) -> None:
    for line in where.lines():
        print(f"picgate: {line}")


def cmd_admin_unlock(args: argparse.Namespace) -> int:
    from picgate.admin import auth

    opened = _database()
    if opened is None:
        return 2
    db, where = opened
    try:
        db.migrate()
        removed = db.write(lambda s: auth.unlock(s, args.username))
    finally:
        db.dispose()
    _say_where(where)
    who = f"account {args.username!r}" if args.username else "every account and address"
    print(f"picgate: cleared {removed} failed-login record(s) for {who}")
    return 0


def cmd_admin_create(args: argparse.Namespace) -> int:
    from picgate.admin import auth

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
    opened = _database()
    if opened is None:
        return 2
    db, where = opened
    try:
        db.migrate()
        created = db.write(lambda s: auth.set_admin(s, username=args.username, password=password))
    finally:
        db.dispose()
    _say_where(where)
    verb = "created" if created else "updated (its sessions were ended)"
    print(f"picgate: admin account {args.username!r} {verb}")
    return 0


def register(subparsers: Any) -> None:
    """Add ``admin create`` and ``admin unlock`` to the ``picgate`` command line."""
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
    unlock = admin_sub.add_parser(
        "unlock", help="clear failed-login records (login lockouts and slowdowns)"
    )
    unlock.add_argument(
        "--username", default=None, help="only this account's records (default: all)"
    )
    unlock.set_defaults(func=cmd_admin_unlock)
