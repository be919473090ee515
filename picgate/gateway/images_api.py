"""Images API logic: generations and edits, whatever the upstream answers (b64_json or url).

Every image the upstream returns is stored. The reply honours the client's ``response_format``:
``url`` gives ``{public base}/images/{id}.{ext}``, ``b64_json`` gives the bytes (still stored and
listed); absent, ``b64_json`` for gpt-image model names (as OpenAI answers them), else ``url``. If an image cannot be stored, the client gets it inline as ``b64_json``
rather than lose it.

At most the requested ``n`` images (1 when absent, never more than 10) are kept from an answer:
an upstream that sends more (one sent 5000) has the rest dropped before they are decoded, with a
log line. The answer is held in memory while it is read: its bytes come from the server-wide
budget (``MAX_BUFFERED_MB``, ``picgate.gateway.buffers``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio.to_thread
import pybase64

from picgate.attribution import Attribution
from picgate.config import Settings
from picgate.errors import (
    BadRequest,
    PayloadTooLarge,
    PicGateError,
    StorageUnavailable,
    UpstreamError,
)
from picgate.gateway.buffers import BufferHold
from picgate.gateway.fetch import fetch_image_bytes
from picgate.gateway.image_answer import ImageAnswerReader, placeholders_in
from picgate.gateway.parts import GatewayParts
from picgate.gateway.spliced_json import SplicedJson
from picgate.gateway.upstream import MAX_IMAGES_N, not_json_answer
from picgate.library.records import ImageOrigin, StoredImage
from picgate.storage.codec import sniff_async
from picgate.storage.incoming import Received

RESPONSE_FORMATS = ("url", "b64_json")
ENCODE_OFF_LOOP_BYTES = 256 * 1024
PASSTHROUGH = ("created", "background", "output_format", "quality", "size", "usage")


@dataclass
class UpstreamImage:
    data: bytes
    revised_prompt: str | None
    extra: dict[str, Any]
    received: Received | None = None  # already written while the answer arrived

    @property
    def b64(self) -> bytes | None:
        """The upstream's base64 text of ``data`` when it can be handed back as it is."""
        return self.received.b64 if self.received is not None else None


def wants_response_format(model: str | None) -> bool:
    """``gpt-image-*`` models reject ``response_format`` (they always answer base64)."""
    return not (model or "").lower().startswith("gpt-image")


def short(prompt: str | None, limit: int = 50) -> str:
    prompt = (prompt or "").replace("\n", " ")
    return prompt if len(prompt) <= limit else prompt[:limit] + "..."


def client_response_format(body: dict[str, Any]) -> str:
    """The client's ``response_format``; absent, what OpenAI answers for the model the client
    named: ``b64_json`` for gpt-image models (Open WebUI then omits the field and reads
    ``b64_json``), ``url`` otherwise."""
    fmt = body.get("response_format")
    if fmt is None:
        model = body.get("model")
        return (
            "url"
            if wants_response_format(model if isinstance(model, str) else None)
            else "b64_json"
        )
    if fmt not in RESPONSE_FORMATS:
        raise BadRequest(
            "response_format must be 'url' or 'b64_json'",
            param="response_format",
            code="invalid_value",
        )
    return str(fmt)


def upstream_model(settings: Settings, client_model: Any) -> str | None:
    """The model to ask the upstream for: ``UPSTREAM_MODEL_NAME``, else the client's own.

    A client that sends the gateway's own name (``GATEWAY_MODEL_NAME``, what ``/v1/models``
    lists, so what a chat front end picks) while no upstream model is set gets a 400 saying so:
    forwarded, that name would only earn an "unknown model" from the upstream.
    """
    if settings.upstream_model_name:
        return settings.upstream_model_name
    if client_model == settings.gateway_model_name and settings.upstream_configured:
        raise BadRequest(
            f"The model {client_model!r} is this gateway's own name and no upstream model is "
            "set: set UPSTREAM_MODEL_NAME (environment or admin settings) to the upstream's "
            "model, or send the upstream's model name.",
            param="model",
            code="upstream_model_not_set",
        )
    return client_model if isinstance(client_model, str) else None


def requested_n(value: Any) -> int:
    """The images a client asked for (``n``, a number or a form field's text): 1 when absent,
    at most ``MAX_IMAGES_N``; what the answer may keep."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        return 1
    return min(int(value), MAX_IMAGES_N)


def keep_requested(parts: GatewayParts, answer: Any, keep: int) -> set[str]:
    """Cut ``answer["data"]`` to ``keep`` items (in place), logging what was dropped; the
    ``b64_json`` texts of the items kept."""
    items = answer.get("data") if isinstance(answer, dict) else None
    if not isinstance(items, list):
        return set()
    if len(items) > keep:
        parts.events.warning(f"⚠️ 上游返回 {len(items)} 张图片，超过请求的 n={keep}，其余已丢弃")
        del items[keep:]
    texts = (item.get("b64_json") for item in items if isinstance(item, dict))
    return {text for text in texts if isinstance(text, str)}


async def call_upstream(
    parts: GatewayParts,
    settings: Settings,
    path: str,
    *,
    hold: BufferHold,
    keep: int,
    keep_base64: bool = False,
    **request: Any,
) -> tuple[Any, list[UpstreamImage]]:
    """POST to the upstream's Images API; its answer and its first ``keep`` images, decoded or
    fetched.

    Large base64 images are decoded and written while the answer arrives (``image_answer``);
    when that cannot be used, the answer is parsed whole and handled as it always was. The
    answer's bytes are taken from ``hold`` as they arrive. ``keep_base64``: keep the
    upstream's canonical base64 text of those images (a ``b64_json`` reply sends it back
    instead of encoding the bytes again).
    """
    # long strings written while the answer arrives: the images kept, and as many again for
    # other long fields (an answer with thousands is parsed whole instead)
    reader = ImageAnswerReader(
        lambda: parts.library.incoming(keep_text=keep_base64),
        max_images=keep + MAX_IMAGES_N,
    )
    try:
        await parts.upstream.post(settings, path, reader.feed, hold=hold, **request)
        try:
            answer = reader.finish()  # already falls back to parsing the whole body
        except ValueError as exc:
            raise not_json_answer() from exc
        streamed = await _streamed_images(reader, answer)
    except BaseException:
        reader.discard()
        raise
    if streamed is None:
        answer = parts.upstream.parse_answer(reader.body)
        streamed = {}
    kept = keep_requested(parts, answer, keep)
    for key in [key for key in streamed if key not in kept]:
        streamed.pop(key).discard()  # written while the answer arrived, then dropped
    try:
        return answer, await collect_images(parts, settings, answer, streamed)
    except BaseException:
        for received in streamed.values():
            received.discard()
        raise


async def _streamed_images(reader: ImageAnswerReader, answer: Any) -> dict[str, Received] | None:
    """The images the reader wrote, by placeholder; None: parse the answer whole instead."""
    if not reader.usable or not reader.images:
        return {}
    items = answer.get("data") if isinstance(answer, dict) else None
    as_b64 = sorted(
        item["b64_json"]
        for item in (items if isinstance(items, list) else [])
        if isinstance(item, dict)
        and isinstance(item.get("b64_json"), str)
        and item["b64_json"] in reader.images
    )
    # each long string must be one image's b64_json and stand nowhere else
    if as_b64 != sorted(reader.images) or sorted(placeholders_in(answer, reader.images)) != as_b64:
        reader.discard()
        return None
    results = {key: await image.result() for key, image in reader.images.items()}
    if any(received is None for received in results.values()):
        for received in results.values():
            if received is not None:
                received.discard()
        return None
    return {key: received for key, received in results.items() if received is not None}


async def collect_images(
    parts: GatewayParts,
    settings: Settings,
    answer: Any,
    streamed: dict[str, Received] | None = None,
) -> list[UpstreamImage]:
    """Decode or fetch every image in an Images API answer; UpstreamError on junk.

    ``streamed``: images already decoded and written, by the placeholder in their ``b64_json``.
    """
    streamed = streamed or {}
    if not isinstance(answer, dict) or not isinstance(answer.get("data"), list):
        raise UpstreamError("the upstream answer has no 'data' list", code="bad_upstream_response")
    images: list[UpstreamImage] = []
    max_bytes = settings.max_image_mb * 2**20
    for item in answer["data"]:
        if not isinstance(item, dict):
            raise UpstreamError(
                "the upstream answer has a malformed image", code="bad_upstream_response"
            )
        extra = {k: v for k, v in item.items() if k not in ("b64_json", "url", "revised_prompt")}
        revised = item.get("revised_prompt")
        b64 = item.get("b64_json")
        received = streamed.get(b64) if isinstance(b64, str) else None
        if received is not None:
            data = received.data
        elif isinstance(b64, str) and b64:
            data = _decode_upstream(parts, settings, b64)
        elif isinstance(item.get("url"), str) and item["url"]:
            url = item["url"]
            if url.startswith("data:"):
                data = _decode_upstream(parts, settings, url)
            else:
                data = await _fetch_upstream_url(parts, settings, url, max_bytes)
        else:
            raise UpstreamError(
                "the upstream answer has an image without data", code="bad_upstream_response"
            )
        if len(data) > max_bytes:
            raise _too_large(settings)
        try:
            await sniff_async(data)
        except PicGateError as exc:
            raise UpstreamError(
                f"the upstream sent something that is not an image: {exc.message}",
                code="bad_upstream_response",
            ) from exc
        revised = revised if isinstance(revised, str) else None
        images.append(UpstreamImage(data, revised, extra, received))
    return images


async def _fetch_upstream_url(
    parts: GatewayParts, settings: Settings, url: str, max_bytes: int
) -> bytes:
    """The image at a URL the upstream answered with. A URL the guard refuses (a private or
    metadata address), one that is not an image or too large, is the upstream's bad answer,
    not the client's bad request: 502, never 4xx."""
    try:
        return await fetch_image_bytes(
            parts.http,
            url,
            max_bytes=max_bytes,
            timeout=min(settings.upstream_timeout_seconds, 120.0),
            trusted_origin=settings.upstream_api_base,
        )
    except PayloadTooLarge as exc:
        raise _too_large(settings) from exc
    except BadRequest as exc:  # BlockedAddress, invalid or unresolvable URL, not an image
        raise UpstreamError(
            f"the upstream answered with an image URL PicGate will not fetch: {exc.message}",
            code=exc.code or "bad_upstream_response",
        ) from exc


def _decode_upstream(parts: GatewayParts, settings: Settings, text: str) -> bytes:
    try:
        return parts.library.decode(text)
    except PayloadTooLarge as exc:
        raise _too_large(settings) from exc
    except BadRequest as exc:
        raise UpstreamError(
            f"the upstream sent an image that is not valid base64: {exc.message}",
            code="bad_upstream_response",
        ) from exc


def _b64(data: bytes) -> bytes:
    return pybase64.b64encode(data)


def _too_large(settings: Settings) -> UpstreamError:
    # the upstream's fault, not the client's: 502, not 413
    return UpstreamError(
        f"the upstream sent an image larger than MAX_IMAGE_MB ({settings.max_image_mb} MB)",
        code="upstream_image_too_large",
    )


async def store_and_reply(
    parts: GatewayParts,
    *,
    answer: dict[str, Any],
    images: list[UpstreamImage],
    response_format: str,
    base_url: str,
    origin: ImageOrigin,
) -> SplicedJson:
    """The client's answer; its base64 images spliced in as bytes (``spliced_json``)."""
    reply = SplicedJson({k: answer[k] for k in PASSTHROUGH if k in answer})
    data: list[dict[str, Any]] = []
    try:
        for image in images:
            data.append(
                await _store_one(
                    parts,
                    reply,
                    image,
                    response_format=response_format,
                    base_url=base_url,
                    origin=origin,
                )
            )
    finally:  # an image not stored (error, cancelled request) leaves no temporary file
        for image in images:
            if image.received is not None:
                image.received.discard()
    reply.content["data"] = data
    reply.content.setdefault("created", answer.get("created"))
    return reply


async def _store_one(
    parts: GatewayParts,
    reply: SplicedJson,
    image: UpstreamImage,
    *,
    response_format: str,
    base_url: str,
    origin: ImageOrigin,
) -> dict[str, Any]:
    item: dict[str, Any] = {}
    stored: StoredImage | None = None
    try:
        # serverless with R2 down raises StorageUnavailable after storing: reply inline
        stored = await parts.library.save(image.data, origin=origin, received=image.received)
    except (OSError, StorageUnavailable) as exc:
        parts.events.error(f"❌ 图片保存失败，已内联返回: {exc}")
    if stored is not None:
        await parts.count_images(1)
    if stored is not None and response_format == "url":
        item["url"] = base_url + stored.path
    elif image.b64 is not None:  # the upstream's own text, already canonical: no encoding
        item["b64_json"] = reply.blob(image.b64)
    elif len(image.data) >= ENCODE_OFF_LOOP_BYTES:  # ~2 ms at 8 MB: not on the event loop
        item["b64_json"] = reply.blob(await anyio.to_thread.run_sync(_b64, image.data))
    else:
        item["b64_json"] = reply.blob(_b64(image.data))
    if image.revised_prompt is not None:
        item["revised_prompt"] = image.revised_prompt
    item.update(image.extra)
    return item


async def generate(
    parts: GatewayParts,
    settings: Settings,
    body: dict[str, Any],
    *,
    base_url: str,
    who: Attribution,
) -> SplicedJson:
    """``POST /v1/images/generations``: ask the upstream, store each image (recording ``who``
    on it), answer with URLs or base64 as the client asked."""
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise BadRequest(
            "Missing required parameter: 'prompt'.",
            param="prompt",
            code="missing_required_parameter",
        )
    n = body.get("n", 1)
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 10):
        raise BadRequest("'n' must be an integer from 1 to 10", param="n", code="invalid_value")
    response_format = client_response_format(body)
    upstream_body = dict(body)
    model = upstream_model(settings, body.get("model"))
    if model:
        upstream_body["model"] = model
    if wants_response_format(model):
        upstream_body["response_format"] = "b64_json"
    else:
        upstream_body.pop("response_format", None)
    parts.events.info(f"📤 发起文生图请求: prompt={short(prompt)}")
    async with parts.buffers.hold() as hold:
        answer, images = await call_upstream(
            parts,
            settings,
            "images/generations",
            hold=hold,
            keep=requested_n(n),
            keep_base64=response_format == "b64_json",
            json=upstream_body,
        )
    parts.events.info(f"📥 上游返回成功: 收到 {len(images)} 张图片")
    reply = await store_and_reply(
        parts,
        answer=answer,
        images=images,
        response_format=response_format,
        base_url=base_url,
        origin=who.origin("generations", prompt),
    )
    ids = ", ".join(_ids(reply))
    parts.events.info(f"✅ 文生图完成: {ids or '(inline)'}")
    return reply


def _ids(reply: SplicedJson) -> list[str]:
    out = []
    for item in reply.content.get("data", []):
        url = item.get("url")
        if isinstance(url, str):
            out.append(url.rsplit("/", 1)[-1][:8] + "...")
    return out


EditImage = tuple[str, bytes, str]  # filename, bytes, content type


async def edit(
    parts: GatewayParts,
    settings: Settings,
    *,
    fields: dict[str, str],
    images: list[EditImage],
    mask: EditImage | None,
    image_field: str,
    base_url: str,
    who: Attribution,
    hold: BufferHold,
) -> SplicedJson:
    """``POST /v1/images/edits``: as ``generate``, with the input images (and mask) sent on;
    ``hold`` is the request's share of the buffer budget (its images by URL may already be in
    it)."""
    prompt = fields.get("prompt")
    if not prompt or not prompt.strip():
        raise BadRequest(
            "Missing required parameter: 'prompt'.",
            param="prompt",
            code="missing_required_parameter",
        )
    if not images:
        raise BadRequest(
            "Missing required parameter: 'image'.", param="image", code="missing_required_parameter"
        )
    response_format = client_response_format(fields)
    data = dict(fields)
    model = upstream_model(settings, fields.get("model"))
    if model:
        data["model"] = model
    if wants_response_format(model):
        data["response_format"] = "b64_json"
    else:
        data.pop("response_format", None)
    files: list[tuple[str, tuple[str, bytes, str]]] = [(image_field, img) for img in images]
    if mask is not None:
        files.append(("mask", mask))
    parts.events.info(f"📤 发起图片编辑请求: prompt={short(prompt)}, {len(images)} 张输入图片")
    answer, result = await call_upstream(
        parts,
        settings,
        "images/edits",
        hold=hold,
        keep=requested_n(fields.get("n")),
        keep_base64=response_format == "b64_json",
        data=data,
        files=files,
    )
    parts.events.info(f"📥 上游返回成功: 收到 {len(result)} 张图片")
    reply = await store_and_reply(
        parts,
        answer=answer,
        images=result,
        response_format=response_format,
        base_url=base_url,
        origin=who.origin("edits", prompt),
    )
    parts.events.info(f"✅ 图片编辑完成: {', '.join(_ids(reply)) or '(inline)'}")
    return reply


ImageLoader = Callable[[str, str], Awaitable[bytes]]
"""The bytes of an image reference (base64, data URL or URL); the second argument names the
parameter it came from, for errors."""


async def edit_inputs_from_json(
    body: dict[str, Any], load: ImageLoader
) -> tuple[dict[str, str], list[EditImage], EditImage | None, str]:
    """A JSON edits body (base64 / data URL / URL images) turned into multipart parts."""
    raw_images = body.get("image", body.get("images", body.get("image[]")))
    if raw_images is None:
        raise BadRequest(
            "Missing required parameter: 'image'.", param="image", code="missing_required_parameter"
        )
    items = raw_images if isinstance(raw_images, list) else [raw_images]
    images: list[EditImage] = []
    for index, item in enumerate(items):
        ref = item
        if isinstance(item, dict):  # {"image_url": "..."} or {"image_url": {"url": "..."}}
            ref = item.get("image_url") or item.get("url") or item.get("b64_json")
            if isinstance(ref, dict):
                ref = ref.get("url")
        if not isinstance(ref, str) or not ref:
            raise BadRequest("each image must be base64, a data URL or a URL", param="image")
        data = await load(ref, "image")
        kind = await sniff_async(data)
        images.append((f"image-{index}.{kind.ext}", data, kind.mime))
    mask: EditImage | None = None
    if isinstance(body.get("mask"), str) and body["mask"]:
        mdata = await load(body["mask"], "mask")
        mkind = await sniff_async(mdata)
        mask = (f"mask.{mkind.ext}", mdata, mkind.mime)
    fields: dict[str, str] = {}
    for key, value in body.items():
        if key in ("image", "images", "image[]", "mask") or value is None:
            continue
        fields[key] = value if isinstance(value, str) else form_value(value)
    field = "image[]" if len(images) > 1 else "image"
    return fields, images, mask, field


def form_value(value: Any) -> str:
    """A JSON value as a multipart form field."""
    import json

    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return json.dumps(value)
