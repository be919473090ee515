"""``picgate images list [--user ID] [--chat ID] [--model M] [--limit N] [--json]`` and
``picgate images delete --chat ID [--yes]``.

``list`` prints the newest images first (JSON: one object per image with ``id``, ``url``,
``user_id``, ``user_name``, ``chat_id``, ``message_id``, ``model``, ``created_at``, ``bytes``
and more). ``url`` is absolute when ``PUBLIC_BASE_URL`` is set, else the path.
``delete --chat`` removes a chat's images everywhere (local copy, R2 object, row) after
showing the count and asking (``--yes`` skips the question), so an admin can follow a chat
deleted in Open WebUI. Exit status: 0 done (or nothing to do), 1 some R2 deletions failed (run
again), 2 refused (bad settings, no confirmation).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from typing import Any

MAX_LIST = 10_000


def register(subparsers: Any) -> None:
    """Add ``images list`` and ``images delete`` to the ``picgate`` command line."""
    images = subparsers.add_parser("images", help="list or delete stored images")
    sub = images.add_subparsers(dest="images_command", required=True)
    listing = sub.add_parser("list", help="list images, newest first")
    listing.add_argument("--user", default=None, help="only this user id")
    listing.add_argument("--chat", default=None, help="only this chat id")
    listing.add_argument("--model", default=None, help="only this model")
    listing.add_argument("--limit", type=int, default=50, help="at most N images (default 50)")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(func=cmd_list)
    delete = sub.add_parser("delete", help="delete a chat's images everywhere")
    delete.add_argument("--chat", required=True, help="the chat id")
    delete.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    delete.set_defaults(func=cmd_delete)


def _services() -> Any:
    from picgate.config import Settings, SettingsError
    from picgate.services import Services

    try:
        services = Services(Settings())
    except (SettingsError, ValueError) as exc:
        print(f"picgate: configuration error: {exc}", file=sys.stderr)
        return None
    with contextlib.redirect_stdout(sys.stderr):  # first-start banners: stdout is the answer
        services.prepare()
    return services


def _rows(services: Any, args: argparse.Namespace) -> list[dict[str, Any]]:
    from picgate.library.gallery import MAX_LIMIT
    from picgate.library.records import ImageFilter

    narrow = ImageFilter(user_id=args.user, chat_id=args.chat, model=args.model)
    wanted = max(1, min(args.limit, MAX_LIST))
    rows: list[dict[str, Any]] = []
    cursor: str | None = None
    while len(rows) < wanted:
        batch = min(MAX_LIMIT, wanted - len(rows))
        page = services.library.list_sync(cursor=cursor, limit=batch, narrow=narrow)
        rows.extend(page.items)
        cursor = page.next_cursor
        if cursor is None:
            break
    return rows


def cmd_list(args: argparse.Namespace) -> int:
    services = _services()
    if services is None:
        return 2
    try:
        base = (services.config.current().public_base_url or "").rstrip("/")
        rows = _rows(services, args)
    finally:
        asyncio.run(services.stop())
    shown = [
        {
            "id": r["id"],
            "url": base + r["path"],
            "user_id": r["user_id"],
            "user_name": r["user_name"],
            "chat_id": r["chat_id"],
            "message_id": r["message_id"],
            "model": r["model"],
            "key_name": r["key_name"],
            "source": r["source"],
            "created_at": r["created_at"],
            "bytes": r["size"],
            "mime": r["mime"],
        }
        for r in rows
    ]
    if args.json:
        print(json.dumps(shown, ensure_ascii=False, indent=2))
        return 0
    for item in shown:
        # untrusted text: repr() keeps a terminal escape sequence from being interpreted
        print(
            f"{item['created_at'][:19]}  {item['bytes']:>9}  {item['url']}  "
            f"user={item['user_id']!r} chat={item['chat_id']!r} model={item['model']!r}"
        )
    print(f"{len(shown)} image(s)", file=sys.stderr)
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    services = _services()
    if services is None:
        return 2
    try:
        library = services.library
        ids = library.rows.ids_of_chat(args.chat)
        if not ids:
            print(f"picgate: no images of chat {args.chat!r}")
            return 0
        print(f"picgate: {len(ids)} image(s) of chat {args.chat!r} (local copy, R2 object, row)")
        if not args.yes and not _confirm("Delete them everywhere? [y/N] "):
            print("picgate: nothing deleted", file=sys.stderr)
            return 2
        counts = library.actions.delete_images(ids, local=True, remote=True, forget=True)
        services.events.flush()
    finally:
        asyncio.run(services.stop())
    print(
        f"picgate: deleted {counts['forgotten']} image(s): {counts['local']} local file(s), "
        f"{counts['remote']} R2 object(s); {counts['failed']} R2 deletion(s) failed"
    )
    return 1 if counts["failed"] else 0


def _confirm(question: str) -> bool:
    try:
        answer = input(question)
    except EOFError:  # no terminal to answer from: not a yes
        return False
    return answer.strip().lower() in ("y", "yes")
