"""``USER_DAILY_IMAGE_LIMIT``: images per user (or per gateway key) per UTC day.

Checked when a call that can make images arrives: a user at or over the limit gets a 429 in
OpenAI's shape (``code: "rate_limit_exceeded"``) saying when the count resets (the next 00:00
UTC) and a ``Retry-After``. A call admitted under the limit runs to its end, so a call asking
for several images can pass the limit by those images. The count is the images stored today
with that user id (Open WebUI's forwarded ``X-OpenWebUI-User-Id``), or, when no user is
forwarded, through that gateway key; it lives in the image rows, so every replica sees it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from picgate.attribution import Attribution
from picgate.errors import RateLimited
from picgate.library.rows import ImageRows


def next_reset(now: datetime) -> datetime:
    """The next 00:00 UTC after ``now`` (naive UTC, as the rows store it)."""
    return datetime(now.year, now.month, now.day) + timedelta(days=1)


def check_daily_limit(
    rows: ImageRows, *, limit: int, who: Attribution, now: datetime | None = None
) -> None:
    """Raise RateLimited when ``who`` has made ``limit`` images today (0: no limit)."""
    subject = who.limit_subject()
    if limit <= 0 or subject is None:
        return
    now = now or datetime.now(UTC).replace(tzinfo=None)
    today = datetime(now.year, now.month, now.day)
    kind, name = subject
    if kind == "user":
        made = rows.count_since(today, user_id=name)
    else:
        made = rows.count_since(today, key_name=name)
    if made < limit:
        return
    reset = next_reset(now)
    seconds = max(1, int((reset - now).total_seconds()))
    hours, minutes = divmod((seconds + 59) // 60, 60)
    whom = "this user" if kind == "user" else "this gateway key"
    raise RateLimited(
        f"Daily image limit reached: {whom} has made {made} of {limit} images today "
        f"(USER_DAILY_IMAGE_LIMIT). The count resets at 00:00 UTC "
        f"({reset:%Y-%m-%d} 00:00 UTC, in {hours} h {minutes} min).",
        headers={"Retry-After": str(seconds)},
    )
