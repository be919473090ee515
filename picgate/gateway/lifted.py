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

``StreamedRun`` decodes a run while its line is still arriving, so a burst of one huge line never
sits whole in the parser's buffer: the parser keeps a few bytes of it, the run keeps the decoded
pieces (three quarters of the text's size), and the rules above decide the same way: a run that
fails one of them is handed back as the text that came (``restore``) and left to the whole-line
path.
"""

from __future__ import annotations

import binascii
import re
import secrets
from dataclasses import dataclass

import pybase64

__all__ = ["LIFT_LINE", "MIN_RUN", "ImageLifter", "LiftedImage", "StreamedRun", "find_run"]

LIFT_LINE = 64 * 1024
"""A ``data:`` line longer than this (bytes) has its images lifted."""

MIN_RUN = 1024
"""Shorter base64 runs stay in the text: lifting them saves nothing."""

_MARKER = b";base64,"
_HEAD_WINDOW = 80
# the end of "data:image/<type>" right before the marker; "/" may come JSON-escaped
_HEAD = re.compile(rb"data:image(?:/|\\/)[A-Za-z0-9.+-]{1,64}\Z")
_TOKEN_DIGITS = 6
# the bytes that end a run well (a backslash only when not "\\/"); base64 holds none of them
_RUN_ENDS = (b'"', b")", b" ", b"\n", b"\r", b"\\")
_BACKSLASH = 0x5C
_SLASH = 0x2F
_U = 0x75


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

    def token(self) -> str:
        """A new token, unique to this stream."""
        token = f"{self._prefix}{self._count:0{_TOKEN_DIGITS}d}"
        self._count += 1
        return token

    def lift(self, buf: bytes | bytearray, lo: int, hi: int) -> tuple[str, dict[str, LiftedImage]]:
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
                    token = self.token()
                    images[token] = image
                    pieces.append(buf[pos:start].decode("utf-8", "replace"))
                    pieces.append(token)
                    pos = end
            marker = buf.find(_MARKER, max(end, start), hi)
        pieces.append(buf[pos:hi].decode("utf-8", "replace"))
        return "".join(pieces), images

    def _run(self, buf: bytes | bytearray, start: int, hi: int) -> tuple[int, LiftedImage | None]:
        """(where the run from ``start`` ends, its image or None when it is not lifted)."""
        end, escaped = _extent(buf, start, hi)
        if escaped is None:
            return end, None
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


def find_run(buf: bytes | bytearray, lo: int, scan: int) -> tuple[int, int]:
    """(where an image's base64 run starts that reaches the end of ``buf``, or -1; where the next
    search should start). ``buf[lo:]`` is a line's value; markers before ``scan`` were already
    looked at. A run that ends inside ``buf`` is skipped: the whole-line path takes it."""
    marker = buf.find(_MARKER, max(lo, scan))
    while marker >= 0:
        start = marker + len(_MARKER)
        if _HEAD.search(buf, max(lo, marker - _HEAD_WINDOW), marker) is not None:
            end, escaped = _extent(buf, start, len(buf))
            # the run reaches the end of the buffer, or a backslash there waits for its byte
            if escaped is not None and (
                end == len(buf) or (end == len(buf) - 1 and buf[end] == _BACKSLASH)
            ):
                return start, start
        else:
            end = start
        marker = buf.find(_MARKER, end)
    # a marker may be arriving across the end of the buffer
    return -1, max(scan, len(buf) - len(_MARKER) + 1)


def _extent(buf: bytes | bytearray, start: int, hi: int) -> tuple[int, bool | None]:
    """(where the run from ``start`` stops, whether it holds ``\\/``; None instead when an escape
    that may spell a base64 character, ``\\u....``, stops it: JSON must say, so it is not lifted).

    A run stops at the first byte that ends one (a markdown image's ``)``, the space after a bare
    data URL, the string's quote, a line end), at a backslash starting any other escape or with
    nothing after it before ``hi``, or at ``hi``."""
    end = hi
    for stop in _RUN_ENDS[:-1]:
        found = buf.find(stop, start, end)
        if found >= 0:
            end = found
    escaped = False
    backslash = buf.find(b"\\", start, end)
    while backslash >= 0:
        follows = buf[backslash + 1] if backslash + 1 < hi else None
        if follows == _SLASH:  # "\/": a "/" of the run
            escaped = True
            backslash = buf.find(b"\\", backslash + 2, end)
            continue
        if follows == _U:
            return end, None
        return backslash, escaped
    return end, escaped


class StreamedRun:
    """One image's base64 run, decoded while its line is still arriving.

    The parser hands ``feed`` its buffer, which starts with the rest of the run; ``feed`` decodes
    every whole group of four characters there and removes them. It says:

    - None: the run goes on past the buffer (what is left of it is a partial group, or a
      backslash waiting for the byte after it);
    - True: the run ended; the buffer starts at the byte after it and ``image`` is the image;
    - False: the run cannot be lifted (not strict canonical base64, too short, too long, an
      escape that may spell a character); ``restore()`` is the text it took out of the buffer,
      to put back in front of it.
    """

    def __init__(self, head: bytes, *, max_run: int | None) -> None:
        self.head = head
        """The line's bytes from where the parser last cut it up to the run's start."""
        self.size = 0  # base64 characters decoded (an escaped "\/" counts as one)
        self._max_run = max_run
        self._pieces: list[bytes] = []
        self._tail = b""  # the last four characters decoded: the padding check needs them
        self._image: LiftedImage | None = None

    @property
    def image(self) -> LiftedImage:
        assert self._image is not None
        return self._image

    def feed(self, buf: bytearray) -> bool | None:
        if self._take_plain(buf):
            return None
        end, escaped = _extent(buf, 0, len(buf))
        if escaped is None:
            return False
        # not ended: the run reaches the buffer's end, or a backslash there waits for its byte
        ended = end < len(buf) and not (buf[end] == _BACKSLASH and end + 1 == len(buf))
        text = bytes(buf[:end])
        if escaped:
            text = text.replace(b"\\/", b"/")
        whole = len(text) if ended else len(text) - len(text) % 4
        if ended and whole % 4:
            return False  # unpadded
        if whole and not self._take(text[:whole]):
            return False
        if not ended:
            buf[:end] = text[whole:]
            return None
        del buf[:end]
        data = b"".join(self._pieces)
        self._pieces = [data]
        last = len(data) % 3 or 3
        if self.size < MIN_RUN or pybase64.b64encode(data[-last:]) != self._tail:
            return False  # too short to pay; or non-zero padding bits (the text put back differs)
        self._pieces = []
        self._image = LiftedImage(data, self.size)
        return True

    def _take_plain(self, buf: bytearray) -> bool:
        """Fast path: the whole groups at the start of ``buf`` are plain base64 and a partial
        group at most follows them, with no byte that ends the run. True when taken."""
        whole = len(buf) - len(buf) % 4
        if not whole or any(stop in buf[whole:] for stop in _RUN_ENDS):
            return False
        with memoryview(buf) as view, view[:whole] as text:
            if not self._take(text):
                return False
        del buf[:whole]
        return True

    def _take(self, text: bytes | memoryview) -> bool:
        """Decode ``text`` (whole groups) onto the run; False when that breaks a rule."""
        if self._tail.endswith(b"="):
            return False  # padding came before more of the run
        if self._max_run is not None and self.size + len(text) > self._max_run:
            return False
        try:
            piece = pybase64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            return False
        self._pieces.append(piece)
        self.size += len(text)
        self._tail = bytes(text[-4:])
        return True

    def restore(self) -> bytes:
        """The text the run took out of the buffer so far, the head included, as it came
        (``\\/`` unescaped)."""
        data = b"".join(self._pieces)
        if not self._tail.endswith(b"="):
            return self.head + pybase64.b64encode(data)
        # a padded group may carry non-zero padding bits: its own characters go back
        padded = 1 if self._tail.endswith(b"==") else 2
        return self.head + pybase64.b64encode(data[:-padded]) + self._tail
