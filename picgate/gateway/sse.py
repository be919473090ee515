"""Incremental Server-Sent Events parser and writers (pure: bytes in, events out).

``SSEParser`` follows the WHATWG "event stream interpretation" rules, fed with whatever chunks
the network delivers:

- lines end with LF, CRLF or CR; a CR that ends one chunk and an LF that starts the next are one
  line break;
- a line may be any length (upstreams put a multi-megabyte data URL on one ``data:`` line). Work
  is linear in the stream's size: bytes already searched for a line end are never searched again;
- UTF-8 split across chunks is fine: lines are cut on bytes (CR and LF never occur inside a UTF-8
  sequence) and each whole line is decoded once (invalid bytes become U+FFFD);
- ``field: value`` with an optional single space after the colon; ``data`` lines of one event are
  joined with ``"\\n"``; a leading byte-order mark is dropped; unknown fields are ignored;
- ``:`` comment lines are kept (one leading space dropped) so the gateway can forward keep-alives
  such as ``: OPENROUTER PROCESSING``.

A blank line ends a block. A block yields an ``SSEEvent`` when it held a comment or a known field
(``data``, ``event``, ``id``, ``retry``); ``data`` is None when the block had no ``data`` line, so a
comment-only block comes out as ``SSEEvent(data=None, comments=[...])``. ``id`` is the block's own
value (the "last event id" is not carried over: the gateway does not reconnect). ``close()``
flushes the last block even when the stream ended without a blank line.

``max_event`` bounds memory: an unfinished line, or the ``data`` of one event, longer than that
many bytes raises ``EventTooLarge`` (a stream that never sends a newline cannot grow the buffer
without end).

With a ``lifter``, a ``data`` line longer than ``LIFT_LINE`` bytes is not decoded whole: its
images are lifted out of the raw bytes (``picgate.gateway.lifted``) and the event carries them
in ``lifted``, its ``data`` holding their tokens. An image whose base64 is still arriving when
its unfinished line passes ``LIFT_LINE`` is decoded as it comes (``StreamedRun``): the buffer
holds a few bytes of it, not the line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from picgate.gateway.lifted import LIFT_LINE, ImageLifter, LiftedImage, StreamedRun, find_run

__all__ = ["EventTooLarge", "SSEEvent", "SSEParser", "encode_comment", "encode_event"]

_LINE_END = re.compile(rb"[\r\n]")
_TEXT_LINE_END = re.compile(r"\r\n|\r|\n")
_BOM = b"\xef\xbb\xbf"
_CR = 0x0D
_LF = 0x0A


class EventTooLarge(ValueError):
    """A line or an event passed the parser's ``max_event``."""


@dataclass(slots=True)
class SSEEvent:
    """One dispatched block of an event stream."""

    data: str | None = None
    event: str | None = None
    id: str | None = None
    comments: list[str] = field(default_factory=list)
    retry: int | None = None
    lifted: dict[str, LiftedImage] = field(default_factory=dict)
    """Images lifted out of ``data``, by the token that stands for each there."""

    @property
    def is_done(self) -> bool:
        """True for OpenAI's end-of-stream sentinel ``data: [DONE]``."""
        return self.data is not None and self.data.strip() == "[DONE]"


class SSEParser:
    """Turns the bytes of an event stream, in chunks of any size, into ``SSEEvent``s."""

    def __init__(self, *, max_event: int | None = None, lifter: ImageLifter | None = None) -> None:
        self.max_event = max_event
        self._lifter = lifter
        self._lifted: dict[str, LiftedImage] = {}
        self._size = 0  # characters of the current event's data lines
        self._buf = bytearray()
        self._searched = 0  # bytes of _buf known to hold no line end
        self._skip_lf = False  # the last line ended with a CR that ended its chunk
        self._bom_checked = False
        self._data: list[str] = []
        self._event: str | None = None
        self._id: str | None = None
        self._retry: int | None = None
        self._comments: list[str] = []
        self._seen = False
        # an unfinished data line whose images are decoded as they arrive (see _stream)
        self._run: StreamedRun | None = None  # the image arriving now
        self._head: list[str] | None = None  # the line's value before the buffer, tokens in it
        self._head_lifted: dict[str, LiftedImage] = {}
        self._consumed = 0  # bytes of the line taken out of the buffer
        self._scan = 0  # bytes of the buffer already looked at for an image's start
        self._whole = False  # a run failed: the rest of the line takes the whole-line path

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """Parse one chunk; return the events it completed, in order."""
        if self._skip_lf and chunk:
            self._skip_lf = False
            if chunk[0] == _LF:
                chunk = chunk[1:]
        if not chunk:
            return []
        buf = self._buf
        buf += chunk
        if not self._bom_checked:
            if len(buf) < len(_BOM) and _BOM.startswith(buf):
                return []  # may still be the start of a byte-order mark
            if buf.startswith(_BOM):
                del buf[: len(_BOM)]
            self._bom_checked = True
        events: list[SSEEvent] = []
        if self._run is not None:
            self._advance(self._run)
            if self._run is not None:  # the buffer holds no more than a partial group of it
                self._check(self._consumed + len(buf))
                return events
        if b"\r" in chunk or not self._feed_lf_lines(events):
            self._feed_lines(events)
        self._stream()
        return events

    def _feed_lines(self, events: list[SSEEvent]) -> None:
        """The general path: any line ends, each line found and decoded on its own."""
        buf = self._buf
        start = 0
        end_of_buf = len(buf)
        match = _LINE_END.search(buf, self._searched)
        while match is not None:
            end = match.start()
            self._complete(start, end, events)
            start = end + 1
            if buf[end] == _CR:
                if start == end_of_buf:
                    self._skip_lf = True  # the LF of a CRLF may open the next chunk
                elif buf[start] == _LF:
                    start += 1
            match = _LINE_END.search(buf, start)
        # what is left is one unfinished line, all of it already searched
        if start:
            del buf[:start]
            self._scan = 0
        self._searched = len(buf)
        self._check(self._consumed + len(buf))

    def _check(self, size: int) -> None:
        if self.max_event is not None and size > self.max_event:
            self._buf.clear()  # the memory goes now, not when the caller drops the parser
            self._data = []
            self._lifted = {}
            self._run = self._head = None
            self._head_lifted = {}
            self._consumed = 0
            raise EventTooLarge(f"an event stream line or event over {self.max_event} bytes")

    def _feed_lf_lines(self, events: list[SSEEvent]) -> bool:
        """Fast path for a buffer whose line ends are all LF: decode every complete line at once.

        Valid UTF-8 cut at LFs decodes line by line exactly as it does whole, so one strict
        decode and one ``split`` replace a search, a slice and a decode per line. False (nothing
        consumed) when the complete lines are not valid UTF-8: the line-by-line path then puts
        U+FFFD where each line needs it.
        """
        buf = self._buf
        last = buf.rfind(b"\n", self._searched)
        if last < 0:
            self._searched = len(buf)
            self._check(self._consumed + len(buf))
            return True
        if self._lifter is not None and (last > LIFT_LINE or self._head is not None):
            self._lift_lines(last, events)
            return True
        try:
            text = buf[:last].decode("utf-8")
        except UnicodeDecodeError:
            return False
        del buf[: last + 1]
        self._scan = 0
        self._searched = len(buf)
        self._check(len(buf))
        for line in text.split("\n"):
            if line.startswith("data:"):
                value = line[6:] if line.startswith(" ", 5) else line[5:]
                self._data.append(value)
                self._size += len(value)
                self._check(self._size)
                self._seen = True
            elif line:
                self._line(line, events)
            elif self._seen:  # otherwise the block is already empty: nothing to dispatch
                self._dispatch(events)
        return True

    def _lift_lines(self, last: int, events: list[SSEEvent]) -> None:
        """The complete LF-ended lines of a buffer that may hold a long one, line by line."""
        buf = self._buf
        pos = 0
        while pos <= last:
            end = buf.find(b"\n", pos, last + 1)
            self._complete(pos, end, events)
            pos = end + 1
        # a new buffer for the unfinished line: the long one's memory goes now
        self._buf = bytearray(buf[last + 1 :])
        self._scan = 0
        self._searched = len(self._buf)
        self._check(len(self._buf))

    def _stream(self) -> None:
        """Decode the images of an unfinished data line as they arrive, once it is past
        ``LIFT_LINE``: a run reaching the end of the buffer becomes the parser's ``StreamedRun``
        and the line's bytes before it leave the buffer (into ``_head``)."""
        lifter = self._lifter
        while lifter is not None and self._run is None and not self._whole:
            buf = self._buf
            lo = 0
            if self._head is None:
                if len(buf) <= LIFT_LINE or not buf.startswith(b"data:"):
                    return
                lo = 6 if buf.startswith(b" ", 5) else 5
            start, self._scan = find_run(buf, lo, self._scan)
            if start < 0:
                return
            if self._head is None:
                self._head = []
            self._run = StreamedRun(bytes(buf[lo:start]), max_run=lifter.max_run)
            del buf[:start]
            self._consumed += start
            self._scan = self._searched = 0
            self._advance(self._run)

    def _advance(self, run: StreamedRun) -> None:
        """Feed the buffer to the image arriving now; when it ends, its token joins ``_head``;
        when it cannot be lifted, its text goes back into the buffer."""
        assert self._lifter is not None and self._head is not None
        size = len(self._buf)
        done = run.feed(self._buf)
        self._consumed += size - len(self._buf)
        if done is None:
            return
        self._run = None
        self._scan = self._searched = 0
        if done:
            value, lifted = self._lifter.lift(run.head, 0, len(run.head))
            token = self._lifter.token()
            self._head += (value, token)
            self._head_lifted.update(lifted)
            self._head_lifted[token] = run.image
        else:
            self._give_back(run)

    def _give_back(self, run: StreamedRun) -> None:
        """The run's text back into the buffer, for the whole-line path to take."""
        text = run.restore()
        self._buf[:0] = text
        self._consumed -= len(text)
        self._run = None
        self._whole = True

    def _complete(self, pos: int, end: int, events: list[SSEEvent]) -> None:
        """The line ``_buf[pos:end]``: a long ``data`` line (or the rest of one whose images
        were decoded as they came) has its images lifted instead of being decoded whole."""
        buf, lifter = self._buf, self._lifter
        if lifter is None or (
            self._head is None and not (end - pos > LIFT_LINE and buf.startswith(b"data:", pos))
        ):
            self._line(buf[pos:end].decode("utf-8", "replace"), events)
            return
        self._check(self._consumed + end - pos)
        if self._head is None:
            pos += 6 if buf.startswith(b" ", pos + 5) else 5
        value, lifted = lifter.lift(buf, pos, end)
        if self._head is not None:
            value = "".join(self._head) + value
            self._lifted.update(self._head_lifted)
            self._head = None
            self._head_lifted = {}
            self._consumed = 0
            self._whole = False
        self._lifted.update(lifted)
        self._data.append(value)
        self._size += len(value)
        self._check(self._size)
        self._seen = True

    def close(self) -> list[SSEEvent]:
        """End of stream: return the last event even without its closing blank line."""
        events: list[SSEEvent] = []
        if self._run is not None:  # the stream ended inside an image
            self._give_back(self._run)
        if self._buf or self._head is not None:
            self._complete(0, len(self._buf), events)
            self._buf.clear()
        self._searched = 0
        self._skip_lf = False
        self._dispatch(events)
        return events

    def _line(self, line: str, events: list[SSEEvent]) -> None:
        if not line:
            self._dispatch(events)
            return
        if line[0] == ":":
            self._comments.append(line[1:].removeprefix(" "))
            self._seen = True
            return
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
            self._size += len(value)
            self._check(self._size)
        elif name == "event":
            self._event = value
        elif name == "id":
            if "\0" in value:
                return
            self._id = value
        elif name == "retry":
            if not (value.isascii() and value.isdigit()):
                return
            self._retry = int(value)
        else:
            return
        self._seen = True

    def _dispatch(self, events: list[SSEEvent]) -> None:
        if self._seen:
            events.append(
                SSEEvent(
                    data="\n".join(self._data) if self._data else None,
                    event=self._event,
                    id=self._id,
                    comments=self._comments,
                    retry=self._retry,
                    lifted=self._lifted,
                )
            )
            self._lifted = {}
        self._data = []
        self._size = 0
        self._event = None
        self._id = None
        self._retry = None
        self._comments = []
        self._seen = False


def encode_event(data: str) -> bytes:
    """One SSE event carrying ``data`` (one ``data:`` line per line of it), blank line included.

    Line breaks inside ``data`` (LF, CRLF or CR) come back as LF when parsed. A lone surrogate
    (``json.loads`` makes one from a stray ``"\\ud800"``) is sent as ``?`` instead of raising.
    """
    lines = _TEXT_LINE_END.split(data)
    return ("".join(f"data: {line}\n" for line in lines) + "\n").encode(errors="replace")


def encode_comment(text: str) -> bytes:
    """An SSE comment block (``: text``), e.g. a keep-alive; clients ignore it."""
    lines = _TEXT_LINE_END.split(text)
    return ("".join(f": {line}\n" for line in lines) + "\n").encode(errors="replace")
