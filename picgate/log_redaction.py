"""Secrets kept out of Python's logs: messages, their arguments and tracebacks.

``EventLog`` scrubs the lines it writes itself, but other lines reach stdout (``docker logs``,
CloudWatch) through ``logging`` too: an unhandled error's traceback, whose frames and exception
text may quote a URL with a key, a library's warning, uvicorn's own lines. ``SecretFilter``
runs the message, each of its arguments, the traceback and the stack through the current
``Redactor``. Arguments keep their shape (a tuple stays a tuple, numbers stay numbers):
formatters such as uvicorn's access log unpack them.

``install(current)`` puts one filter on the loggers PicGate and its server write to and on
every handler of the root logger (a handler filter sees records propagated from any logger),
and returns what takes it off again; ``installed`` does so on exit, so apps built in one process (tests) do not pile filters up.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from picgate.redaction import Redactor

__all__ = ["LOGGERS", "SecretFilter", "install", "installed"]

LOGGERS = ("picgate", "uvicorn", "uvicorn.error", "uvicorn.access", "asyncio", "")
_FORMATTER = logging.Formatter()


class SecretFilter(logging.Filter):
    """Scrubs a record in place (it never drops one); ``current`` gives the redactor of the
    moment, so keys stored or rotated in the console are followed."""

    def __init__(self, current: Callable[[], Redactor]) -> None:
        super().__init__()
        self._current = current

    def filter(self, record: logging.LogRecord) -> bool:
        redactor = self._current()
        if not redactor:
            return True
        if isinstance(record.args, tuple):
            record.msg = redactor.text(str(record.msg))
            record.args = tuple(_scrubbed(redactor, a) for a in record.args)
        elif isinstance(record.args, Mapping):
            record.msg = redactor.text(str(record.msg))
            record.args = {k: _scrubbed(redactor, v) for k, v in record.args.items()}
        else:
            record.msg = redactor.text(str(record.msg))
        if record.exc_info and not record.exc_text:
            record.exc_text = _FORMATTER.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redactor.text(record.exc_text)
        if record.stack_info:
            record.stack_info = redactor.text(record.stack_info)
        return True


def _scrubbed(redactor: Redactor, value: Any) -> Any:
    """``value`` as it may be logged: text scrubbed, numbers as they are, any other object
    replaced by its scrubbed text only when its text carries a secret."""
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return redactor.text(value)
    for shown in (str(value), repr(value)):
        if redactor.text(shown) != shown:
            return redactor.text(shown)
    return value


def install(current: Callable[[], Redactor]) -> Callable[[], None]:
    """One ``SecretFilter`` on ``LOGGERS`` and the root logger's handlers; returns the function
    that takes it off again (Lambda keeps it for the container's life)."""
    secret_filter = SecretFilter(current)
    targets: list[logging.Logger | logging.Handler] = [logging.getLogger(n) for n in LOGGERS]
    targets += logging.getLogger().handlers
    for target in targets:
        target.addFilter(secret_filter)

    def uninstall() -> None:
        for target in targets:
            target.removeFilter(secret_filter)

    return uninstall


@contextmanager
def installed(current: Callable[[], Redactor]) -> Iterator[None]:
    """``install`` while inside."""
    uninstall = install(current)
    try:
        yield
    finally:
        uninstall()
