"""Where the images of a chat history stand, and the messages rebuilt once each is decided.

``collect`` walks the messages once and records every image reference PicGate may inline, as a
``Ref`` in history order, together with a template of each message that holds one:

- assistant text (string content, or ``text`` parts): markdown images ``![alt](URL)`` whose
  URL is ``http(s)`` (whether it is a gateway image is for the caller to say) or a ``data:``
  URL, and bare ``data:image/...;base64,...`` URLs. These are *moved*: the image leaves the text.
- assistant ``image_url`` parts (OpenAI does not allow them there): moved too.
- ``image_url`` parts with an ``http(s)`` URL in any other message: they stay where they are.

``rebuild`` puts the decided ``Outcome`` of every reference back:

- ``Keep``: the reference stays exactly as written (an unknown id, an external URL not fetched).
- ``Inline``: a part that stays gets the data URL in place of its URL. A moved image is sent
  once per distinct image as an ``image_url`` part of a user message, labelled ``[image N]``
  (numbered oldest first), and the assistant text keeps the label in place of the image.
- ``Omit``: a part that stays becomes a ``text`` part holding the note; a moved image's place in
  the text gets the note; nothing is sent for it.

The moved images go at the start of the last user message, oldest first, before that message's
own content: every vision API (OpenAI chat, OpenRouter, Gemini's OpenAI-compatible endpoint)
accepts ``image_url`` parts in user messages, and none promises to read them from assistant text
(an upstream that does not parse markdown sees megabytes of base64 as text). Merging, rather than
adding a user message, keeps user and assistant turns alternating, which some chat formats
require; and the newest image lands right before the instruction that edits it. When no user
message follows the moved images, they go into a new user message at the end.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from picgate.library.records import parse_image_name

__all__ = ["Inline", "Keep", "Omit", "Outcome", "Ref", "Walk", "collect", "own_image_id", "rebuild"]

# a markdown image with an http(s) or data URL, or a bare data URL
_IMAGE_IN_TEXT = re.compile(
    r"!\[[^\]\n]{0,200}\]\((?P<md>https?://[^\s()<>]+|data:image/[\w.+-]+;base64,[A-Za-z0-9+/=\s]+?)\)"
    r"|(?P<bare>data:image/[\w.+-]+;base64,[A-Za-z0-9+/]+=*)",
    re.IGNORECASE,
)

Piece = str | int  # text as written, or the index of a Ref


@dataclass(frozen=True)
class Ref:
    """One image reference: ``url`` as written (an http(s) or data URL)."""

    url: str
    param: str  # where it stands in the client's body, for errors
    message: int  # index of its message
    moved: bool  # found in an assistant message: sent as a user image part
    written: str = ""  # the text it stood in (the whole markdown image), for Keep


@dataclass(frozen=True)
class Keep:
    pass


@dataclass(frozen=True)
class Inline:
    data_url: str
    full: bool = False  # the image as stored, not a downscaled copy


@dataclass(frozen=True)
class Omit:
    note: str


Outcome = Keep | Inline | Omit


@dataclass
class _Text:
    pieces: list[Piece]


@dataclass
class _TextPart:
    part: dict[str, Any]
    pieces: list[Piece]


@dataclass
class _ImagePart:
    part: dict[str, Any]
    ref: int


@dataclass
class Walk:
    """The references of a history, and a template of every message that holds one."""

    refs: list[Ref] = field(default_factory=list)
    # by message index: the content as pieces (string content) or as a list of parts
    templates: dict[int, _Text | list[dict[str, Any] | _TextPart | _ImagePart]] = field(
        default_factory=dict
    )


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


def _text_pieces(walk: Walk, text: str, index: int, param: str) -> list[Piece] | None:
    if "![" not in text and "data:" not in text.lower():
        return None
    pieces: list[Piece] = []
    last = 0
    for match in _IMAGE_IN_TEXT.finditer(text):
        url = match.group("md") or match.group("bare")
        url = re.sub(r"\s+", "", url) if url.lower().startswith("data:") else url
        pieces.append(text[last : match.start()])
        pieces.append(len(walk.refs))
        walk.refs.append(Ref(url, param, index, moved=True, written=match.group(0)))
        last = match.end()
    if not pieces:
        return None
    pieces.append(text[last:])
    return pieces


def _image_url(part: dict[str, Any]) -> tuple[str | None, str]:
    image_url = part.get("image_url")
    if isinstance(image_url, dict):
        url = image_url.get("url")
        return (url if isinstance(url, str) else None), ".image_url.url"
    return (image_url if isinstance(image_url, str) else None), ".image_url"


def _parts(walk: Walk, content: list[Any], index: int, assistant: bool) -> bool:
    template: list[dict[str, Any] | _TextPart | _ImagePart] = []
    found = False
    for j, part in enumerate(content):
        param = f"messages[{index}].content[{j}]"
        if not isinstance(part, dict):
            template.append(part)
            continue
        if part.get("type") == "image_url":
            url, suffix = _image_url(part)
            schemes = ("http://", "https://", "data:") if assistant else ("http://", "https://")
            if url is not None and url.lower().startswith(schemes):
                template.append(_ImagePart(part, len(walk.refs)))
                walk.refs.append(Ref(url, param + suffix, index, moved=assistant))
                found = True
                continue
        elif assistant and isinstance(part.get("text"), str):
            pieces = _text_pieces(walk, part["text"], index, param + ".text")
            if pieces is not None:
                template.append(_TextPart(part, pieces))
                found = True
                continue
        template.append(part)
    if found:
        walk.templates[index] = template
    return found


def collect(messages: list[Any]) -> Walk:
    """Every image reference of ``messages`` in history order (see the module doc)."""
    walk = Walk()
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            continue
        content = message.get("content")
        assistant = message.get("role") == "assistant"
        if isinstance(content, str) and assistant:
            pieces = _text_pieces(walk, content, index, f"messages[{index}].content")
            if pieces is not None:
                walk.templates[index] = _Text(pieces)
        elif isinstance(content, list):
            _parts(walk, content, index, assistant)
    return walk


@dataclass
class _Labels:
    """The ``[image N]`` numbers of moved images, one per distinct data URL, oldest first."""

    numbers: dict[str, int] = field(default_factory=dict)
    sent: list[tuple[int, str]] = field(default_factory=list)

    def label(self, data_url: str) -> str:
        if data_url not in self.numbers:
            self.numbers[data_url] = len(self.numbers) + 1
            self.sent.append((self.numbers[data_url], data_url))
        return f"[image {self.numbers[data_url]}]"


def _text(pieces: list[Piece], walk: Walk, outcomes: list[Outcome], labels: _Labels) -> str:
    out: list[str] = []
    for piece in pieces:
        if isinstance(piece, str):
            out.append(piece)
            continue
        outcome = outcomes[piece]
        if isinstance(outcome, Inline):
            out.append(labels.label(outcome.data_url))
        elif isinstance(outcome, Omit):
            out.append(outcome.note)
        else:
            out.append(walk.refs[piece].written)
    return "".join(out)


def _image_part(item: _ImagePart, ref: Ref, outcome: Outcome, labels: _Labels) -> dict[str, Any]:
    if isinstance(outcome, Omit):
        return {"type": "text", "text": outcome.note}
    if not isinstance(outcome, Inline):
        return item.part
    if ref.moved:
        return {"type": "text", "text": labels.label(outcome.data_url)}
    image_url = item.part.get("image_url")
    if isinstance(image_url, dict):
        return {**item.part, "image_url": {**image_url, "url": outcome.data_url}}
    return {**item.part, "image_url": outcome.data_url}


def _content(
    template: _Text | list[dict[str, Any] | _TextPart | _ImagePart],
    walk: Walk,
    outcomes: list[Outcome],
    labels: _Labels,
) -> Any:
    if isinstance(template, _Text):
        return _text(template.pieces, walk, outcomes, labels)
    parts: list[Any] = []
    for item in template:
        if isinstance(item, _TextPart):
            parts.append({**item.part, "text": _text(item.pieces, walk, outcomes, labels)})
        elif isinstance(item, _ImagePart):
            parts.append(_image_part(item, walk.refs[item.ref], outcomes[item.ref], labels))
        else:
            parts.append(item)
    return parts


def _with_images(message: dict[str, Any], sent: list[tuple[int, str]]) -> dict[str, Any]:
    images: list[Any] = []
    for number, data_url in sent:
        images.append({"type": "text", "text": f"[image {number}]"})
        images.append({"type": "image_url", "image_url": {"url": data_url}})
    content = message.get("content")
    if isinstance(content, list):
        own = content
    elif isinstance(content, str) and content:
        own = [{"type": "text", "text": content}]
    else:
        own = []
    return {**message, "content": images + own}


def rebuild(messages: list[Any], walk: Walk, outcomes: list[Outcome]) -> list[Any]:
    """``messages`` with every reference's outcome applied (see the module doc); a new list."""
    labels = _Labels()
    out = list(messages)
    for index, template in walk.templates.items():
        content = _content(template, walk, outcomes, labels)
        if content != messages[index].get("content"):
            out[index] = {**messages[index], "content": content}
    if not labels.sent:
        return out
    last_moved = max(ref.message for ref in walk.refs if ref.moved)
    users = [i for i, m in enumerate(out) if isinstance(m, dict) and m.get("role") == "user"]
    if users and users[-1] > last_moved:
        out[users[-1]] = _with_images(out[users[-1]], labels.sent)
    else:
        out.append(_with_images({"role": "user", "content": ""}, labels.sent))
    return out
