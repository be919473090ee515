"""The settings page as data: groups and fields, what the browser may see, and saving changes.

Secrets leave only masked (``settings_store.mask``). A secret that comes back unchanged (the
mask itself, or an empty box) is left as it is; clearing a secret is an explicit ``null``.
Errors name the field they belong to so the page can show them next to it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from picgate.config import EDITABLE, SECRETS, Settings, SettingsError
from picgate.errors import Unprocessable
from picgate.settings_store import ConfigService, mask


@dataclass(frozen=True)
class Field:
    name: str
    kind: str  # text | url | secret | number | bool


GROUPS: tuple[tuple[str, tuple[Field, ...]], ...] = (
    (
        "upstream",
        (
            Field("upstream_api_base", "url"),
            Field("upstream_api_key", "secret"),
            Field("upstream_model_name", "text"),
        ),
    ),
    (
        "gateway",
        (
            Field("gateway_model_name", "text"),
            Field("gateway_api_key", "secret"),
            Field("public_base_url", "url"),
            Field("chat_image_variant", "text"),
            Field("task_model", "text"),
            Field("drop_tools_for_image_models", "bool"),
            Field("max_inline_images_mb", "number"),
            Field("inline_full_images", "number"),
        ),
    ),
    (
        "r2",
        (
            Field("r2_account_id", "text"),
            Field("r2_access_key_id", "secret"),
            Field("r2_secret_access_key", "secret"),
            Field("r2_bucket_name", "text"),
            Field("r2_endpoint_url", "url"),
            Field("r2_public_base_url", "url"),
        ),
    ),
    (
        "cache",
        (
            Field("local_cache_ttl_hours", "number"),
            Field("metadata_retention_days", "number"),
            Field("max_local_cache_mb", "number"),
        ),
    ),
    (
        "security",
        (
            Field("allow_external_image_fetch", "bool"),
            Field("delete_r2_on_metadata_expire", "bool"),
            Field("user_daily_image_limit", "number"),
        ),
    ),
)
FIELDS: dict[str, Field] = {f.name: f for _, fields in GROUPS for f in fields}
assert set(FIELDS) == set(EDITABLE), "every editable setting has a place on the page"


def _shown(name: str, value: Any) -> Any:
    if name in SECRETS:
        return mask(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def field_view(settings: Settings, name: str) -> dict[str, Any]:
    value = getattr(settings, name)
    return {
        "name": name,
        "kind": FIELDS[name].kind,
        "value": "" if value is None else _shown(name, value),
        "is_set": value not in (None, ""),
        "fixed": name in settings.fixed_fields(),
    }


def settings_view(settings: Settings) -> list[dict[str, Any]]:
    """``[{"group", "fields": [...]}, ...]`` with secrets masked and env-fixed fields marked."""
    return [
        {"group": group, "fields": [field_view(settings, f.name) for f in fields]}
        for group, fields in GROUPS
    ]


def incoming_values(current: Settings, values: dict[str, Any]) -> dict[str, Any]:
    """The values that really change something: masked or empty secrets are dropped."""
    changes: dict[str, Any] = {}
    for name, value in values.items():
        if name not in FIELDS:
            raise Unprocessable(f"{name} is not an editable setting", param=name)
        if name in SECRETS and isinstance(value, str):
            present = getattr(current, name)
            if not value.strip() or (present and value == mask(present)):
                continue
        if isinstance(value, str) and FIELDS[name].kind != "secret":
            value = value.strip()
            if value == "" and FIELDS[name].kind in ("url", "text"):
                value = None
        changes[name] = value
    return changes


_VAR = re.compile(r"\b([A-Z][A-Z0-9_]{2,})\b")


def field_of_error(message: str, names: list[str]) -> str | None:
    """The first setting named in an error message (upper-case variable names), else a guess."""
    for var in _VAR.findall(message):
        name = str(var).lower()
        if name in FIELDS:
            return name
    return names[0] if len(names) == 1 else None


def save(config: ConfigService, values: dict[str, Any]) -> Settings:
    """Store ``values``; Unprocessable (422, ``param`` = the field) when they are refused."""
    changes = incoming_values(config.current(), values)
    if not changes:
        return config.current()
    names = sorted(changes)
    try:
        return config.save(changes)
    except ValidationError as exc:
        errors = exc.errors()
        loc = [str(p) for p in errors[0]["loc"]] if errors else []
        msg = errors[0]["msg"] if errors else "invalid value"
        param = next((p for p in loc if p in FIELDS), None) or field_of_error(str(exc), names)
        raise Unprocessable(f"{param or 'value'}: {msg}", param=param) from exc
    except SettingsError as exc:
        raise Unprocessable(str(exc), param=field_of_error(str(exc), names)) from exc
    except ValueError as exc:
        raise Unprocessable(str(exc), param=field_of_error(str(exc), names)) from exc
