"""Which models are image models, and what a request to one of them must not carry.

Without a models file PicGate serves one model, ``GATEWAY_MODEL_NAME``, and it is an image
model: ``is_image_model`` says so. It is a plain predicate of the settings and the model name
so that a models file (``MODELS_FILE``, where each model says ``api: images|chat``) can answer
instead without the callers changing.
"""

from __future__ import annotations

from typing import Any

from picgate.config import Settings

__all__ = ["TOOL_FIELDS", "is_image_model", "without_tools"]

# what Open WebUI's Builtin Tools (and any agent front end) add to a chat request
TOOL_FIELDS = ("tools", "tool_choice", "parallel_tool_calls")


def is_image_model(settings: Settings, model: Any) -> bool:
    """True when ``model`` (the name a client asked for) is an image model of this gateway."""
    return isinstance(model, str) and model == settings.gateway_model_name


def without_tools(settings: Settings, body: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """``body`` without ``TOOL_FIELDS`` when it goes to an image model and
    ``DROP_TOOLS_FOR_IMAGE_MODELS`` is on (many image models refuse ``tools`` with a 400, the
    others ignore them); the names dropped. A new dict; ``body`` is not changed."""
    if not settings.drop_tools_for_image_models or not is_image_model(settings, body.get("model")):
        return body, []
    dropped = [name for name in TOOL_FIELDS if name in body]
    if not dropped:
        return body, []
    return {k: v for k, v in body.items() if k not in TOOL_FIELDS}, dropped
