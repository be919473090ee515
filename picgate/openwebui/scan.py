"""Base64 images inside Open WebUI's stored JSON, found and replaced as text.

Open WebUI keeps a chat as JSON text (``chat.chat``, ``chat_message.content``/``output``/
``files``, ``shared_chat.chat``). The functions here work on that text as stored, never on a
parsed and re-dumped copy: every character outside an image's data URL stays exactly as it was,
whatever serializer wrote it. A base64 body holds only ``A-Za-z0-9+/=`` (or the URL-safe ``-_``),
none of which JSON escapes, so a data URL appears in the stored text verbatim.

Pure functions, no I/O.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

# below this a "data URL" is a placeholder or a fragment, not an image worth moving
MIN_BODY_CHARS = 16

_DATA_URL = re.compile(
    r"data:image/(?P<subtype>[A-Za-z0-9.+-]{1,32});base64,(?P<body>[A-Za-z0-9+/_-]+={0,2})",
    re.IGNORECASE,
)
# a JSON escape (\n, \r, \t, \u....) followed by more base64: the image was wrapped over lines
_WRAPPED = re.compile(r"\\(?:[nrt]|u[0-9a-fA-F]{4})[A-Za-z0-9+/]")
# a data URL right after one of these is a value already (markdown target, JSON string, HTML
# attribute): it becomes a plain URL. Anywhere else it sits in prose and becomes an image.
_VALUE_OPENERS = frozenset("(\"'=")


@dataclass(frozen=True)
class DataUrl:
    """One base64 image in a text: ``text[start:end]`` is the whole ``data:image/...`` URL."""

    start: int
    end: int
    subtype: str
    body: str
    in_prose: bool

    @property
    def key(self) -> str:
        """Names the body without holding it twice (bodies are megabytes)."""
        return body_key(self.body)


def body_key(body: str) -> str:
    return hashlib.sha1(body.encode("ascii"), usedforsecurity=False).hexdigest()


def find_data_urls(text: str) -> Iterator[DataUrl]:
    """Every base64 image data URL in ``text`` that can be moved whole.

    Left out: bodies shorter than MIN_BODY_CHARS, and bodies wrapped over several lines (the
    match would be a prefix of the image; moving it would lose the rest).
    """
    if "base64," not in text:
        return
    for match in _DATA_URL.finditer(text):
        body = match.group("body")
        if len(body) < MIN_BODY_CHARS or _WRAPPED.match(text, match.end()):
            continue
        before = text[match.start() - 1] if match.start() else ""
        yield DataUrl(
            start=match.start(),
            end=match.end(),
            subtype=match.group("subtype").lower(),
            body=body,
            in_prose=before not in _VALUE_OPENERS,
        )


def has_data_url(text: str | None) -> bool:
    return bool(text) and next(find_data_urls(text or ""), None) is not None


def replace_data_urls(text: str, urls: Mapping[str, str]) -> tuple[str, int]:
    """``text`` with each data URL whose ``key`` is in ``urls`` replaced by that URL.

    A data URL in prose (not a markdown target, JSON string or attribute value) becomes a
    markdown image, so it is still shown as one. Returns the new text and how many were replaced;
    data URLs not in ``urls`` are left as they are.
    """
    parts: list[str] = []
    last = 0
    replaced = 0
    for found in find_data_urls(text):
        url = urls.get(found.key)
        if url is None:
            continue
        parts.append(text[last : found.start])
        parts.append(f"![image]({url})" if found.in_prose else url)
        last = found.end
        replaced += 1
    if not replaced:
        return text, 0
    parts.append(text[last:])
    return "".join(parts), replaced


def message_ids_by_key(chat_json: str) -> dict[str, str]:
    """For a ``chat.chat`` document: which message each image first appears in.

    Looks in ``history.messages`` (a map of id → message) and the legacy ``messages`` list.
    Images outside any message (a title, chat-level files) are not in the result.
    """
    try:
        document = json.loads(chat_json)
    except ValueError:
        return {}
    if not isinstance(document, dict):
        return {}
    found: dict[str, str] = {}
    history = document.get("history")
    messages: list[Any] = []
    if isinstance(history, dict) and isinstance(history.get("messages"), dict):
        messages.extend(history["messages"].values())
    if isinstance(document.get("messages"), list):
        messages.extend(document["messages"])
    for message in messages:
        if not isinstance(message, dict) or not isinstance(message.get("id"), str):
            continue
        for text in _strings(message):
            for image in find_data_urls(text):
                found.setdefault(image.key, message["id"])
    return found


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def rewritten_size(text: str, url_length: Callable[[DataUrl], int]) -> int:
    """UTF-8 size ``text`` would have with every data URL replaced (for a dry run's report)."""
    size = len(text.encode("utf-8"))
    for found in find_data_urls(text):
        # the data URL is ASCII: one byte per character
        new = url_length(found) + (len("![image]()") if found.in_prose else 0)
        size += new - (found.end - found.start)
    return size
