"""Settings: the environment (pydantic-settings) plus values stored by the admin console.

A value set in the environment (or passed to ``Settings(...)``) is *fixed*: it wins over the
database and the console shows it read-only. Editable settings that are not fixed come from the
``settings`` table. ``validate_settings`` refuses impossible combinations with a message that
names the variable.
"""

from __future__ import annotations

import ipaddress
import os
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, GetCoreSchemaHandler, field_validator
from pydantic_core import core_schema
from pydantic_settings import BaseSettings, SettingsConfigDict

from picgate.variant_query import check_variant_text

RuntimeMode = Literal["auto", "server", "serverless"]

# Upper bounds that keep every date computed from a setting representable (``timedelta`` and
# ``datetime`` overflow far below 1e308): ten years of local cache, a century of metadata, 1 EiB.
MAX_TTL_HOURS = 10 * 366 * 24
MAX_RETENTION_DAYS = 100 * 366
MAX_CACHE_MB = 2**40
MAX_TEXT = 2048

PLACEHOLDER_KEYS = frozenset({"changeme", "change-me", "your-key", "sk-xxx", "pg-xxx", "xxx"})


@dataclass(frozen=True)
class Editable:
    """Marks a setting the admin console may change (stored in the database unless the
    environment fixes it); ``secret``: encrypted at rest, never sent to the browser in full.

    Its text values must be printable (``check_text``): they are stored, logged and sent.
    ``EDITABLE`` and ``SECRETS`` are read from these marks, so a setting is declared once.
    """

    secret: bool = False

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(_printable_text, handler(source))


def _printable_text(value: Any) -> Any:
    if isinstance(value, str):
        check_text(value)
    return value


class SettingsError(ValueError):
    """An impossible or unsafe configuration; the message names the variable."""


class Settings(BaseSettings):
    """Every setting PicGate reads. Environment names are the field names in upper case."""

    model_config = SettingsConfigDict(
        env_prefix="", case_sensitive=False, extra="ignore", validate_default=True
    )

    host: str = "0.0.0.0"
    port: int = Field(5643, ge=1, le=65535)
    # the seed's sqlite+aiosqlite:/// form still works (picgate.db.engine maps it)
    database_url: str = "sqlite:///./data/db/picgate.db"
    database_auth_token: str | None = None
    data_dir: Path = Path("./data")
    images_dir: Path | None = None

    upstream_api_base: Annotated[str | None, Editable()] = None
    upstream_api_key: Annotated[str | None, Editable(secret=True)] = None
    upstream_model_name: Annotated[str | None, Editable()] = None
    upstream_timeout_seconds: float = Field(600.0, gt=0)
    # a refused connection, 429, 502 or 503 is asked again this many times (picgate.routing)
    upstream_retries: int = Field(0, ge=0, le=5)
    # YAML naming upstreams and the models clients see (picgate.routing.models_file)
    models_file: Path | None = None
    # GET /metrics answers only a caller sending this as a bearer token (picgate.metrics)
    metrics_token: str | None = None

    gateway_model_name: Annotated[str, Editable()] = "picgate"
    gateway_api_key: Annotated[str | None, Editable(secret=True)] = None
    public_base_url: Annotated[str | None, Editable()] = None
    # a variant query (``w=1024&format=webp``) added to the image URLs written into chat answers
    chat_image_variant: Annotated[str, Editable()] = ""

    r2_account_id: Annotated[str | None, Editable()] = None
    r2_access_key_id: Annotated[str | None, Editable(secret=True)] = None
    r2_secret_access_key: Annotated[str | None, Editable(secret=True)] = None
    r2_bucket_name: Annotated[str | None, Editable()] = None
    r2_endpoint_url: Annotated[str | None, Editable()] = None
    r2_public_base_url: Annotated[str | None, Editable()] = None
    r2_key_prefix: str = "images/"

    local_cache_ttl_hours: Annotated[float, Editable()] = Field(
        72.0, ge=0, le=MAX_TTL_HOURS, allow_inf_nan=False
    )
    metadata_retention_days: Annotated[int, Editable()] = Field(365, ge=0, le=MAX_RETENTION_DAYS)
    max_local_cache_mb: Annotated[int, Editable()] = Field(0, ge=0, le=MAX_CACHE_MB)
    allow_external_image_fetch: Annotated[bool, Editable()] = False
    delete_r2_on_metadata_expire: Annotated[bool, Editable()] = False
    # images per user (Open WebUI's forwarded user id, else per gateway key) per UTC day; 0 = none
    user_daily_image_limit: Annotated[int, Editable()] = Field(0, ge=0, le=10**9)

    secret_key: str | None = None
    runtime_mode: RuntimeMode = "auto"

    max_request_body_mb: int = Field(50, ge=1)
    # bytes of images PicGate inlines into one upstream request from image URLs (history images,
    # edit images by URL), counted for every reference: a small request can name a big image
    # many times (picgate.gateway.inline)
    max_inline_images_mb: Annotated[int, Editable()] = Field(50, ge=1, le=MAX_CACHE_MB)
    # past that cap, the newest this many history images still go at full size; older ones go
    # downscaled, the oldest as a note (picgate.gateway.trim)
    inline_full_images: Annotated[int, Editable()] = Field(2, ge=1, le=100)
    # a text model (routed to the upstream) that answers Open WebUI's background tasks (title,
    # tags, follow-ups...) sent to the image model; unset: PicGate answers them itself
    # (picgate.gateway.tasks)
    task_model: Annotated[str | None, Editable()] = None
    # image models reject or ignore tools: drop tools/tool_choice before they see them
    drop_tools_for_image_models: Annotated[bool, Editable()] = True
    # slow clients (``picgate serve``): a request head must arrive within this many seconds; a
    # body within this many plus one second per 16 KiB received (picgate.middleware)
    request_header_timeout_seconds: float = Field(30.0, gt=0)
    request_body_timeout_seconds: float = Field(30.0, gt=0)
    # ≤ 2047: an image's size is a 32-bit INTEGER column (PostgreSQL refuses larger values)
    max_image_mb: int = Field(50, ge=1, le=2047)
    # the largest non-stream answer (or error body) read from the upstream; parsing costs
    # several times its size in memory
    max_upstream_response_mb: int = Field(200, ge=1)
    stream_keepalive_seconds: float = Field(15.0, gt=0)
    cleanup_interval_minutes: float = Field(60.0, gt=0)
    log_max_entries: int = Field(5000, ge=100)
    # addresses or CIDRs of the reverse proxies whose X-Forwarded-For / -Proto PicGate believes
    # (comma-separated); empty: the connection's own address is the client's, whatever it sends
    trusted_proxies: str = ""
    log_level: str = "INFO"
    # behind nginx or Caddy: answer /images with this header naming the file and let the proxy
    # send the bytes (picgate.library.sendfile); checked in validate_settings
    sendfile_header: str = ""
    sendfile_prefix: str = ""

    @field_validator(
        "upstream_api_base",
        "upstream_api_key",
        "upstream_model_name",
        "gateway_api_key",
        "public_base_url",
        "r2_account_id",
        "r2_access_key_id",
        "r2_secret_access_key",
        "r2_bucket_name",
        "r2_endpoint_url",
        "r2_public_base_url",
        "secret_key",
        "database_auth_token",
        "metrics_token",
        "models_file",
        "task_model",
        mode="before",
    )
    @classmethod
    def _blank_is_unset(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.strip()
            return value or None
        return value

    @field_validator("chat_image_variant", mode="after")
    @classmethod
    def _variant_query(cls, value: str) -> str:
        return check_variant_text(value)

    # -- derived values -------------------------------------------------------------------

    @property
    def serverless(self) -> bool:
        if self.runtime_mode == "auto":
            return bool(os.environ.get("AWS_LAMBDA_FUNCTION_NAME"))
        return self.runtime_mode == "serverless"

    @property
    def resolved_images_dir(self) -> Path:
        if self.images_dir is not None:
            return self.images_dir
        if self.serverless:
            return Path("/tmp/picgate/images")
        return self.data_dir / "images"

    @property
    def r2_configured(self) -> bool:
        return bool(self.r2_bucket_name and self.r2_access_key_id and self.r2_secret_access_key)

    @property
    def r2_endpoint(self) -> str | None:
        if self.r2_endpoint_url:
            return self.r2_endpoint_url
        if self.r2_account_id:
            return f"https://{self.r2_account_id}.r2.cloudflarestorage.com"
        return None

    @property
    def upstream_configured(self) -> bool:
        return bool(self.upstream_api_base)

    def missing_upstream(self) -> list[str]:
        return [] if self.upstream_api_base else ["UPSTREAM_API_BASE"]

    def fixed_fields(self) -> frozenset[str]:
        """Editable settings pinned by the environment (or by the caller)."""
        return frozenset(self.model_fields_set) & frozenset(EDITABLE)

    def with_stored(self, stored: dict[str, Any]) -> Settings:
        """These settings with stored values applied to every editable field that is not fixed."""
        fixed = self.fixed_fields()
        update = {k: v for k, v in stored.items() if k in EDITABLE and k not in fixed}
        if not update:
            return self
        merged = self.model_dump()
        merged.update(update)
        result = type(self).model_validate(merged)
        # keep the record of what the environment pinned
        object.__setattr__(result, "__pydantic_fields_set__", set(self.model_fields_set))
        return result


def _marked(secret: bool) -> tuple[str, ...]:
    names = []
    for name, field in Settings.model_fields.items():
        marks = [m for m in field.metadata if isinstance(m, Editable)]
        if marks and (marks[0].secret or not secret):
            names.append(name)
    return tuple(names)


# Settings the admin console may change, in the order they are declared.
EDITABLE: tuple[str, ...] = _marked(secret=False)
# Editable settings that are secrets: encrypted at rest, never sent to the browser in full.
SECRETS: frozenset[str] = frozenset(_marked(secret=True))


def check_text(value: str | None) -> None:
    """Refuse text that would break a page, a log line or a header: lone surrogates (they
    cannot be encoded as UTF-8), control characters, and anything over MAX_TEXT characters."""
    if value is None:
        return
    if len(value) > MAX_TEXT:
        raise ValueError(f"must be at most {MAX_TEXT} characters")
    for ch in value:
        if "\ud800" <= ch <= "\udfff":
            raise ValueError("contains a lone surrogate (not valid Unicode text)")
        if unicodedata.category(ch) == "Cc":
            raise ValueError(f"contains a control character (U+{ord(ch):04X})")


def _check_url(
    name: str, value: str | None, *, schemes: tuple[str, ...] = ("http", "https")
) -> None:
    if value is None:
        return
    parts = urlsplit(value)
    if parts.scheme not in schemes or not parts.netloc:
        raise SettingsError(
            f"{name.upper()} must be an absolute {' or '.join(schemes)} URL, got {value!r}"
        )


def trusted_networks(value: str) -> list[str]:
    """``TRUSTED_PROXIES`` as a list of networks (uvicorn's ``forwarded_allow_ips``);
    SettingsError naming the setting for an entry that is not an address or a CIDR."""
    networks: list[str] = []
    for entry in (part.strip() for part in value.split(",")):
        if not entry:
            continue
        try:
            networks.append(str(ipaddress.ip_network(entry, strict=False)))
        except ValueError:
            raise SettingsError(
                f"TRUSTED_PROXIES: {entry[:64]!r} is not an IP address or CIDR "
                "(example: TRUSTED_PROXIES=10.0.0.0/8,127.0.0.1)"
            ) from None
    return networks


def validate_settings(settings: Settings) -> None:
    """Refuse unsafe or impossible combinations; raise SettingsError naming the variable."""
    for name in ("upstream_api_base", "public_base_url", "r2_endpoint_url", "r2_public_base_url"):
        _check_url(name, getattr(settings, name))
    r2_parts = {
        "R2_ACCESS_KEY_ID": settings.r2_access_key_id,
        "R2_SECRET_ACCESS_KEY": settings.r2_secret_access_key,
        "R2_BUCKET_NAME": settings.r2_bucket_name,
    }
    given = [k for k, v in r2_parts.items() if v]
    if given or settings.r2_account_id or settings.r2_endpoint_url:
        missing = [k for k, v in r2_parts.items() if not v]
        if given and missing:
            raise SettingsError(
                f"R2 is half-configured: {', '.join(given)} set but {', '.join(missing)} missing"
            )
        if given and not (settings.r2_account_id or settings.r2_endpoint_url):
            raise SettingsError("R2 is half-configured: set R2_ACCOUNT_ID or R2_ENDPOINT_URL")
    trusted_networks(settings.trusted_proxies)
    key = settings.gateway_api_key
    if key is not None and (key.lower() in PLACEHOLDER_KEYS or len(key) < 8):
        raise SettingsError("GATEWAY_API_KEY is a placeholder or shorter than 8 characters")
    if settings.secret_key is not None and len(settings.secret_key) < 16:
        raise SettingsError("SECRET_KEY must be at least 16 characters")
    if settings.serverless and settings.secret_key is None:
        raise SettingsError("SECRET_KEY is required in serverless mode")
    if settings.serverless and not (settings.r2_configured and settings.r2_endpoint):
        # /tmp is the only disk on Lambda and it goes with the container: R2 holds the images
        raise SettingsError(
            "R2 is required in serverless mode: set R2_BUCKET_NAME, R2_ACCESS_KEY_ID, "
            "R2_SECRET_ACCESS_KEY and R2_ACCOUNT_ID (or R2_ENDPOINT_URL)"
        )
    if not settings.r2_key_prefix or settings.r2_key_prefix.startswith("/"):
        raise SettingsError("R2_KEY_PREFIX must be a relative prefix such as 'images/'")
    check_sendfile(settings)


SENDFILE_HEADERS = ("X-Accel-Redirect", "X-Sendfile")
# what an nginx location may be named here: no spaces, quotes, "?", "#" or percent escapes
_URI_PREFIX = re.compile(r"^/(?:[A-Za-z0-9._~-]+/)*$")


def check_sendfile(settings: Settings) -> None:
    """``SENDFILE_HEADER`` / ``SENDFILE_PREFIX``: a known header, a prefix that fits it."""
    header = settings.sendfile_header.strip()
    prefix = settings.sendfile_prefix.strip()
    if not header:
        if prefix:
            raise SettingsError(
                "SENDFILE_PREFIX is set but SENDFILE_HEADER is empty: set SENDFILE_HEADER to "
                "X-Accel-Redirect or X-Sendfile, or unset SENDFILE_PREFIX"
            )
        return
    if header.lower() not in (h.lower() for h in SENDFILE_HEADERS):
        raise SettingsError(
            f"SENDFILE_HEADER must be empty, X-Accel-Redirect or X-Sendfile, got {header!r}"
        )
    if settings.serverless:
        raise SettingsError(
            "SENDFILE_HEADER cannot be used in serverless mode (no proxy sends the files): unset it"
        )
    if header.lower() == "x-accel-redirect":
        if not _URI_PREFIX.match(prefix) or "/../" in prefix or "/./" in prefix:
            raise SettingsError(
                "SENDFILE_PREFIX must name the proxy's internal location for X-Accel-Redirect, "
                f"a path such as '/_picgate_files/' (starting and ending with '/'), got {prefix!r}"
            )
    elif prefix and (not os.path.isabs(prefix) or ".." in Path(prefix).parts):
        raise SettingsError(
            "SENDFILE_PREFIX must be an absolute folder (where the proxy sees IMAGES_DIR) for "
            f"X-Sendfile, or empty to send IMAGES_DIR's own absolute path, got {prefix!r}"
        )
