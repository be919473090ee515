"""``Range`` request headers per RFC 9110 §14: a pure parser, and its answer for ``/images``.

    parse_ranges(header, size) -> None          ignore the header: serve the whole image (200)
                               -> []            nothing satisfiable: 416, ``bytes */size``
                               -> [(start, end), ...]  half-open, sorted, merged: 206

A header that is not ``bytes=`` followed by a valid range set (wrong unit, garbage, a range whose
last position is before its first, too many ranges) is ignored, as §14.2 allows and §14.1 asks
for unknown units: never a 400 or 500. The answer to an unsatisfiable set is an error in
OpenAI's shape, not Starlette's plain-text 416.
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
from starlette.responses import FileResponse
from starlette.types import Receive, Scope, Send

from picgate.errors import PicGateError

# more ranges than this in one header is a scan, not a client resuming a download (§14.3 lets a
# server ignore "many small ranges"); Starlette's FileResponse has the same default cap
MAX_RANGES = 16
# a position longer than this is past any image PicGate stores; int() of thousands of digits
# is slow and, past 4300, a ValueError
MAX_DIGITS = 18
_SPEC = re.compile(r"^(\d*)-(\d*)$")

ByteRanges = list[tuple[int, int]]


class RangeNotSatisfiable(PicGateError):
    """416 with ``Content-Range: bytes */{size}`` (§15.5.17)."""

    status_code = 416
    error_type = "invalid_request_error"
    code = "range_not_satisfiable"

    def __init__(self, size: int) -> None:
        super().__init__(
            f"None of the requested byte ranges is inside the image ({size} bytes).",
            param="Range",
            headers={"Content-Range": f"bytes */{size}"},
        )


def _position(digits: str) -> int:
    return int(digits) if len(digits) <= MAX_DIGITS else 10**MAX_DIGITS


def parse_ranges(header: str, size: int) -> ByteRanges | None:
    """The satisfiable ranges of ``header`` for a representation of ``size`` bytes (see module)."""
    unit, sep, spec = header.partition("=")
    if not sep or unit.strip().lower() != "bytes":
        return None
    parts = [part.strip() for part in spec.split(",")]
    parts = [part for part in parts if part]  # the list rule (§5.6.1) allows empty elements
    if not parts or len(parts) > MAX_RANGES:
        return None
    ranges: ByteRanges = []
    for part in parts:
        match = _SPEC.match(part)
        if match is None:
            return None
        first, last = match.groups()
        if first:
            start = _position(first)
            if last and _position(last) < start:
                return None  # an invalid range-spec makes the whole header invalid
            if start < size:
                end = min(_position(last) + 1, size) if last else size
                ranges.append((start, end))
        elif last:
            suffix = _position(last)
            if suffix > 0 and size > 0:
                ranges.append((max(size - suffix, 0), size))
        else:
            return None  # a lone "-"
    return _merged(ranges)


def _merged(ranges: ByteRanges) -> ByteRanges:
    merged: ByteRanges = []
    for start, end in sorted(ranges):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def check_ranges(header: str | None, if_range: str | None, etag: str, size: int) -> None:
    """Raise RangeNotSatisfiable when ``header`` applies (no If-Range, or one naming ``etag``)
    and asks only for bytes past the end."""
    if header is None or (if_range is not None and if_range.strip() != etag):
        return
    if parse_ranges(header, size) == []:
        raise RangeNotSatisfiable(size)


class RangedFileResponse(FileResponse):
    """FileResponse whose ``Range`` parsing is :func:`parse_ranges`.

    Starlette answers a malformed header with a plain-text 400 and an out-of-bounds one with a
    plain-text 416; here a header to ignore yields no ranges (Starlette then sends the whole
    file), and the 416 is raised before the response by :func:`check_ranges`.
    """

    @classmethod
    def _parse_range_header(cls, http_range: str, file_size: int) -> ByteRanges:
        return parse_ranges(http_range, file_size) or []


class OpenedFileResponse(RangedFileResponse):
    """A ranged file response sent from a file descriptor opened before the answer began.

    The size cap may delete the file at any moment; a file unlinked after it was opened still
    reads whole on POSIX systems, so the download is never cut short. The response owns ``fd``
    and closes it when it has been sent (or failed); every read (a multipart answer reads once
    per range) gets its own duplicate, so positions never interfere.
    """

    def __init__(self, fd: int, path: str | os.PathLike[str], **kwargs: Any) -> None:
        super().__init__(path, **kwargs)
        self.fd = fd

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") == "http":  # pathsend would reopen the path: not this file
            scope = {**scope, "extensions": {**scope.get("extensions", {})}}
            scope["extensions"].pop("http.response.pathsend", None)
        try:
            await super().__call__(scope, receive, send)
        finally:
            os.close(self.fd)

    @asynccontextmanager
    async def _open_file(self) -> AsyncIterator[anyio.AsyncFile[bytes]]:
        file = anyio.wrap_file(os.fdopen(os.dup(self.fd), "rb"))
        try:
            yield file
        finally:
            with anyio.CancelScope(shield=True):
                await file.aclose()
