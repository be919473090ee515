"""Which models are image models, and what a request to one of them must not carry.

Without a models file PicGate serves one model, ``GATEWAY_MODEL_NAME``, and it is an image
model. With one (``MODELS_FILE``), a model is an image model when its entry says
``api: images``; a name the file does not list is none (the route answers it with a 404).
Open WebUI's task prompts are recognised, and tools dropped, for image models only.

Tools are dropped when ``DROP_TOOLS_FOR_IMAGE_MODELS`` is on and the model is an image model;
a models file entry's ``drop_tools`` decides for its model instead (absent: that rule, so on for
``api: images`` and off for ``api: chat``).
"""

from __future__ import annotations

from typing import Any

from picgate.config import Settings
from picgate.routing.table import ModelTable

__all__ = ["TOOL_FIELDS", "drops_tools", "is_image_model", "without_tools"]

# what Open WebUI's Builtin Tools (and any agent front end) add to a chat request
TOOL_FIELDS = ("tools", "tool_choice", "parallel_tool_calls")


def is_image_model(settings: Settings, model: Any, models: ModelTable | None = None) -> bool:
    """True when ``model`` (the name a client asked for) is an image model of this gateway:
    ``api: images`` in ``models`` when there is a models file, else ``GATEWAY_MODEL_NAME``."""
    if models is not None:
        entry = models.entry(model)
        return entry is not None and entry.api == "images"
    return isinstance(model, str) and model == settings.gateway_model_name


def drops_tools(settings: Settings, model: Any, models: ModelTable | None = None) -> bool:
    """Whether a chat request to ``model`` loses its ``TOOL_FIELDS`` (see the module doc)."""
    entry = models.entry(model) if models is not None else None
    if entry is not None and entry.drop_tools is not None:
        return entry.drop_tools
    return settings.drop_tools_for_image_models and is_image_model(settings, model, models)


def without_tools(
    settings: Settings, body: dict[str, Any], models: ModelTable | None = None, *, model: Any = None
) -> tuple[dict[str, Any], list[str]]:
    """``body`` without ``TOOL_FIELDS`` when ``drops_tools`` says so for ``model`` (default:
    the body's; many image models refuse ``tools`` with a 400, the others ignore them); the
    names dropped. A new dict; ``body`` is not changed."""
    if not drops_tools(settings, body.get("model") if model is None else model, models):
        return body, []
    dropped = [name for name in TOOL_FIELDS if name in body]
    if not dropped:
        return body, []
    return {k: v for k, v in body.items() if k not in TOOL_FIELDS}, dropped
