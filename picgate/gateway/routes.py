"""The OpenAI-compatible ``/v1`` routes. Thin: parse, call one function, shape the answer."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.datastructures import UploadFile

from picgate.deps import Gateway, GatewayAuth, GatewayDep, public_base_url
from picgate.errors import PicGateError, UnsupportedMediaType
from picgate.gateway import images_api
from picgate.gateway.buffers import BufferHold
from picgate.gateway.request_json import parse_json_object
from picgate.gateway.spliced_json import SplicedJson, SplicedJsonResponse
from picgate.routing.table import ModelRoute
from picgate.storage.codec import sniff_async

router = APIRouter(prefix="/v1", dependencies=[GatewayAuth])

# These routes read the raw body (relays send loose JSON), so FastAPI cannot infer a schema;
# these describe it for /openapi.json (clients, schema fuzzing). Unknown fields pass through.
_IMAGE_REF = {"type": "string", "description": "base64, a data URL, or an http(s) URL"}
GENERATIONS_BODY: dict[str, Any] = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["prompt"],
                "properties": {
                    "prompt": {"type": "string"},
                    "model": {"type": "string"},
                    "n": {"type": "integer", "minimum": 1, "maximum": 10},
                    "size": {"type": "string"},
                    "quality": {"type": "string"},
                    "response_format": {"type": "string", "enum": ["url", "b64_json"]},
                },
                "additionalProperties": True,
            }
        }
    },
}
EDITS_BODY: dict[str, Any] = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["image", "prompt"],
                "properties": {
                    "image": {"type": "string", "format": "binary"},
                    "mask": {"type": "string", "format": "binary"},
                    "prompt": {"type": "string"},
                    "model": {"type": "string"},
                    "n": {"type": "string"},
                    "size": {"type": "string"},
                    "response_format": {"type": "string", "enum": ["url", "b64_json"]},
                },
            }
        },
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["image", "prompt"],
                "properties": {
                    "image": {"oneOf": [_IMAGE_REF, {"type": "array", "items": _IMAGE_REF}]},
                    "mask": _IMAGE_REF,
                    "prompt": {"type": "string"},
                    "model": {"type": "string"},
                    "n": {"type": "integer", "minimum": 1, "maximum": 10},
                    "response_format": {"type": "string", "enum": ["url", "b64_json"]},
                },
                "additionalProperties": True,
            }
        },
    },
}


async def read_json_object(request: Request) -> dict[str, Any]:
    """The request's JSON object, checked that it can be sent on (``request_json``)."""
    return parse_json_object(await request.body())


MODELS_CREATED = 1764240000


@router.get("/models")
async def list_models(gateway: GatewayDep) -> dict[str, Any]:
    settings = gateway.settings
    if gateway.models is not None:
        return {"object": "list", "data": gateway.models.listing(MODELS_CREATED)}
    return {
        "object": "list",
        "data": [
            {
                "id": settings.gateway_model_name,
                "object": "model",
                "created": MODELS_CREATED,
                "owned_by": "picgate",
            }
        ],
    }


def routed(request: Request, gateway: Gateway, model: Any) -> ModelRoute:
    """The route of ``model``, remembered on the request for the metrics."""
    route = gateway.route(model)
    name = route.name
    if gateway.models is None and name != gateway.settings.gateway_model_name:
        name = "other"  # any name passes without a models file: keep the label set small
    request.state.model = name
    return route


# the answer is built here, not by FastAPI: a response model would validate and copy it
# (megabytes of base64 with response_format=b64_json)
@router.post(
    "/images/generations",
    openapi_extra={"requestBody": GENERATIONS_BODY},
    response_class=JSONResponse,
)
async def images_generations(request: Request, gateway: GatewayDep) -> SplicedJsonResponse:
    events = gateway.parts.events
    body = await read_json_object(request)
    route = routed(request, gateway, body.get("model"))
    events.count("requests")
    await gateway.check_image_limits()
    reply = await images_api.generate(
        gateway.parts,
        route.settings,
        route.with_image_params(body),
        base_url=public_base_url(request, gateway.settings, events),
        who=gateway.who.with_body(body),
    )
    return SplicedJsonResponse(reply)


async def _upload_bytes(upload: UploadFile, param: str) -> images_api.EditImage:
    data = await upload.read()
    try:
        kind = await sniff_async(data)
    except PicGateError as exc:
        exc.param = exc.param or param
        raise
    name = upload.filename or f"image.{kind.ext}"
    return (name, data, kind.mime)


@router.post(
    "/images/edits", openapi_extra={"requestBody": EDITS_BODY}, response_class=JSONResponse
)
async def images_edits(request: Request, gateway: GatewayDep) -> SplicedJsonResponse:
    async with gateway.parts.buffers.hold() as hold:
        return SplicedJsonResponse(await _edit(request, gateway, hold))


async def _edit(request: Request, gateway: Gateway, hold: BufferHold) -> SplicedJson:
    parts = gateway.parts
    parts.events.count("requests")
    ctype = request.headers.get("content-type", "").lower()
    base_url = public_base_url(request, gateway.settings, parts.events)
    # a url-encoded form cannot carry a file, but it is still an edit with no image: answer so
    if ctype.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
        images: list[images_api.EditImage] = []
        fields: dict[str, str] = {}
        mask: images_api.EditImage | None = None
        field = "image"
        async with request.form(max_files=32, max_fields=64) as form:
            for key, value in form.multi_items():
                if isinstance(value, str):
                    fields[key] = value
                elif key in ("image", "image[]"):
                    field = "image[]" if key == "image[]" else field
                    images.append(await _upload_bytes(value, key))
                elif key == "mask":
                    mask = await _upload_bytes(value, "mask")
        if len(images) > 1:
            field = "image[]"
        route = routed(request, gateway, fields.get("model"))
        await gateway.check_image_limits()
        defaults = {k: images_api.form_value(v) for k, v in route.image_defaults().items()}
        return await images_api.edit(
            parts,
            route.settings,
            fields={**defaults, **fields},
            images=images,
            mask=mask,
            image_field=field,
            base_url=base_url,
            who=gateway.who.with_body(fields),
            hold=hold,
        )
    if ctype.startswith("application/json") or not ctype:
        body = await read_json_object(request)
        route = routed(request, gateway, body.get("model"))
        await gateway.check_image_limits()
        body, settings = route.with_image_params(body), route.settings
        # the model is checked before any image is read or fetched (edit() checks it again)
        images_api.upstream_model(settings, body.get("model"))
        # only JSON edits load images by URL or id: the loader's modules wait for the first one
        from picgate.gateway.inline import EditImageLoader

        load = EditImageLoader.build(
            library=parts.library,
            http=parts.http,
            settings=settings,
            base_url=base_url,
            hold=hold,
        )
        fields, images, mask, field = await images_api.edit_inputs_from_json(body, load)
        return await images_api.edit(
            parts,
            settings,
            fields=fields,
            images=images,
            mask=mask,
            image_field=field,
            base_url=base_url,
            who=gateway.who.with_body(body),
            hold=hold,
        )
    raise UnsupportedMediaType(
        "Send the edit as multipart/form-data (or JSON with base64 images).",
        code="unsupported_content_type",
    )
