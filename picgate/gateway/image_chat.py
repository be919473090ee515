"""Image-only models in chat: a chat turn for a model with ``api: images`` becomes an Images API
call, and its answer a chat completion whose message is the markdown image.

- The prompt is the text of the last user message.
- The thread's newest image, if any, makes the call an edit of that image (multipart to the
  upstream's ``/images/edits``); with none, it is a generation. An image is an ``image_url``
  part (a data URL, this gateway's URL, or another URL when ``ALLOW_EXTERNAL_IMAGE_FETCH`` is on)
  or a markdown image in a message's text whose URL is a data URL or this gateway's (an earlier
  answer). Markdown naming another host is text, as in the rest of the chat path.
- Options (``size``, ``quality``, ``n``, ``background`` ...) come from the model's ``params:``
  only, never guessed from the text. ``response_format`` is PicGate's to choose: ``url``.
- The images are stored as every Images API image is (recording the request's ``who``); the answer links them
  (``![image]({PUBLIC_BASE_URL}/images/{id}.{ext})``). ``usage`` is passed on when the upstream
  gives it.
- Streaming: the route sends keep-alive comments while the upstream draws (the same
  ``PendingStream`` as a slow chat upstream), then one delta with the markdown, a chunk with
  ``finish_reason: stop``, and ``[DONE]``.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import pybase64

from picgate.attribution import Attribution
from picgate.errors import BadRequest
from picgate.gateway import images_api
from picgate.gateway.history import messages_of, own_image_id
from picgate.gateway.inline import EditImageLoader
from picgate.gateway.parts import GatewayParts
from picgate.gateway.relay import DONE
from picgate.gateway.spliced_json import SplicedJson
from picgate.routing.table import ModelRoute
from picgate.storage.codec import sniff, sniff_async

__all__ = ["ImageChatStream", "ImageTurn", "complete", "image_turn", "open_stream"]

_MARKDOWN_IMAGE = re.compile(
    r"!\[[^\]\n]{0,200}\]\((data:image/[A-Za-z0-9.+-]+;base64,[A-Za-z0-9+/=_-]+|https?://[^\s()<>]+)\)"
)
# PicGate chooses how the upstream answers (base64, stored, linked): not the model's params
_NOT_PARAMS = ("response_format", "prompt", "model", "stream", "image", "mask")


@dataclass(frozen=True)
class ImageTurn:
    """What a chat thread asks of an image model: the prompt and the newest image (a ref)."""

    prompt: str
    image: str | None
    param: str | None  # where the image came from, for errors


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            part["text"]
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


def _images_in(message: Any, index: int, own_bases: Sequence[str]) -> list[tuple[str, str]]:
    """The image refs of one message, in order, with the parameter each came from."""
    if not isinstance(message, dict):
        return []
    content = message.get("content")
    parts: list[Any] = content if isinstance(content, list) else [content]
    found: list[tuple[str, str]] = []
    for j, part in enumerate(parts):
        param = f"messages[{index}].content" + (f"[{j}]" if isinstance(content, list) else "")
        if isinstance(part, dict) and part.get("type") == "image_url":
            image_url = part.get("image_url")
            url = image_url.get("url") if isinstance(image_url, dict) else image_url
            if isinstance(url, str) and url:
                found.append((url, param + ".image_url"))
            continue
        text = part if isinstance(part, str) else _text_of([part])
        for match in _MARKDOWN_IMAGE.finditer(text):
            url = match.group(1)
            # markdown naming another host is text (a link the user pasted), not an input
            if url.startswith("data:") or own_image_id(url, own_bases) is not None:
                found.append((url, param))
    return found


def image_turn(body: dict[str, Any], own_bases: Sequence[str]) -> ImageTurn:
    """The prompt (last user text) and the thread's newest image; 400 without a prompt."""
    messages = messages_of(body)
    prompt = ""
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            prompt = _text_of(message.get("content")).strip()
            break
    if not prompt:
        raise BadRequest(
            "The last user message has no text: an image model needs a prompt.",
            param="messages",
            code="missing_prompt",
        )
    for index in range(len(messages) - 1, -1, -1):
        refs = _images_in(messages[index], index, own_bases)
        if refs:
            ref, param = refs[-1]
            return ImageTurn(prompt, ref, param)
    return ImageTurn(prompt, None, None)


def _options(route: ModelRoute) -> dict[str, Any]:
    return {k: v for k, v in route.params.items() if k not in _NOT_PARAMS}


async def _draw(
    parts: GatewayParts,
    route: ModelRoute,
    body: dict[str, Any],
    *,
    base_url: str,
    own_bases: Sequence[str],
    who: Attribution,
) -> dict[str, Any]:
    """The Images API reply for the chat turn in ``body`` (generation or edit)."""
    turn = image_turn(body, own_bases)
    settings = route.settings
    options = {**_options(route), "response_format": "url"}
    if turn.image is None:
        request = {**options, "prompt": turn.prompt, "model": route.name}
        return _plain(
            await images_api.generate(parts, settings, request, base_url=base_url, who=who)
        )
    async with parts.buffers.hold() as hold:
        load = EditImageLoader.build(
            library=parts.library,
            http=parts.http,
            settings=settings,
            base_url=base_url,
            hold=hold,
        )
        data = await load(turn.image, turn.param or "messages")
        kind = await sniff_async(data)
        fields = {k: images_api.form_value(v) for k, v in options.items()}
        fields.update(prompt=turn.prompt, model=route.name or "")
        reply = await images_api.edit(
            parts,
            settings,
            fields=fields,
            images=[(f"image.{kind.ext}", data, kind.mime)],
            mask=None,
            image_field="image",
            base_url=base_url,
            who=who,
            hold=hold,
        )
    return _plain(reply)


def _plain(reply: SplicedJson) -> dict[str, Any]:
    """The reply as plain JSON: its content when every image is linked (the usual case), else
    rendered whole, so an image that could not be stored carries its real base64."""
    data = reply.content.get("data", [])
    if all(isinstance(item.get("url"), str) for item in data):
        return reply.content
    parsed: dict[str, Any] = json.loads(b"".join(reply.render()))
    return parsed


def _markdown(reply: dict[str, Any]) -> str:
    links: list[str] = []
    for item in reply.get("data", []):
        if isinstance(item.get("url"), str):
            links.append(f"![image]({item['url']})")
        elif isinstance(item.get("b64_json"), str):  # not stored: the image travels inline
            mime = sniff(pybase64.b64decode(item["b64_json"])).mime
            links.append(f"![image](data:{mime};base64,{item['b64_json']})")
    return "\n\n".join(links)


class _Answer:
    """The pieces every shape of the answer shares."""

    def __init__(self, route: ModelRoute, reply: dict[str, Any]) -> None:
        self.id = "chatcmpl-" + secrets.token_hex(12)
        self.created = int(time.time())
        self.model = route.name
        self.content = _markdown(reply)
        self.usage = reply.get("usage") if isinstance(reply.get("usage"), dict) else None

    def completion(self) -> dict[str, Any]:
        answer: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": self.content},
                    "finish_reason": "stop",
                }
            ],
        }
        if self.usage is not None:
            answer["usage"] = self.usage
        return answer

    def chunk(self, delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }


async def complete(
    parts: GatewayParts,
    route: ModelRoute,
    body: dict[str, Any],
    *,
    base_url: str,
    own_bases: Sequence[str],
    who: Attribution,
) -> dict[str, Any]:
    """A non-streaming chat completion whose message is the drawn image."""
    reply = await _draw(parts, route, body, base_url=base_url, own_bases=own_bases, who=who)
    return _Answer(route, reply).completion()


class ImageChatStream:
    """The SSE events of a drawn image, ready to send (the drawing is done)."""

    def __init__(self, answer: _Answer) -> None:
        self._answer = answer

    async def events(self) -> AsyncIterator[bytes]:
        answer = self._answer
        first = answer.chunk({"role": "assistant", "content": answer.content}, None)
        last = answer.chunk({}, "stop")
        if answer.usage is not None:
            last["usage"] = answer.usage
        for event in (first, last):
            yield b"data: " + json.dumps(event, ensure_ascii=False).encode() + b"\n\n"
        yield DONE

    async def aclose(self) -> None:
        """Nothing is held open: the upstream call ended before this stream was made."""


async def open_stream(
    parts: GatewayParts,
    route: ModelRoute,
    body: dict[str, Any],
    *,
    base_url: str,
    own_bases: Sequence[str],
    who: Attribution,
) -> ImageChatStream:
    """Draw the image (the route sends keep-alives meanwhile), then the stream that tells it."""
    reply = await _draw(parts, route, body, base_url=base_url, own_bases=own_bases, who=who)
    return ImageChatStream(_Answer(route, reply))
