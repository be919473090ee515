"""``MODELS_FILE``: the YAML naming upstreams and the models clients see.

::

    upstreams:
      - name: openai
        base_url: https://api.openai.com/v1
        api_key: ${OPENAI_API_KEY}
        timeout_seconds: 300      # optional: UPSTREAM_TIMEOUT_SECONDS otherwise
        retries: 1                # optional: UPSTREAM_RETRIES otherwise
    models:
      - name: gpt-image           # what clients send and /v1/models lists
        upstream: openai
        upstream_model: gpt-image-1
        api: images               # images | chat
        params: {size: 1024x1024} # defaults added to every request of this model
        response_format: b64_json # optional: the Images API answer when a client names none
        drop_tools: true          # optional: drop tools/tool_choice (default: on for images)

``${NAME}`` in any string is replaced by the environment variable ``NAME``; an unset one is an
error. ``load_models_file`` returns the validated file or raises ``SettingsError`` with one line
naming ``MODELS_FILE``, the entry and the fix; it never lets a traceback through.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from picgate.config import SettingsError

__all__ = ["ModelEntry", "ModelsFile", "UpstreamEntry", "interpolate", "load_models_file"]

_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_NAME = r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,127}$"
# an upstream's answer to a model's request may be slow (image models draw for minutes)
MAX_TIMEOUT_SECONDS = 3600.0


class UpstreamEntry(BaseModel):
    """One OpenAI-compatible API; its key goes to its ``base_url`` and nowhere else."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=_NAME)
    base_url: str
    api_key: str | None = None
    timeout_seconds: float | None = Field(None, gt=0, le=MAX_TIMEOUT_SECONDS)
    retries: int | None = Field(None, ge=0, le=5)

    @field_validator("base_url")
    @classmethod
    def _absolute_http(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"must be an absolute http or https URL, got {value!r}")
        return value.rstrip("/")

    @field_validator("api_key")
    @classmethod
    def _blank_is_none(cls, value: str | None) -> str | None:
        return value.strip() or None if value is not None else None


class ModelEntry(BaseModel):
    """One model clients can name; requests for it go to ``upstream`` as ``upstream_model``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=_NAME)
    upstream: str
    upstream_model: str | None = None  # None: the same name as clients use
    api: Literal["images", "chat"] = "chat"
    params: dict[str, Any] = Field(default_factory=dict)
    # the Images API answer when a client sends no response_format; None: the gpt-image rule
    response_format: Literal["b64_json", "url"] | None = None
    # drop tools/tool_choice before the model sees them; None: on for api images, off for chat
    drop_tools: bool | None = None

    @property
    def target(self) -> str:
        return self.upstream_model or self.name


class ModelsFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    upstreams: list[UpstreamEntry] = Field(min_length=1)
    models: list[ModelEntry] = Field(min_length=1)


def interpolate(value: Any, environ: Mapping[str, str], where: str = "") -> Any:
    """``value`` with ``${NAME}`` replaced in every string; KeyError-free: an unset variable
    raises SettingsError naming it and ``where`` it was used."""
    if isinstance(value, str):

        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in environ:
                raise _UnsetVariable(name, where)
            return environ[name]

        return _VARIABLE.sub(replace, value)
    if isinstance(value, list):
        return [interpolate(v, environ, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {
            k: interpolate(v, environ, f"{where}.{k}" if where else str(k))
            for k, v in value.items()
        }
    return value


class _UnsetVariable(Exception):
    def __init__(self, name: str, where: str) -> None:
        super().__init__(name)
        self.name = name
        self.where = where


def load_models_file(path: Path, environ: Mapping[str, str] | None = None) -> ModelsFile:
    """The validated models file at ``path`` (see the module doc); SettingsError otherwise."""
    environ = os.environ if environ is None else environ
    prefix = f"MODELS_FILE {path}"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SettingsError(f"{prefix}: no such file; fix the path or unset MODELS_FILE") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(f"{prefix}: cannot be read ({exc}); fix the file") from None
    import yaml  # only with a MODELS_FILE: PyYAML stays out of every other start

    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise SettingsError(f"{prefix}: not valid YAML{line} ({problem}); fix the syntax") from None
    if not isinstance(raw, dict):
        raise SettingsError(f"{prefix}: must be a mapping with 'upstreams' and 'models' lists")
    try:
        raw = interpolate(raw, environ)
    except _UnsetVariable as exc:
        raise SettingsError(
            f"{prefix}: {_entry(raw, exc.where)} uses ${{{exc.name}}} but the environment "
            f"variable {exc.name} is not set; set it or write the value in the file"
        ) from None
    try:
        parsed = ModelsFile.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = first.get("loc", ())
        field = ".".join(str(p) for p in loc)
        entry = _entry(raw, field)
        fix = str(first.get("msg", "invalid value"))
        raise SettingsError(f"{prefix}: {entry}: {fix}") from None
    _check_references(parsed, prefix)
    return parsed


def _entry(raw: Any, where: str) -> str:
    """``where`` (``models.1.api``, ``upstreams[0].api_key``) with the entry's name added."""
    parts = [p for p in re.split(r"[.\[\]]+", where) if p]
    if len(parts) >= 2 and parts[0] in ("upstreams", "models") and parts[1].isdigit():
        index = int(parts[1])
        shown = f"{parts[0]}[{index}]"
        items = raw.get(parts[0]) if isinstance(raw, dict) else None
        if isinstance(items, list) and index < len(items) and isinstance(items[index], dict):
            name = items[index].get("name")
            if isinstance(name, str):
                shown += f" ({name!r})"
        rest = ".".join(parts[2:])
        return f"{shown} {rest}".strip() if rest else shown
    return where or "the file"


def _check_references(parsed: ModelsFile, prefix: str) -> None:
    upstreams: set[str] = set()
    for index, upstream in enumerate(parsed.upstreams):
        if upstream.name in upstreams:
            raise SettingsError(
                f"{prefix}: upstreams[{index}] ({upstream.name!r}): the name is used twice; "
                "give every upstream its own name"
            )
        upstreams.add(upstream.name)
    models: set[str] = set()
    for index, model in enumerate(parsed.models):
        where = f"{prefix}: models[{index}] ({model.name!r})"
        if model.name in models:
            raise SettingsError(f"{where}: the name is used twice; give every model its own name")
        models.add(model.name)
        if model.upstream not in upstreams:
            known = ", ".join(sorted(upstreams))
            raise SettingsError(
                f"{where}: upstream {model.upstream!r} is not defined; use one of: {known}"
            )
