"""Images lifted out of a long SSE ``data:`` line before it is decoded as text.

An upstream may send a whole image as one ``data:`` line of tens of megabytes. Turned into a
Python string, parsed as JSON and scanned for the image, that line is copied several times on
the event loop. ``ImageLifter.lift`` works on the raw bytes instead: every base64 run that
follows ``data:image/<type>;base64,`` is decoded once (strictly, straight from the parser's
buffer) and replaced in the line by a short token, so the rest of the pipeline (JSON, the
rewriter's scanner) handles a few hundred bytes. The rewriter hands a token it finds to the
store as the decoded image; a token still in the text it sends (the store refused the image,
or the run was not where images are looked for) is put back as the run's base64.

A run is lifted only when that cannot change what the rewriter sees:

- it needs no JSON unescaping except ``\\/`` (``/`` written escaped), and it ends where the
  scanner's run ends: at ``)``, at a space, at the string's closing quote, or at an escape
  other than ``\\/`` and ``\\u`` (which could spell a base64 character); a run ending at any
  other character fails the strict decode below and stays in the text (the slower path);
- it is strict, padded, canonical base64 (the decoder checks the characters; the last group is
  encoded again to check the padding bits), so the base64 put back is the very text that came;
- it is at least ``MIN_RUN`` characters and at most ``max_run`` (a longer one stays in the text,
  where the rewriter refuses it as too large).

A run that ends at the string's end may go on in the next chunk; the rewriter then joins the
token's base64 to what follows.
"""

from __future__ import annotations

import binascii
import re
import secrets
from dataclasses import dataclass

import pybase64

__all__ = ["LIFT_LINE", "MIN_RUN", "ImageLifter", "LiftedImage"]

LIFT_LINE = 64 * 1024
"""A ``data:`` line longer than this (bytes) has its images lifted."""

MIN_RUN = 1024
"""Shorter base64 runs stay in the text: lifting them saves nothing."""

_MARKER = b";base64,"
_HEAD_WINDOW = 80
# the end of "data:image/<type>" right before the marker; "/" may come JSON-escaped
_HEAD = re.compile(rb"data:image(?:/|\\/)[A-Za-z0-9.+-]{1,64}\Z")
_TOKEN_DIGITS = 6


@dataclass(frozen=True, slots=True)
class LiftedImage:
    """A base64 run taken out of a line: its decoded bytes and its length as base64 text."""

    data: bytes
    encoded_size: int

    def base64(self) -> str:
        """The run as it came (canonical base64, ``\\/`` unescaped)."""
        return pybase64.b64encode(self.data).decode("ascii")


class ImageLifter:
    """Lifts the image runs of long lines; one per stream (its tokens are unique to it)."""

    def __init__(self, *, max_run: int | None = None) -> None:
        self.max_run = max_run
        # letters and digits only: a token is a base64 run to the scanner, ending where the
        # lifted run ended; the fixed width keeps one token from being the prefix of another
        self._prefix = f"PicGate{secrets.token_hex(6)}n"
        self._count = 0

    @property
    def token_size(self) -> int:
        return len(self._prefix) + _TOKEN_DIGITS

    def lift(self, buf: bytearray, lo: int, hi: int) -> tuple[str, dict[str, LiftedImage]]:
        """``buf[lo:hi]`` (one line's value, JSON text) as a string with its image runs replaced
        by tokens, and the images by token. Invalid UTF-8 becomes U+FFFD as in a whole decode
        (the line is cut only at ASCII bytes)."""
        pieces: list[str] = []
        images: dict[str, LiftedImage] = {}
        pos = lo
        marker = buf.find(_MARKER, lo, hi)
        while marker >= 0:
            start = marker + len(_MARKER)
            end = start
            if _HEAD.search(buf, max(lo, marker - _HEAD_WINDOW), marker) is not None:
                end, image = self._run(buf, start, hi)
                if image is not None:
                    token = f"{self._prefix}{self._count:0{_TOKEN_DIGITS}d}"
                    self._count += 1
                    images[token] = image
                    pieces.append(buf[pos:start].decode("utf-8", "replace"))
                    pieces.append(token)
                    pos = end
            marker = buf.find(_MARKER, max(end, start), hi)
        pieces.append(buf[pos:hi].decode("utf-8", "replace"))
        return "".join(pieces), images

    def _run(self, buf: bytearray, start: int, hi: int) -> tuple[int, LiftedImage | None]:
        """(where the run from ``start`` ends, its image or None when it is not lifted)."""
        quote = buf.find(b'"', start, hi)
        end = hi if quote < 0 else quote
        for stop in (b")", b" "):  # a markdown image's end; text after a bare data URL
            found = buf.find(stop, start, end)
            if found >= 0:
                end = found
        escaped = False
        backslash = buf.find(b"\\", start, end)
        while backslash >= 0:
            follows = buf[backslash + 1] if backslash + 1 < hi else None
            if follows == 0x2F:  # "\/": a "/" of the run
                escaped = True
                backslash = buf.find(b"\\", backslash + 2, end)
                continue
            if follows == 0x75:  # "\u....": may spell a base64 character; leave it to JSON
                return end, None
            end = backslash
            break
        size = end - start
        if size < MIN_RUN or (self.max_run is not None and size > self.max_run):
            return end, None
        with memoryview(buf) as view, view[start:end] as run:
            text: bytes | memoryview = run.tobytes().replace(b"\\/", b"/") if escaped else run
            try:
                data = pybase64.b64decode(text, validate=True)
            except (binascii.Error, ValueError):
                return end, None
            last = len(data) % 3 or 3
            if pybase64.b64encode(data[-last:]) != bytes(text[-4:]):
                return end, None  # non-zero padding bits: the text put back would differ
            encoded_size = len(text)
            del text
        return end, LiftedImage(data, encoded_size)
