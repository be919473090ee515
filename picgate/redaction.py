"""Removing the configured secrets from text that leaves PicGate.

An upstream may echo what it was sent: a 401 body saying ``Incorrect API key provided: <key>``,
or a relay that copies the request headers into its error. Whatever the key looks like (not
only ``sk-...``), its value must not reach a client, a log line or a stored row. ``Redactor``
holds the secret values of the current settings and replaces each occurrence with ``***``.
It is applied at the boundaries: the error handler and the stream's error event (what clients
get), ``EventLog`` (the stored log and Python logging), and the upload queue's last error.

Values shorter than ``MIN_SECRET`` characters are not replaced: they would mangle ordinary
text, and PicGate refuses a gateway key that short anyway.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from picgate.config import Settings
from picgate.errors import PicGateError

__all__ = ["MASK", "MIN_SECRET", "SECRET_SETTINGS", "Redactor"]

MASK = "***"
MIN_SECRET = 8
SECRET_SETTINGS = (
    "upstream_api_key",
    "gateway_api_key",
    "r2_access_key_id",
    "r2_secret_access_key",
    "secret_key",
    "database_auth_token",
    "metrics_token",
)


class Redactor:
    """Replaces every secret value it holds; the longest first (one may contain another)."""

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        found = {s for s in secrets if s and len(s) >= MIN_SECRET}
        self._secrets = tuple(sorted(found, key=len, reverse=True))

    @classmethod
    def of(cls, *settings: Settings, extra: Iterable[str | None] = ()) -> Redactor:
        """The secrets of every ``settings`` given (e.g. the environment's and the merged),
        and ``extra`` ones (every upstream key of ``MODELS_FILE``)."""
        found = [getattr(s, name) for s in settings for name in SECRET_SETTINGS]
        return cls([*found, *extra])

    def __bool__(self) -> bool:
        return bool(self._secrets)

    def text(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return text

    def value(self, value: Any) -> Any:
        """``value`` (JSON-like: str, list, dict) with secrets replaced in every string."""
        if not self._secrets:
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, list):
            return [self.value(v) for v in value]
        if isinstance(value, dict):
            return {self.value(k): self.value(v) for k, v in value.items()}
        return value

    def error(self, error: PicGateError) -> PicGateError:
        """``error`` with secrets removed from its message, param, extra fields and headers
        (changed in place, returned for convenience)."""
        if not self._secrets:
            return error
        error.message = self.text(error.message)
        error.args = (error.message,)
        if error.param is not None:
            error.param = self.text(error.param)
        error.extra = self.value(error.extra)
        error.headers = {k: self.text(v) for k, v in error.headers.items()}
        return error
