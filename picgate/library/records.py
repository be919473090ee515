"""What the library hands out about an image: ``StoredImage``, where it came from
(``ImageOrigin``), and its names (id, ``/images/{id}.{ext}``).

Pure values: no I/O, no database.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime

from picgate.storage.codec import BY_EXT
from picgate.storage.local import ID_PATTERN

PROMPT_MAX = 2000


def new_image_id() -> str:
    """22 URL-safe characters: 128 random bits."""
    return secrets.token_urlsafe(16)


def utcnow() -> datetime:
    """Now as naive UTC, the form every time column holds."""
    return datetime.now(UTC).replace(tzinfo=None)


def naive_utc(when: datetime | None) -> datetime:
    """``when`` as naive UTC (an aware datetime is converted); None is now."""
    if when is None:
        return utcnow()
    if when.tzinfo is not None:
        return when.astimezone(UTC).replace(tzinfo=None)
    return when


@dataclass(frozen=True)
class ImageOrigin:
    """Where a new image came from, recorded on its row.

    ``source`` is the endpoint that produced it (``generations``, ``edits``, ``chat``,
    ``openwebui``...); ``prompt`` the text that asked for it, if known (cut to PROMPT_MAX
    characters). The attribution fields (``picgate.attribution`` builds them from a request)
    are who asked and where the image went: the user id and name, the chat and message ids
    Open WebUI forwards, the model asked for, the gateway key's name. They are untrusted text,
    cleaned and capped before they get here; None when unknown.
    """

    source: str
    prompt: str | None = None
    user_id: str | None = None
    user_name: str | None = None
    chat_id: str | None = None
    message_id: str | None = None
    model: str | None = None
    key_name: str | None = None

    def columns(self) -> dict[str, str | None]:
        """The row's columns this origin fills."""
        return {
            "source": self.source,
            "prompt": (self.prompt or None) and self.prompt[:PROMPT_MAX],
            "user_id": self.user_id,
            "user_name": self.user_name,
            "chat_id": self.chat_id,
            "message_id": self.message_id,
            "model": self.model,
            "key_name": self.key_name,
        }


@dataclass(frozen=True)
class ImageFilter:
    """Narrows a listing of images: exact user, chat and model; ``text`` anywhere in the prompt
    (a literal: ``%`` and ``_`` match only themselves). Empty fields narrow nothing."""

    user_id: str | None = None
    chat_id: str | None = None
    model: str | None = None
    text: str | None = None


@dataclass(frozen=True)
class StoredImage:
    id: str
    ext: str
    mime: str
    size: int
    sha256: str
    queued: bool = field(default=False, compare=False)  # its R2 upload was queued on storing

    @property
    def path(self) -> str:
        return f"/images/{self.id}.{self.ext}"

    @property
    def etag(self) -> str:
        return f'"{self.sha256}"'


def parse_image_name(name: str) -> tuple[str, str | None] | None:
    """``{id}`` or ``{id}.{ext}`` → (id, ext or None); None for anything else (traversal...)."""
    stem, dot, ext = name.partition(".")
    if not ID_PATTERN.match(stem):
        return None
    if dot:
        ext = ext.lower()
        if ext not in BY_EXT:
            return None
        return stem, ("jpg" if ext == "jpeg" else ext)
    return stem, None
