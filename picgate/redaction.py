"""Removing the configured secrets from text that leaves PicGate.

An upstream may echo what it was sent: a 401 body saying ``Incorrect API key provided: <key>``,
a relay that copies the request headers into its error (``Authorization: Basic <base64>``), a
URL with the key in its query string. Whatever the key looks like (not only ``sk-...``), its
value must not reach a client, a log line or a stored row. ``Redactor`` holds the secret values
and replaces each occurrence with ``***``, in these forms:

- the value itself, JSON-escaped, percent-encoded (``quote`` with and without ``/`` kept,
  ``quote_plus``, both hex cases), hex, and base64 (standard and URL-safe alphabets, at each of the three byte
  alignments, so a key inside a longer base64 text such as ``user:key`` is found too);
- values of ``MIN_SECRET`` (8) characters or more are replaced wherever they occur, in every
  form above; values of ``MIN_TOKEN_SECRET`` (4) to 7 characters only where they stand as a
  whole word (not inside a longer run of letters, digits, ``_`` or ``-``: replacing ``abcd``
  inside ``abcdef`` would mangle ordinary text) and only in their plain form (the base64 of 4
  bytes would match by chance); values under 4 characters are not replaced at all (they would
  mask ordinary words and numbers in every answer).

The container builds a new ``Redactor`` whenever the settings change with ``remembering``: the
secrets of the previous one are kept (up to ``MAX_REMEMBERED``), so a key rotated away in the
console is still scrubbed from what an upstream or a log echoes later in this process.

It is applied at the boundaries: the error handler and the stream's error event (what clients
get), successful chat answers (streamed and not), ``EventLog`` (the stored log), Python logging
(``picgate.log_redaction``), the console's upstream test, and the upload queue's last error.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, quote_plus

from picgate.config import Settings
from picgate.errors import PicGateError

__all__ = [
    "MASK",
    "MAX_DEPTH",
    "MIN_SECRET",
    "MIN_TOKEN_SECRET",
    "SECRET_SETTINGS",
    "Redactor",
    "encoded_forms",
]

MASK = "***"
MIN_SECRET = 8
MIN_TOKEN_SECRET = 4
MAX_REMEMBERED = 64
# JSON deeper than this is cut (its inner part replaced by TOO_DEEP): a walk must not recurse
# until Python's stack runs out (an upstream error nested 900 levels deep was a 500)
MAX_DEPTH = 64
TOO_DEEP = "[nested too deep]"
SECRET_SETTINGS = (
    "upstream_api_key",
    "gateway_api_key",
    "r2_access_key_id",
    "r2_secret_access_key",
    "secret_key",
    "database_auth_token",
    "metrics_token",
)
_WORD = r"A-Za-z0-9_\-"


def _base64_cores(raw: bytes) -> set[str]:
    """The base64 characters that encode only ``raw``, at each of the three byte offsets
    ``raw`` can start at in a longer encoded text, in both alphabets."""
    whole = base64.b64encode(raw).decode("ascii")  # the key alone, with its last characters
    cores = {whole, whole.replace("+", "-").replace("/", "_")}
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + raw).decode("ascii")
        start = -(-8 * offset // 6)  # the first character made of ``raw``'s bits alone
        end = 8 * (offset + len(raw)) // 6  # past the last whole character
        core = encoded[start:end]
        cores.add(core)
        cores.add(core.replace("+", "-").replace("/", "_"))
    return cores


def encoded_forms(secret: str) -> set[str]:
    """``secret`` and every encoded form of it that is replaced too (see the module doc)."""
    raw = secret.encode("utf-8")
    hexed = binascii.hexlify(raw).decode("ascii")
    forms = {secret, json.dumps(secret)[1:-1], hexed, hexed.upper()}
    for encoded in (quote(secret, safe=""), quote(secret), quote_plus(secret, safe="")):
        forms.add(encoded)
        forms.add(re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), encoded))
    forms |= _base64_cores(raw)
    return {f for f in forms if len(f) >= MIN_SECRET}


class Redactor:
    """Replaces every secret value it holds, in every form; the longest first (one may
    contain another)."""

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        kept = [s for s in dict.fromkeys(secrets) if s and len(s) >= MIN_TOKEN_SECRET]
        self._kept = tuple(kept[-MAX_REMEMBERED:])
        long = [s for s in self._kept if len(s) >= MIN_SECRET]
        forms = {f for s in long for f in encoded_forms(s)}
        self._forms = tuple(sorted(forms, key=len, reverse=True))
        short = sorted((s for s in self._kept if len(s) < MIN_SECRET), key=len, reverse=True)
        self._short = tuple(short)
        self._short_pattern = (
            re.compile(rf"(?<![{_WORD}])(?:{'|'.join(re.escape(s) for s in short)})(?![{_WORD}])")
            if short
            else None
        )

    @classmethod
    def of(cls, *settings: Settings, extra: Iterable[str | None] = ()) -> Redactor:
        """The secrets of every ``settings`` given (e.g. the environment's and the merged),
        and ``extra`` ones (every upstream key of ``MODELS_FILE``)."""
        found = [getattr(s, name) for s in settings for name in SECRET_SETTINGS]
        return cls([*found, *extra])

    def remembering(self, *settings: Settings, extra: Iterable[str | None] = ()) -> Redactor:
        """A redactor for ``settings`` (and ``extra`` secrets, as in ``of``) that still knows
        this one's secrets (a rotated-away key stays scrubbed); the oldest are forgotten past
        ``MAX_REMEMBERED``."""
        current = [getattr(s, name) for s in settings for name in SECRET_SETTINGS]
        current += [s for s in extra if s]
        # the current ones last: the cap forgets from the front, and must never forget a key
        # still in use just because it was first seen long ago
        return Redactor([*(s for s in self._kept if s not in current), *current])

    @property
    def secrets(self) -> tuple[str, ...]:
        return self._kept

    def __bool__(self) -> bool:
        return bool(self._kept)

    def text(self, text: str) -> str:
        for form in self._forms:
            if form in text:
                text = text.replace(form, MASK)
        if self._short_pattern is not None and any(s in text for s in self._short):
            text = self._short_pattern.sub(MASK, text)
        return text

    def value(self, value: Any, depth: int = 0) -> Any:
        """``value`` (JSON-like: str, list, dict) with secrets replaced in every string, keys
        included; parts nested deeper than ``MAX_DEPTH`` become ``TOO_DEEP``."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, (list, dict)) and depth >= MAX_DEPTH:
            return TOO_DEEP
        if isinstance(value, list):
            return [self.value(v, depth + 1) for v in value]
        if isinstance(value, dict):
            return {self.value(k, depth + 1): self.value(v, depth + 1) for k, v in value.items()}
        return value

    def error(self, error: PicGateError) -> PicGateError:
        """``error`` with secrets removed from every field that leaves (message, type, code,
        param, extra fields at any depth, headers); changed in place, returned for
        convenience."""
        error.message = self.text(error.message)
        error.args = (error.message,)
        error.error_type = self.text(error.error_type)
        if error.code is not None:
            error.code = self.text(error.code)
        if error.param is not None:
            error.param = self.text(error.param)
        error.extra = self.value(error.extra)
        error.headers = {k: self.text(v) for k, v in error.headers.items()}
        return error
