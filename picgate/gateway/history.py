"""The request side of chat completions: the body sent upstream, with history images inlined.

``upstream_body`` returns a new body; the client's body is never mutated. What changes:

- ``model`` becomes the upstream model (``UPSTREAM_MODEL_NAME``), or passes through when unset.
- Images in assistant text (markdown images of this gateway's ``…/images/{id}[.ext]`` URLs,
  markdown and bare ``data:`` URLs) and assistant ``image_url`` parts leave the assistant
  message, which keeps a label (``[image 1]``), and are sent as ``image_url`` parts of the last
  user message, where every vision API accepts them (``references.py`` says where and why).
- Gateway images in ``image_url`` parts of other messages become ``data:`` URLs in place.
- Which URLs are "ours": a URL under one of ``own_bases`` (``PUBLIC_BASE_URL`` and the base URL
  of the request), and also a URL on any other host whose path ends in ``/images/<id>[.<ext>]``
  when that id exists in the store. Ids carry 128 random bits, so a foreign URL cannot match by
  accident, and the image is public anyway; this covers a gateway reached under several names
  (an internal Docker name, a changed ``PUBLIC_BASE_URL``) whose URLs the upstream cannot fetch.
  An own image that is unknown or expired is left as it was (the upstream sees the URL).
- Other ``http(s)`` URLs in ``image_url`` parts pass through unchanged, unless a ``fetch``
  function is given (``ALLOW_EXTERNAL_IMAGE_FETCH``): then they are fetched through the SSRF
  guard and inlined, and a refused or failed fetch is a 400 naming the URL and the problem.
  External URLs in assistant markdown are text and are never fetched.

- Each image is read (or fetched) and encoded once per request, however many URLs name it
  (other hosts, extensions, queries, fragments): every reference gets the same data URL string.
- The bytes PicGate places in the upstream body count against ``budget``
  (``MAX_INLINE_IMAGES_MB``): every reference in a user part, and each image moved out of
  assistant text once. Past it, older images are sent downscaled and the oldest left out with a
  note; only a newest image over the cap by itself is a 413 (``trim.py``).
- With a ``lookup``, the ids of every gateway-shaped URL in the messages are looked up in one
  query before anything is read (a request naming 20,000 made-up ids cost 20,000 lookups, 16
  s); only the first ``MAX_LOOKUPS`` distinct ids are looked up, the rest stay text. Unknown
  ids are never read.
- With a ``hold`` (the request's share of ``MAX_BUFFERED_MB``, ``buffers.py``), an image's
  bytes and its data URL are taken from the server-wide budget before it is read (a stored
  image's size is known from the lookup), a fetched or client-sent image's as it is decoded,
  and the copies placed in the upstream body once the trim has decided them.

Everything else (other fields, other parts, data URLs of user parts, tool calls) passes as is.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio.to_thread

from picgate.errors import BadRequest, PicGateError
from picgate.gateway.downscale import downscaled
from picgate.gateway.inline import InlineBudget
from picgate.gateway.references import Inline, Ref, collect, own_image_id, rebuild
from picgate.gateway.trim import Trim, decide
from picgate.gateway.upstream import base64_chars
from picgate.storage.codec import JPEG, data_url, decode_base64, sniff_async

if TYPE_CHECKING:
    from picgate.gateway.buffers import BufferHold

__all__ = [
    "MAX_LOOKUPS",
    "HistoryImages",
    "OwnImageLoader",
    "UrlFetcher",
    "last_user_text",
    "messages_of",
    "own_image_id",
    "upstream_body",
]

OwnImageLoader = Callable[[str], Awaitable[bytes | None]]
"""The bytes of a stored image by id; None when the id is unknown or the image expired."""

UrlFetcher = Callable[[str], Awaitable[bytes]]
"""The bytes at an external URL; raises a PicGateError when refused or failed."""

SizeLookup = Callable[[list[str]], Awaitable[dict[str, int]]]
"""The stored size of every given id that exists, in one query."""

# distinct image ids of one request looked up; URLs naming further ids stay as they are
MAX_LOOKUPS = 256
# ``data:image/xxxx;base64,`` in front of the base64 text
_DATA_URL_HEAD = 32

_URL_SHOWN = 200

Shrink = Callable[[bytes], Awaitable[bytes | None]]
"""A downscaled copy of an image (``downscale.downscaled``, run off the event loop)."""


async def _downscaled_off_loop(data: bytes) -> bytes | None:
    return await anyio.to_thread.run_sync(downscaled, data)


@dataclass
class HistoryImages:
    """How to turn the image references of a history into data URLs (see the module doc).

    The ``trim.Resolver`` of one request: it reads, fetches, decodes and downscales each image
    once and hands every reference to it the same string.
    """

    own_bases: Sequence[str]
    load_own: OwnImageLoader
    fetch: UrlFetcher | None = None
    budget: InlineBudget | None = None
    keep_full: int = 2  # INLINE_FULL_IMAGES
    shrink: Shrink = _downscaled_off_loop
    lookup: SizeLookup | None = None
    hold: BufferHold | None = None
    inlined: int = 0  # how many references were replaced (for the log)
    unlooked: int = 0  # distinct ids past MAX_LOOKUPS, left as text (for the log)
    known: dict[str, int] | None = None  # size by id, once looked up (None: no lookup)
    trim: Trim = field(default_factory=Trim)
    _taken: set[str] = field(default_factory=set)  # ids and URLs whose copy the hold covers
    _own: dict[str, str | None] = field(default_factory=dict)  # by image id
    _external: dict[str, str] = field(default_factory=dict)  # by URL
    _written: dict[str, str | None] = field(default_factory=dict)  # by the client's data URL
    _small: dict[str, str | None] = field(default_factory=dict)  # by key

    async def look_up(self, refs: Sequence[Ref]) -> None:
        """Look up every gateway image id ``refs`` name, in one query (see the module doc)."""
        if self.lookup is None:
            return
        found = (own_image_id(ref.url, self.own_bases) for ref in refs)
        ids = list(dict.fromkeys(image_id for image_id in found if image_id is not None))
        self.unlooked = max(0, len(ids) - MAX_LOOKUPS)
        self.known = await self.lookup(ids[:MAX_LOOKUPS]) if ids else {}

    async def _take(self, key: str, size: int) -> None:
        """Cover ``size`` bytes for ``key``'s copy in the hold, once per key: a copy freed by
        ``forget_full`` and read again takes no more than it did."""
        if self.hold is not None and key not in self._taken:
            await self.hold.take(size)
            self._taken.add(key)

    def key(self, ref: Ref) -> str | None:
        if ref.url.lower().startswith("data:"):
            return ref.url
        found = own_image_id(ref.url, self.own_bases)
        if found is not None:
            return "/images/" + found
        if not ref.moved and self.fetch is not None:
            return ref.url
        return None

    def external(self, ref: Ref) -> bool:
        return (
            not ref.url.lower().startswith("data:")
            and own_image_id(ref.url, self.own_bases) is None
        )

    async def full(self, ref: Ref) -> str | None:
        if ref.url.lower().startswith("data:"):
            return await self._data(ref.url)
        inline = await self.own(ref.url)
        if inline is None and not ref.moved and self.fetch is not None:
            inline = await self._fetched(ref.url, ref.param)
        return inline

    async def small(self, ref: Ref) -> str | None:
        key = self.key(ref)
        if key is None:
            return None
        if key not in self._small:
            full = await self.full(ref)
            if full is None:
                return None
            data = decode_base64(full)
            smaller = await self.shrink(data)
            if smaller is not None:
                await self._take("small:" + key, _inline_size(len(smaller)))
            self._small[key] = None if smaller is None else data_url(smaller, JPEG.mime)
        return self._small[key]

    def forget_full(self, ref: Ref) -> None:
        found = own_image_id(ref.url, self.own_bases)
        if found is not None and self._own.get(found) is not None:
            del self._own[found]
        self._external.pop(ref.url, None)
        self._written.pop(ref.url, None)

    async def own(self, url: str) -> str | None:
        """The data URL of a gateway image at ``url``; None when it is not one of ours."""
        found = own_image_id(url, self.own_bases)
        if found is None:
            return None
        if found not in self._own:
            if self.known is not None:
                if found not in self.known:
                    return None  # made up, or past MAX_LOOKUPS: never read
                await self._take(found, _inline_size(self.known[found]))
            data = await self.load_own(found)
            if data is None:
                self._own[found] = None
            else:
                self._own[found] = data_url(data, (await sniff_async(data)).mime)
        return self._own[found]

    async def _data(self, url: str) -> str | None:
        """A data URL of the client's, when it holds an image (else the text stays as it is)."""
        if url not in self._written:
            # decoded and encoded again: about 3/4 of its length in bytes, then its length again
            await self._take(url, len(url) * 7 // 4)
            try:
                data = decode_base64(url)
                self._written[url] = data_url(data, (await sniff_async(data)).mime)
            except PicGateError:
                self._written[url] = None
        return self._written[url]

    async def _fetched(self, url: str, param: str) -> str:
        """The data URL of an external image (only called when ``fetch`` is set)."""
        assert self.fetch is not None
        if url in self._external:
            return self._external[url]
        shown = url if len(url) <= _URL_SHOWN else url[:_URL_SHOWN] + "..."
        try:
            data = await self.fetch(url)
            kind = await sniff_async(data)
        except PicGateError as exc:
            raise BadRequest(
                f"Cannot use the image at {shown}: {exc.message}",
                param=param,
                code=exc.code or "invalid_image_url",
            ) from exc
        await self._take(url, _inline_size(len(data)))
        self._external[url] = data_url(data, kind.mime)
        return self._external[url]


def _inline_size(size: int) -> int:
    """The bytes an image of ``size`` bytes takes while inlined: itself and its data URL."""
    return size + _DATA_URL_HEAD + base64_chars(size)


def messages_of(body: dict[str, Any]) -> list[Any]:
    """``body["messages"]``; BadRequest when it is missing or not a list."""
    messages = body.get("messages")
    if messages is None:
        raise BadRequest(
            "Missing required parameter: 'messages'.",
            param="messages",
            code="missing_required_parameter",
        )
    if not isinstance(messages, list):
        raise BadRequest("'messages' must be an array.", param="messages", code="invalid_type")
    return messages


def last_user_text(messages: list[Any], limit: int = 1000) -> str | None:
    """The text of the last user message (its ``text`` parts joined), cut to ``limit``."""
    for message in reversed(messages):
        if not isinstance(message, dict) or message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, list):
            texts = [
                part["text"]
                for part in content
                if isinstance(part, dict) and isinstance(part.get("text"), str)
            ]
            content = "\n".join(texts)
        if isinstance(content, str) and content.strip():
            text = content.strip()
            return text if len(text) <= limit else text[:limit] + "..."
        return None
    return None


async def upstream_body(
    body: dict[str, Any], *, upstream_model: str | None, images: HistoryImages
) -> dict[str, Any]:
    """The body to send upstream (see the module doc); BadRequest for a bad ``messages``,
    PayloadTooLarge when the newest image alone is over the inline cap."""
    messages = messages_of(body)
    walk = collect(messages)
    await images.look_up(walk.refs)
    budget = images.budget or InlineBudget(limit=2**62)
    before = budget.used
    outcomes, images.trim = await decide(walk, images, budget=budget, keep_full=images.keep_full)
    if images.hold is not None:  # the copies the upstream body carries (each reference's)
        await images.hold.take(budget.used - before)
    images.inlined = sum(isinstance(outcome, Inline) for outcome in outcomes)
    out = dict(body)
    if upstream_model:
        out["model"] = upstream_model
    out["messages"] = rebuild(messages, walk, outcomes) if walk.refs else messages
    return out
