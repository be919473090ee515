"""The image grid's data: keyset pages over the images table, newest (or largest) first.

A page is found by ``WHERE (sort_col, id) < (:last_value, :last_id) ORDER BY sort_col DESC, id
DESC LIMIT n``, which walks the sort column's index from where the last page stopped, so page
1000 costs what page 1 costs. The cursor is that (value, id) pair, URL-safe and opaque.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from picgate.db.models import R2_UPLOADED, ImageRow
from picgate.errors import BadRequest
from picgate.library.records import ImageFilter
from picgate.library.rows import SORT_COLUMNS, ImageRows

SortKey = Literal["created", "accessed", "size"]
MAX_LIMIT = 200
PROMPT_PREVIEW = 200


@dataclass(frozen=True)
class Page:
    items: list[dict[str, Any]]
    next_cursor: str | None
    total: int


def encode_cursor(value: Any, image_id: str) -> str:
    raw = value.isoformat() if isinstance(value, datetime) else value
    return base64.urlsafe_b64encode(json.dumps([raw, image_id]).encode()).decode().rstrip("=")


def decode_cursor(cursor: str, sort: str) -> tuple[Any, str]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        raw, image_id = json.loads(base64.urlsafe_b64decode(padded.encode()))
        value: Any
        if sort == "size":
            # an int the database can bind: a float (1e400 is inf), bool or 2**70 is refused
            if type(raw) is not int or not 0 <= raw < 2**63:
                raise ValueError("size")
            value = raw
        else:
            value = datetime.fromisoformat(raw)
        if not isinstance(image_id, str) or len(image_id) > 64:
            raise TypeError("id")
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise BadRequest("Invalid page cursor.", code="invalid_cursor", param="cursor") from exc
    return value, image_id


def _utc_iso(value: datetime) -> str:
    return value.replace(tzinfo=UTC).isoformat()


def describe(row: ImageRow) -> dict[str, Any]:
    prompt = row.prompt or ""
    return {
        "id": row.id,
        "short_id": row.id[:8],
        "ext": row.ext,
        "mime": row.mime,
        "size": row.size,
        "width": row.width,
        "height": row.height,
        "created_at": _utc_iso(row.created_at),
        "accessed_at": _utc_iso(row.accessed_at),
        "source": row.source,
        "prompt": prompt[:PROMPT_PREVIEW] + ("…" if len(prompt) > PROMPT_PREVIEW else ""),
        "local": bool(row.local),
        "r2": row.r2_state == R2_UPLOADED,
        "r2_state": row.r2_state,
        "expired": bool(row.expired),
        "path": f"/images/{row.id}.{row.ext}",
        "user_id": row.user_id,
        "user_name": row.user_name,
        "chat_id": row.chat_id,
        "message_id": row.message_id,
        "model": row.model,
        "key_name": row.key_name,
    }


def list_images(
    rows: ImageRows,
    *,
    sort: str = "created",
    cursor: str | None = None,
    limit: int = 48,
    narrow: ImageFilter | None = None,
) -> Page:
    """One page of images ordered by ``sort`` (newest/largest first), narrowed by ``narrow``;
    ``total`` counts every image it lets through. Synchronous."""
    if sort not in SORT_COLUMNS:
        raise BadRequest(
            "sort must be one of: created, accessed, size", code="invalid_value", param="sort"
        )
    limit = max(1, min(limit, MAX_LIMIT))
    after = decode_cursor(cursor, sort) if cursor else None
    found, total = rows.page(sort, after=after, limit=limit + 1, narrow=narrow)
    more = len(found) > limit
    found = found[:limit]
    next_cursor = None
    if more and found:
        last = found[-1]
        next_cursor = encode_cursor(getattr(last, SORT_COLUMNS[sort].key), last.id)
    return Page([describe(r) for r in found], next_cursor, total)
