"""Which upstream serves a model: the route of a request, from ``MODELS_FILE`` or the settings.

A route carries the effective ``Settings`` of its request: the same settings with the model's
upstream in the ``UPSTREAM_*`` fields (base URL, key, timeout, retries) and its upstream model
in ``UPSTREAM_MODEL_NAME``. Every part below the routes (the upstream client, the Images API
code, the chat relay, the fetch of an upstream's image URL, which trusts that upstream's origin)
already reads those fields, so they follow the route without knowing it exists, and an
upstream's key is only ever put on a request to that upstream's own ``base_url``.

Without a models file (``ModelTable`` absent) the route is the settings unchanged: the single
upstream takes every model name, as it always did.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from picgate.config import Settings
from picgate.errors import BadRequest, NotFound
from picgate.routing.models_file import ModelEntry, ModelsFile, UpstreamEntry, load_models_file

__all__ = ["ModelRoute", "ModelTable", "legacy_route"]

Api = Literal["images", "chat"]


@dataclass(frozen=True)
class ModelRoute:
    """Where one request goes. ``name`` is the model as the client named it (None: unnamed)."""

    name: str | None
    api: Api
    settings: Settings
    upstream: str = "default"
    params: Mapping[str, Any] = field(default_factory=dict)
    # the model entry's Images API answer when the client names none (None: the name rule)
    response_format: str | None = None

    def with_params(self, body: dict[str, Any]) -> dict[str, Any]:
        """``body`` with the model's ``params`` filled in where the client sent nothing."""
        if not self.params:
            return body
        return {**self.params, **body}

    def image_defaults(self) -> dict[str, Any]:
        """What an Images API request of this model gets where the client sent nothing: the
        ``params`` and the entry's ``response_format`` (kept out of chat requests, where the
        same field asks for JSON mode)."""
        if self.response_format is None:
            return dict(self.params)
        return {**self.params, "response_format": self.response_format}

    def with_image_params(self, body: dict[str, Any]) -> dict[str, Any]:
        """``body`` with ``image_defaults`` filled in where the client sent nothing."""
        defaults = self.image_defaults()
        return {**defaults, **body} if defaults else body


def legacy_route(settings: Settings, model: Any) -> ModelRoute:
    """The route without a models file: the settings' single upstream, chat passed through."""
    return ModelRoute(model if isinstance(model, str) else None, "chat", settings)


class ModelTable:
    """The models of a models file and the routes to them, cached per settings object.

    The settings object changes when the console saves a setting; the cache follows it.
    """

    def __init__(self, parsed: ModelsFile, *, source: Path | None = None) -> None:
        self.source = source
        self.upstreams: dict[str, UpstreamEntry] = {u.name: u for u in parsed.upstreams}
        self.models: dict[str, ModelEntry] = {m.name: m for m in parsed.models}
        self._lock = threading.Lock()
        self._base: Settings | None = None
        self._routes: dict[str, ModelRoute] = {}

    @classmethod
    def load(cls, path: Path, environ: Mapping[str, str] | None = None) -> ModelTable:
        """SettingsError (one line naming MODELS_FILE) when the file is missing or invalid."""
        return cls(load_models_file(path, environ), source=path)

    @property
    def default(self) -> str:
        """The model of a request that names none: the file's first."""
        return next(iter(self.models))

    def secrets(self) -> list[str]:
        """Every upstream key, for the redactor."""
        return [u.api_key for u in self.upstreams.values() if u.api_key]

    def upstream_settings(self, settings: Settings, upstream: str) -> Settings:
        """``settings`` pointed at one upstream (``NotFound`` for an unknown name)."""
        entry = self.upstreams.get(upstream)
        if entry is None:
            raise NotFound(f"no upstream named {upstream!r}", code="upstream_not_found")
        return settings.model_copy(
            update={
                "upstream_api_base": entry.base_url,
                "upstream_api_key": entry.api_key,
                "upstream_timeout_seconds": entry.timeout_seconds
                or settings.upstream_timeout_seconds,
                "upstream_retries": settings.upstream_retries
                if entry.retries is None
                else entry.retries,
                "upstream_model_name": None,
            }
        )

    def route(self, settings: Settings, model: Any) -> ModelRoute:
        """The route of a request naming ``model``; 404 ``model_not_found`` for an unknown one."""
        if model is None:
            model = self.default
        if not isinstance(model, str):
            raise BadRequest("'model' must be a string", param="model", code="invalid_type")
        with self._lock:
            if self._base is not settings:
                self._base, self._routes = settings, {}
            found = self._routes.get(model)
        if found is not None:
            return found
        entry = self.models.get(model)
        if entry is None:
            shown = model if len(model) <= 100 else model[:100] + "..."
            raise NotFound(
                f"The model {shown!r} does not exist on this gateway; GET /v1/models lists "
                "the models it serves.",
                error_type="invalid_request_error",
                param="model",
                code="model_not_found",
            )
        routed = self.upstream_settings(settings, entry.upstream).model_copy(
            update={"upstream_model_name": entry.target}
        )
        found = ModelRoute(
            entry.name,
            entry.api,
            routed,
            entry.upstream,
            dict(entry.params),
            response_format=entry.response_format,
        )
        with self._lock:
            if self._base is settings:
                self._routes[model] = found
        return found

    def entry(self, model: Any) -> ModelEntry | None:
        """The file's entry of ``model`` (None for an unknown name or a non-string)."""
        return self.models.get(model) if isinstance(model, str) else None

    def listing(self, created: int) -> list[dict[str, Any]]:
        """``/v1/models`` entries, in the file's order."""
        return [
            {"id": name, "object": "model", "created": created, "owned_by": "picgate"}
            for name in self.models
        ]
