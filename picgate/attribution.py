"""Who asked for an image and where it went: recorded on every stored image.

Open WebUI, with ``ENABLE_FORWARD_USER_INFO_HEADERS=true``, sends ``X-OpenWebUI-User-Id``,
``-User-Name`` (URL-quoted), ``-User-Email``, ``-User-Role``, ``-Chat-Id`` and ``-Message-Id``
with each call; OpenAI clients may send a ``user`` field in the body. All of it is untrusted
text: each value is URL-unquoted where Open WebUI quotes it, stripped of control and other
non-printable characters, and capped (``MAX_CHARS``); an empty result is None. The console
escapes it like any other text (Jinja autoescape, ``textContent`` in scripts).

The ``/v1`` auth dependency reads a request's ``Attribution`` from the headers and the name of
the gateway key used (``Gateway.who``); the route adds the body's ``model`` and ``user``
(``with_body``) and passes it to the gateway function, which records it on every image it saves
(``origin``: the row's ``ImageOrigin``). Code that saves images outside a request (the Open
WebUI migration) builds its ``ImageOrigin`` itself, with ``clean_text`` on what it found.
"""

from __future__ import annotations

import dataclasses
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from picgate.library.records import ImageOrigin

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

    def origin(self, source: str, prompt: str | None) -> ImageOrigin:
        """The ``ImageOrigin`` of an image this request stores from ``source``."""
        return ImageOrigin(
            source,
            prompt,
            user_id=self.user_id,
            user_name=self.user_name,
            chat_id=self.chat_id,
            message_id=self.message_id,
            model=self.model,
            key_name=self.key_name,
        )

    def limit_subject(self) -> tuple[str, str] | None:
        """What ``USER_DAILY_IMAGE_LIMIT`` counts for: the forwarded user, else the key."""
        if self.forwarded_user and self.user_id:
            return ("user", self.user_id)
        if self.key_name:
            return ("key", self.key_name)
        return None
