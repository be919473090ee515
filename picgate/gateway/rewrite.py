"""Replace the images in chat completion responses by markdown links to the gateway's copies.

Pure over dicts and strings; storing is the caller's ``ImageSink``: it gets one image as a data
URL (or bare base64) and returns the public URL, or None when the image could not be stored (not
a raster image, storage down). Then the original text stays where it was: an image is never dropped.

Where images are found, in ``choices[].message`` (``rewrite_completion``) and ``choices[].delta``
(``StreamRewriter``):

- markdown ``![alt](data:image/<type>;base64,...)`` and bare ``data:image/<type>;base64,...`` in the
  text of ``content``, ``reasoning_content`` and ``reasoning`` (when a string). They are replaced
  in place, in the field where they were found, by ``![alt](URL)`` (alt ``image`` when there was
  none); the text around them is byte-identical. A data URL ends at the first character that is
  not base64; a markdown image ends at ``)`` right after the base64 (otherwise the data URL is
  replaced on its own, and the ``![alt](`` before it stays as text).
- ``images[]`` items (``{"type":"image_url","image_url":{"url":...}}``, ``image_url`` as a plain
  string, ``url``, ``b64_json``, or a bare string) and a single ``image`` object: each becomes
  ``![image](URL)`` appended to ``content`` after its text (``"\\n\\n"`` between them when there is
  text before), and the ``images``/``image`` fields are removed. An image that could not be stored
  is appended with its original data URL; an http URL is appended as it is (OpenWebUI cannot show
  ``images[]``); an item of an unknown shape stays in ``images``.
- ``content`` as an array of parts: ``text`` parts are rewritten in place, image parts become
  markdown. When anything changed and every part is then text, the parts are joined into one
  string (what OpenAI's shape and chat clients expect); ``"\\n\\n"`` separates an image from text
  beside it. Otherwise the array is kept, with image parts turned into text parts.

Everything else (tool calls, usage, finish reasons, ids, logprobs, provider extras) passes through
unchanged and in key order; a body without images comes out equal to the input.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from picgate.errors import UpstreamError
from picgate.gateway.lifted import LiftedImage

__all__ = ["DecodedSink", "ImageSink", "StreamRewriter", "rewrite_completion", "rewrite_text"]

ImageSink = Callable[[str], Awaitable[str | None]]
"""Stores one image given as a data URL or as bare base64; its URL, or None to keep the text."""

DecodedSink = Callable[[bytes], Awaitable[str | None]]
"""``ImageSink`` for an image already decoded (one lifted out of a long SSE line)."""

_DATA = "data:image/"
_BASE64_TAG = ";base64,"
_ALT_MAX = 200
_SUBTYPE_MAX = 64
_START = re.compile(r"!\[|data:image/")
_ALT = re.compile(rf"[^\[\]\n]{{0,{_ALT_MAX + 1}}}")
_SUBTYPE = re.compile(rf"[A-Za-z0-9.+-]{{0,{_SUBTYPE_MAX + 1}}}")
_BASE64_RUN = re.compile(r"[A-Za-z0-9+/=_-]*")
_BARE_BASE64 = re.compile(r"[A-Za-z0-9+/=_\-\s]+")
_PARTIAL = -1  # the text ends inside something that may still become an image head
_FAIL = -2  # no image head starts here
_TEXT_FIELDS = ("reasoning_content", "reasoning", "content")
_IMAGE_PART_TYPES = ("image_url", "image", "output_image")
_SNIFF = (("iVBOR", "image/png"), ("/9j/", "image/jpeg"), ("R0lGOD", "image/gif"))
_META_KEYS = ("id", "object", "created", "model")


@dataclass(frozen=True, slots=True)
class _Found:
    """An image found in text: ``head`` (``![alt](data:...;base64,`` or ``data:...;base64,``),
    its ``base64`` and whether a ``)`` closed it. The text it replaces is built only when it
    stays (a failed store): megabytes are not copied for the common case."""

    alt: str | None
    head: str
    base64: str
    closed: bool

    @property
    def original(self) -> str:
        return self.head + self.base64 + (")" if self.closed else "")


_Segment = str | _Found


def _run_end(pattern: re.Pattern[str], s: str, i: int) -> int:
    m = pattern.match(s, i)
    return i if m is None else m.end()


def _literal(s: str, i: int, lit: str) -> int:
    part = s[i : i + len(lit)]
    if part == lit:
        return i + len(lit)
    if len(part) < len(lit) and lit.startswith(part):
        return _PARTIAL  # s ended inside lit
    return _FAIL


def _match_head(s: str, i: int) -> tuple[int, str | None]:
    """Match ``![alt](data:image/<type>;base64,`` or ``data:image/<type>;base64,`` at ``s[i]``,
    where ``_START`` found ``![`` or ``data:image/``.

    Returns (end of the head, alt or None for a bare data URL), or (_PARTIAL/_FAIL, None). Looks at
    most ~300 characters ahead, so a held candidate stays small.
    """
    alt = None
    if s.startswith("![", i):
        end = _run_end(_ALT, s, i + 2)
        if end - (i + 2) > _ALT_MAX:
            return _FAIL, None
        after = _literal(s, end, "](")
        if after < 0:
            return after, None
        alt = s[i + 2 : end]
        i = after
    i = _literal(s, i, _DATA)
    if i < 0:
        return i, None
    end = _run_end(_SUBTYPE, s, i)
    if end - i > _SUBTYPE_MAX:
        return _FAIL, None
    if end == len(s):
        return _PARTIAL, None
    if end == i:
        return _FAIL, None
    return _literal(s, end, _BASE64_TAG), alt


def _partial_start(s: str, pos: int) -> int:
    """Where the tail of ``s`` may be the start of an image (``!``, ``d``, ``data:i``...)."""
    for k in range(max(pos, len(s) - len(_DATA) + 1), len(s)):
        tail = s[k:]
        if tail == "!" or _DATA.startswith(tail):
            return k
    return len(s)


class _Scanner:
    """Finds images in one text field fed piece by piece; the result never depends on the pieces.

    Text is released as soon as it cannot be part of an image. Held back: a candidate head (at most
    ~300 characters, so re-examining it when more text comes stays linear), or, once a head has
    matched, the base64 run, kept as a list of pieces until a non-base64 character ends it.
    """

    def __init__(self, max_base64: int | None = None) -> None:
        self._held = ""  # a candidate head, or the matched head while base64 is collected
        self._alt: str | None = None
        self._collecting = False  # a head matched: _held is that head, base64 goes to _base64
        self._base64: list[str] = []
        self._base64_size = 0
        self._max = max_base64

    @property
    def holding(self) -> bool:
        return bool(self._held)

    def feed(self, text: str, *, final: bool = False) -> list[_Segment]:
        """Scan more text; ``final`` ends the field (what is held is decided and released)."""
        out: list[_Segment] = []
        pos = 0
        if self._collecting:
            pos = self._collect(text, 0, out, final)
            if self._collecting:
                return out
            s = text
        else:
            s = self._held + text
            self._held = ""
        self._scan(s, pos, out, final)
        return out

    def _scan(self, s: str, pos: int, out: list[_Segment], final: bool) -> None:
        emit_from = pos
        while True:
            m = _START.search(s, pos)
            if m is None:
                hold = len(s) if final else _partial_start(s, pos)
                if hold > emit_from:
                    out.append(s[emit_from:hold])
                self._held = s[hold:]
                return
            start = m.start()
            end, alt = _match_head(s, start)
            if end == _FAIL or (end == _PARTIAL and final):
                pos = start + 1
                continue
            if start > emit_from:
                out.append(s[emit_from:start])
            if end == _PARTIAL:
                self._held = s[start:]  # keep the tail: it may be the start of a data URL
                return
            self._held = s[start:end]
            self._alt = alt
            self._collecting = True
            pos = emit_from = self._collect(s, end, out, final)
            if self._collecting:
                return

    def _collect(self, s: str, i: int, out: list[_Segment], final: bool) -> int:
        end = _run_end(_BASE64_RUN, s, i)
        if end > i:
            self._base64.append(s[i:end])
            self._base64_size += end - i
            if self._max is not None and self._base64_size > self._max:
                self._base64, self._base64_size = [], 0
                raise image_too_large(self._max)
        if end == len(s) and not final:
            return end
        head, alt = self._held, self._alt
        data_at = 0 if alt is None else len(alt) + len("![](")
        base64 = "".join(self._base64)
        self._held, self._alt, self._base64, self._collecting = "", None, [], False
        self._base64_size = 0
        if not base64:
            out.append(head)  # "data:image/png;base64," alone is not an image
            return end
        if alt is not None:
            if s.startswith(")", end):
                out.append(_Found(alt, head, base64, closed=True))
                return end + 1
            out.append(head[:data_at])
        out.append(_Found(None, head[data_at:], base64, closed=False))
        return end


def image_too_large(max_base64: int) -> UpstreamError:
    """The stream's error for an image whose base64 passes ``max_base64`` characters (the
    upstream's fault: 502, as ``upstream_image_too_large`` in the Images API)."""
    return UpstreamError(
        f"the upstream sent an image larger than MAX_IMAGE_MB ({max_base64} base64 characters)",
        code="upstream_image_too_large",
    )


async def _resolve(segments: list[_Segment], sink: ImageSink) -> str:
    parts: list[str] = []
    for segment in segments:
        if isinstance(segment, str):
            parts.append(segment)
            continue
        # the base64 alone: the type comes from the bytes, and the decoder's one-pass strict
        # path takes it without a copy (a data URL would be sliced first)
        url = await sink(segment.base64)
        parts.append(segment.original if url is None else f"![{segment.alt or 'image'}]({url})")
    return "".join(parts)


async def rewrite_text(text: str, sink: ImageSink) -> str:
    """``text`` with every markdown or bare image data URL replaced in place by ``![alt](URL)``."""
    if _DATA not in text:
        return text
    return await _resolve(_Scanner().feed(text, final=True), sink)


def _image_ref(item: Any) -> str | None:
    """The data URL, base64 or URL of one ``images[]`` item / ``image`` object, if recognised."""
    if isinstance(item, str):
        return item
    if not isinstance(item, dict):
        return None
    image_url = item.get("image_url")
    if isinstance(image_url, str):
        return image_url
    if isinstance(image_url, dict) and isinstance(image_url.get("url"), str):
        return str(image_url["url"])
    for key in ("url", "b64_json"):
        if isinstance(item.get(key), str):
            return str(item[key])
    return None


async def _ref_markdown(ref: str, sink: ImageSink) -> str:
    url = ref
    if ref.startswith("data:") or _BARE_BASE64.fullmatch(ref):
        stored = await sink(ref)
        if stored is not None:
            url = stored
        elif not ref.startswith("data:"):
            mime = next((m for prefix, m in _SNIFF if ref.startswith(prefix)), "image/png")
            url = f"data:{mime};base64,{ref}"
    return f"![image]({url})"


@dataclass(slots=True)
class _Attached:
    """The images of ``images[]``/``image`` and what becomes of those fields."""

    refs: list[str] = field(default_factory=list)
    updates: dict[str, Any] = field(default_factory=dict)
    removed: set[str] = field(default_factory=set)


def _attached(d: dict[str, Any]) -> _Attached:
    found = _Attached()
    images = d.get("images")
    if isinstance(images, list) and images:
        left: list[Any] = []
        for item in images:
            ref = _image_ref(item)
            if ref is None:
                left.append(item)
            else:
                found.refs.append(ref)
        if not left:
            found.removed.add("images")
        elif len(left) < len(images):
            found.updates["images"] = left
    image = d.get("image")
    if image is not None:
        ref = _image_ref(image)
        if ref is not None:
            found.refs.append(ref)
            found.removed.add("image")
    return found


def _rebuild(d: dict[str, Any], updates: dict[str, Any], removed: set[str]) -> dict[str, Any]:
    """``d`` with ``updates`` applied in key order; new keys take the place of removed ones."""
    out: dict[str, Any] = {}
    pending = [key for key in updates if key not in d]
    for key, value in d.items():
        if key in removed:
            for new_key in pending:
                out[new_key] = updates[new_key]
            pending = []
            continue
        out[key] = updates.get(key, value)
    for new_key in pending:
        out[new_key] = updates[new_key]
    return out


async def _rewrite_parts(parts: list[Any], sink: ImageSink) -> str | list[Any]:
    out: list[Any] = []
    texts: list[tuple[str, bool]] | None = []  # (text, came from an image); None: cannot join
    changed = False
    for part in parts:
        kind = part.get("type") if isinstance(part, dict) else None
        text = part.get("text") if isinstance(part, dict) else None
        ref = _image_ref(part) if kind in _IMAGE_PART_TYPES else None
        if kind == "text" and isinstance(text, str):
            new_text = await rewrite_text(text, sink)
            changed = changed or new_text != text
            out.append(part if new_text == text else {**part, "text": new_text})
            if texts is not None:
                texts.append((new_text, False))
        elif ref is not None:
            changed = True
            markdown = await _ref_markdown(ref, sink)
            out.append({"type": "text", "text": markdown})
            if texts is not None:
                texts.append((markdown, True))
        else:
            out.append(part)
            texts = None
    if not changed:
        return parts
    if texts is None:
        return out
    joined = ""
    after_image = False
    for text, is_image in texts:
        if text and joined and (is_image or after_image):
            joined += "\n\n"
        joined += text
        after_image = is_image if text else after_image
    return joined


def _append(content: Any, markdown: str) -> Any:
    if isinstance(content, list):
        return [*content, {"type": "text", "text": markdown}]
    if isinstance(content, str) and content:
        return f"{content}\n\n{markdown}"
    return markdown


async def _rewrite_message(message: dict[str, Any], sink: ImageSink) -> dict[str, Any]:
    updates: dict[str, Any] = {}
    attached = _attached(message)
    for name in _TEXT_FIELDS:
        value = message.get(name)
        new_value: Any = value
        if isinstance(value, str):
            new_value = await rewrite_text(value, sink)
        elif name == "content" and isinstance(value, list):
            new_value = await _rewrite_parts(value, sink)
        if name == "content":
            for ref in attached.refs:
                new_value = _append(new_value, await _ref_markdown(ref, sink))
            updates.update(attached.updates)
        if new_value is not value and new_value != value:
            updates[name] = new_value
    if not updates and not attached.removed:
        return message
    return _rebuild(message, updates, attached.removed)


async def rewrite_completion(body: dict[str, Any], sink: ImageSink) -> dict[str, Any]:
    """A non-streaming chat completion with its images stored and linked (see the module doc).

    Returns ``body`` itself when there was nothing to change; never mutates it.
    """
    choices = body.get("choices")
    if not isinstance(choices, list):
        return body
    new_choices: list[Any] = []
    changed = False
    for choice in choices:
        message = choice.get("message") if isinstance(choice, dict) else None
        if isinstance(message, dict):
            new_message = await _rewrite_message(message, sink)
            if new_message is not message:
                new_choices.append({**choice, "message": new_message})
                changed = True
                continue
        new_choices.append(choice)
    return {**body, "choices": new_choices} if changed else body


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


@dataclass(slots=True)
class _ChoiceState:
    scanners: dict[str, _Scanner] = field(default_factory=dict)
    content_sent: bool = False  # the client has some content text: appended images need "\n\n"


class StreamRewriter:
    """Rewrites a chat completion stream, one SSE ``data`` payload at a time.

    Text goes out at once; only a tail that may start an image is held back, per choice index and
    per text field, and joins the next delta carrying that field, or a chunk made for it (copying
    id/object/created/model of the last chunk) sent before a chunk with a finish reason, before a
    chunk without choices (usage, error), before ``[DONE]``, and by ``finish()``. A data URL split
    over any number of chunks comes out as one markdown image in one delta, so the text the client
    sees, joined, is the upstream text as ``rewrite_text`` would rewrite it, for any chunking.
    Images in ``images[]``/``image`` end the held text of ``content`` first (they follow it).
    A chunk with nothing to change is returned as the very same string.

    Images lifted out of a payload (``feed``'s ``lifted``) are found by their tokens as any
    other image and stored decoded (``decoded``; without it, as base64 through ``sink``); a
    token in a payload to send is replaced by its base64 first, so the client never sees one.
    """

    def __init__(
        self,
        sink: ImageSink,
        *,
        max_image: int | None = None,
        decoded: DecodedSink | None = None,
    ) -> None:
        """``max_image``: the largest image in base64 characters; a longer one (however many
        chunks it comes in) raises UpstreamError ``upstream_image_too_large`` from ``feed``."""
        self._store = sink
        self._decoded = decoded
        self._max_image = max_image
        self._choices: dict[int, _ChoiceState] = {}
        self._meta: dict[str, Any] = {"object": "chat.completion.chunk"}
        self._lifted: dict[str, LiftedImage] = {}  # tokens not yet stored nor sent back
        self._token_size = 0

    @property
    def max_image(self) -> int | None:
        return self._max_image

    async def feed(self, data: str, lifted: dict[str, LiftedImage] | None = None) -> list[str]:
        """One SSE data payload (JSON text or ``[DONE]``) -> the payloads to send now, in order.

        ``lifted``: the images taken out of ``data``, by the token standing for each in it.
        """
        if lifted:
            self._lifted.update(lifted)
            self._token_size = len(next(iter(lifted)))
        out = await self._feed(data)
        return self._put_back(out) if self._lifted else out

    async def _sink(self, payload: str) -> str | None:
        """The sink, for text or for a payload naming a lifted image by its token."""
        if not self._lifted:
            return await self._store(payload)
        size = self._token_size
        token, rest = payload[:size], payload[size:]
        if payload.startswith("data:") and payload.endswith(_BASE64_TAG + payload[-size:]):
            token, rest = payload[-size:], ""
        image = self._lifted.get(token)
        if image is None:
            return await self._store(payload)
        if rest or self._decoded is None:
            # the run went on after the lifted line (or no decoded store): the text it stands for
            text = image.base64() + rest
            if self._max_image is not None and len(text) > self._max_image:
                raise image_too_large(self._max_image)
            url = await self._store(text)
        else:
            url = await self._decoded(image.data)
        if url is not None:
            del self._lifted[token]
        return url

    def _put_back(self, payloads: list[str]) -> list[str]:
        """``payloads`` with the base64 of every lifted image whose token they hold."""
        out: list[str] = []
        for payload in payloads:
            for token in [t for t in self._lifted if t in payload]:
                payload = payload.replace(token, self._lifted.pop(token).base64())
            out.append(payload)
        return out

    async def _feed(self, data: str) -> list[str]:
        try:
            obj = json.loads(data)
        except ValueError:
            obj = None
        choices = obj.get("choices") if isinstance(obj, dict) else None
        if not isinstance(obj, dict) or not isinstance(choices, list) or not choices:
            return [*await self._finish(), data]
        self._meta = {key: obj[key] for key in _META_KEYS if key in obj}
        before: list[dict[str, Any]] = []
        new_choices: list[Any] = []
        changed = False
        for choice in choices:
            delta = choice.get("delta") if isinstance(choice, dict) else None
            if not isinstance(delta, dict):
                new_choices.append(choice)
                continue
            index = choice.get("index", 0)
            state = self._choices.setdefault(index if isinstance(index, int) else 0, _ChoiceState())
            finishing = choice.get("finish_reason") is not None
            new_delta, early = await self._rewrite_delta(state, delta, finishing)
            if early:
                before.append({"index": index, "delta": early, "finish_reason": None})
            changed = changed or new_delta is not delta
            new_choices.append(choice if new_delta is delta else {**choice, "delta": new_delta})
        out = [_dumps({**self._meta, "choices": before})] if before else []
        out.append(_dumps({**obj, "choices": new_choices}) if changed else data)
        return out

    async def finish(self) -> list[str]:
        """End of stream: payloads for anything still held back (nothing when nothing is)."""
        out = await self._finish()
        return self._put_back(out) if self._lifted else out

    async def _finish(self) -> list[str]:
        entries: list[dict[str, Any]] = []
        for index in sorted(self._choices):
            state = self._choices[index]
            delta: dict[str, Any] = {}
            for name in _TEXT_FIELDS:
                scanner = state.scanners.get(name)
                if scanner is not None and scanner.holding:
                    text = await _resolve(scanner.feed("", final=True), self._sink)
                    if text:
                        delta[name] = text
                        state.content_sent |= name == "content"
            if delta:
                entries.append({"index": index, "delta": delta, "finish_reason": None})
        return [_dumps({**self._meta, "choices": entries})] if entries else []

    async def _rewrite_delta(
        self, state: _ChoiceState, delta: dict[str, Any], finishing: bool
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """(the delta to send, ``delta`` itself when unchanged; fields to send just before it)."""
        attached = _attached(delta)
        updates: dict[str, Any] = dict(attached.updates)
        early: dict[str, Any] = {}
        for name in _TEXT_FIELDS:
            value = delta.get(name)
            scanner = state.scanners.get(name)
            if scanner is None:
                scanner = state.scanners[name] = _Scanner(self._max_image)
            if name == "content" and isinstance(value, list):
                held = await _resolve(scanner.feed("", final=True), self._sink)
                new_parts = await _rewrite_parts(value, self._sink)
                if held:
                    new_parts = (
                        held + new_parts
                        if isinstance(new_parts, str)
                        else [{"type": "text", "text": held}, *new_parts]
                    )
                if new_parts is not value:
                    updates[name] = new_parts
                state.content_sent = True
                continue
            final = finishing or (name == "content" and bool(attached.refs))
            text_in = value if isinstance(value, str) else ""
            text = await _resolve(scanner.feed(text_in, final=final), self._sink)
            if name == "content" and attached.refs:
                for ref in attached.refs:
                    separator = "\n\n" if text or state.content_sent else ""
                    text += separator + await _ref_markdown(ref, self._sink)
                updates[name] = text
            elif isinstance(value, str) and (value or not finishing):
                if text != value:
                    updates[name] = text
            elif text:
                early[name] = text  # sent in a chunk of its own, before the finish reason
            if name == "content" and text:
                state.content_sent = True
        if not updates and not attached.removed:
            return delta, early
        return _rebuild(delta, updates, attached.removed), early
