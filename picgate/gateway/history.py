"""The request side of chat completions: the body sent upstream, with history images inlined.

``upstream_body`` returns a new body; the client's body is never mutated. What changes:

- ``model`` becomes the upstream model (``UPSTREAM_MODEL_NAME``), or passes through when unset.
- Images of this gateway (``…/images/{id}`` or ``…/images/{id}.{ext}``) in the history become
  ``data:`` URLs of the stored bytes, so the upstream can see them (multi-turn editing): in the
  markdown ``![alt](URL)`` of assistant content (a string, or ``text`` parts), where the URL is
  replaced in place and the content stays a string; and in ``image_url`` parts of any message
  (OpenAI only allows them in user messages; other roles are treated the same).
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
  The bytes every reference adds to the upstream body count against ``budget``
  (``MAX_INLINE_IMAGES_MB``, see ``inline.py``); past it the request is a 413.

Everything else (other fields, other parts, ``data:`` URLs, tool calls) passes through as is.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from picgate.errors import BadRequest, PicGateError
from picgate.library.records import parse_image_name
from picgate.storage.codec import data_url, sniff

if TYPE_CHECKING:
    from picgate.gateway.inline import InlineBudget

__all__ = [
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

_MARKDOWN_IMAGE = re.compile(r"(!\[[^\]\n]{0,200}\]\()(https?://[^\s()<>]+)(\))")
_URL_SHOWN = 200


@dataclass
class HistoryImages:
    """How to turn image URLs of the history into data URLs (see the module doc)."""

    own_bases: Sequence[str]
    load_own: OwnImageLoader
    fetch: UrlFetcher | None = None
    budget: InlineBudget | None = None
    inlined: int = 0  # how many URLs were replaced (for the log)
    _own: dict[str, str | None] = field(default_factory=dict)  # by image id
    _external: dict[str, str] = field(default_factory=dict)  # by URL

    async def own(self, url: str) -> str | None:
        """The data URL of a gateway image at ``url``; None when it is not one of ours."""
        found = own_image_id(url, self.own_bases)
        if found is None:
            return None
        if found not in self._own:
            data = await self.load_own(found)
            self._own[found] = None if data is None else data_url(data, sniff(data).mime)
        return self._own[found]

    async def external(self, url: str, param: str) -> str:
        """The data URL of an external image (only called when ``fetch`` is set)."""
        assert self.fetch is not None
        if url in self._external:
            return self._external[url]
        shown = url if len(url) <= _URL_SHOWN else url[:_URL_SHOWN] + "..."
        try:
            data = await self.fetch(url)
            kind = sniff(data)
        except PicGateError as exc:
            raise BadRequest(
                f"Cannot use the image at {shown}: {exc.message}",
                param=param,
                code=exc.code or "invalid_image_url",
            ) from exc
        self._external[url] = data_url(data, kind.mime)
        return self._external[url]

    def use(self, inline: str, param: str) -> str:
        """``inline`` as one more reference in the upstream body, counted against the budget."""
        if self.budget is not None:
            self.budget.spend(len(inline), param=param)
        self.inlined += 1
        return inline


def own_image_id(url: str, own_bases: Sequence[str]) -> str | None:
    """The image id when ``url`` has the shape of a gateway image URL (``…/images/{id}[.ext]``).

    Under one of ``own_bases`` the rest must be exactly ``/images/<name>``; on another host the
    path must end with it. Query and fragment are ignored. Whether the id exists is for the
    caller to check.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme not in ("http", "https"):
        return None
    path = parts.path
    for base in own_bases:
        prefix = base.rstrip("/") + "/images/"
        if url.startswith(prefix):
            path = "/images/" + url[len(prefix) :].split("?", 1)[0].split("#", 1)[0]
            break
    _head, sep, name = path.rpartition("/images/")
    if not sep or "/" in name:
        return None
    parsed = parse_image_name(name)
    return parsed[0] if parsed else None


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


async def _markdown(text: str, images: HistoryImages, param: str) -> str:
    """``text`` with the URLs of gateway images in markdown images replaced by data URLs."""
    if "/images/" not in text:
        return text
    parts: list[str] = []
    last = 0
    for match in _MARKDOWN_IMAGE.finditer(text):
        inline = await images.own(match.group(2))
        if inline is None:
            continue
        parts.append(text[last : match.start(2)])
        parts.append(images.use(inline, param))
        last = match.end(2)
    if not parts:
        return text
    parts.append(text[last:])
    return "".join(parts)


async def _image_part(part: dict[str, Any], images: HistoryImages, param: str) -> dict[str, Any]:
    image_url = part.get("image_url")
    nested = isinstance(image_url, dict)
    url = image_url.get("url") if isinstance(image_url, dict) else image_url
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        return part
    param += ".image_url.url" if nested else ".image_url"
    inline = await images.own(url)
    if inline is None and images.fetch is not None:
        inline = await images.external(url, param)
    if inline is None:
        return part
    inline = images.use(inline, param)
    if isinstance(image_url, dict):
        return {**part, "image_url": {**image_url, "url": inline}}
    return {**part, "image_url": inline}


async def _message(message: Any, index: int, images: HistoryImages) -> Any:
    if not isinstance(message, dict):
        return message
    content = message.get("content")
    assistant = message.get("role") == "assistant"
    if isinstance(content, str):
        if not assistant:
            return message
        new_content: Any = await _markdown(content, images, f"messages[{index}].content")
    elif isinstance(content, list):
        new_parts: list[Any] = []
        for j, part in enumerate(content):
            kind = part.get("type") if isinstance(part, dict) else None
            if isinstance(part, dict) and kind == "image_url":
                part = await _image_part(part, images, f"messages[{index}].content[{j}]")
            elif isinstance(part, dict) and assistant and isinstance(part.get("text"), str):
                param = f"messages[{index}].content[{j}].text"
                text = await _markdown(part["text"], images, param)
                part = part if text == part["text"] else {**part, "text": text}
            new_parts.append(part)
        changed = any(a is not b for a, b in zip(new_parts, content, strict=True))
        new_content = new_parts if changed else content
    else:
        return message
    if new_content is content or new_content == content:
        return message
    return {**message, "content": new_content}


async def upstream_body(
    body: dict[str, Any], *, upstream_model: str | None, images: HistoryImages
) -> dict[str, Any]:
    """The body to send upstream (see the module doc); BadRequest for a bad ``messages``."""
    messages = messages_of(body)
    new_messages = [await _message(m, i, images) for i, m in enumerate(messages)]
    out = dict(body)
    if upstream_model:
        out["model"] = upstream_model
    out["messages"] = new_messages
    return out
