"""Who asked for an image and where it went: recorded on every stored image.

Open WebUI, with ``ENABLE_FORWARD_USER_INFO_HEADERS=true``, sends ``X-OpenWebUI-User-Id``,
``-User-Name`` (URL-quoted), ``-User-Email``, ``-User-Role``, ``-Chat-Id`` and ``-Message-Id``
with each call; OpenAI clients may send a ``user`` field in the body. All of it is untrusted
text: each value is URL-unquoted where Open WebUI quotes it, stripped of control and other
non-printable characters, and capped (``MAX_CHARS``); an empty result is None. The console
escapes it like any other text (Jinja autoescape, ``textContent`` in scripts).

The ``/v1`` auth dependency starts a request's attribution (``begin``) from the headers and
the name of the gateway key used; the routes add the body's ``model`` and ``user``
(``note_body``). While the request runs, ``current()`` returns it, also in the worker threads
the image store writes from (anyio copies the context), so every image saved for the request
carries it. Code that saves images outside a request (the Open WebUI migration) passes an
``Attribution`` explicitly.
"""

from __future__ import annotations

import dataclasses
import unicodedata
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

MAX_CHARS = 128
# the name recorded for the one gateway key of GATEWAY_API_KEY (named keys record their name)
ENV_KEY_NAME = "env"

HEADER_USER_ID = "x-openwebui-user-id"
HEADER_USER_NAME = "x-openwebui-user-name"
HEADER_CHAT_ID = "x-openwebui-chat-id"
HEADER_MESSAGE_ID = "x-openwebui-message-id"


def clean_text(value: Any, *, quoted: bool = False) -> str | None:
    """Printable text of at most MAX_CHARS characters, or None (not a string, or nothing left)."""
    if not isinstance(value, str):
        return None
    if quoted:
        value = unquote(value)
    # categories C*: control, format (bidi overrides), surrogates, private use, unassigned
    kept = "".join(ch for ch in value if not unicodedata.category(ch).startswith("C"))
    kept = kept.strip()[:MAX_CHARS].strip()
    return kept or None


@dataclass(frozen=True)
class Attribution:
    """Per-image origin. ``user_id``: Open WebUI's user id, else the body's ``user`` field."""

    user_id: str | None = None
    user_name: str | None = None
    chat_id: str | None = None
    message_id: str | None = None
    model: str | None = None
    key_name: str | None = None
    forwarded_user: bool = False  # user_id came from Open WebUI's header (not the body)

    @classmethod
    def from_headers(cls, headers: Mapping[str, str], *, key_name: str | None) -> Attribution:
        user_id = clean_text(headers.get(HEADER_USER_ID))
        return cls(
            user_id=user_id,
            user_name=clean_text(headers.get(HEADER_USER_NAME), quoted=True),
            chat_id=clean_text(headers.get(HEADER_CHAT_ID)),
            message_id=clean_text(headers.get(HEADER_MESSAGE_ID)),
            key_name=clean_text(key_name),
            forwarded_user=user_id is not None,
        )

    def with_body(self, body: Mapping[str, Any]) -> Attribution:
        """Add the body's ``model`` and, when no user was forwarded, its ``user``."""
        changes: dict[str, Any] = {"model": clean_text(body.get("model")) or self.model}
        if not self.forwarded_user:
            changes["user_id"] = clean_text(body.get("user")) or self.user_id
        return dataclasses.replace(self, **changes)

    def columns(self) -> dict[str, str | None]:
        """The image row's attribution columns."""
        return {
            "user_id": self.user_id,
            "user_name": self.user_name,
            "chat_id": self.chat_id,
            "message_id": self.message_id,
            "model": self.model,
            "key_name": self.key_name,
        }

    def limit_subject(self) -> tuple[str, str] | None:
        """What ``USER_DAILY_IMAGE_LIMIT`` counts for: the forwarded user, else the key."""
        if self.forwarded_user and self.user_id:
            return ("user", self.user_id)
        if self.key_name:
            return ("key", self.key_name)
        return None


_current: ContextVar[Attribution | None] = ContextVar("picgate_attribution", default=None)


def begin(attribution: Attribution) -> None:
    _current.set(attribution)


def current() -> Attribution | None:
    return _current.get()


def note_body(body: Mapping[str, Any]) -> None:
    """Add a request body's ``model``/``user`` to the running request's attribution."""
    running = _current.get()
    if running is not None:
        _current.set(running.with_body(body))
