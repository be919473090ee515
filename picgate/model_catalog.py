"""The models clients can name: ``MODELS_FILE``'s, plus the ones kept in the database by the
console, merged into one ``ModelTable``.

The console's upstreams and models are one document (``ConsoleModels``, validated by the same
pydantic entries as the file) kept in the ``settings`` table under ``console_models``, sealed
whole with the ``SecretBox`` (it holds upstream keys). The file wins: a console entry whose name
the file also uses is *shadowed* (listed, never routed), and the console refuses to create one.

The rule of a request: when any model is defined (in the file or the console), the merged table
routes and an unknown name is a 404 ``model_not_found``; when none is, ``current()`` is None and
the single upstream of the settings takes every name, as it always did.

Every replica re-reads the row at most every ``REFRESH_SECONDS``, as ``ConfigService`` does.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import Connection, select

from picgate.db.engine import Database
from picgate.db.models import SETTINGS
from picgate.errors import BadRequest, NotFound
from picgate.routing.models_file import ModelEntry, ModelsFile, UpstreamEntry
from picgate.routing.table import ModelTable
from picgate.settings_store import REFRESH_SECONDS, SecretBox, save_setting

__all__ = ["ROW_KEY", "ConsoleModels", "ModelCatalog"]

log = logging.getLogger("picgate")

_Entry = TypeVar("_Entry", bound=BaseModel)

ROW_KEY = "console_models"  # not an EDITABLE setting: ConfigService skips the row


class ConsoleModels(BaseModel):
    """The console's document: the same entries as ``MODELS_FILE``, either list may be empty."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    upstreams: list[UpstreamEntry] = Field(default_factory=list)
    models: list[ModelEntry] = Field(default_factory=list)


def _first_error(exc: ValidationError) -> tuple[str, str]:
    first = exc.errors()[0]
    field = ".".join(str(p) for p in first.get("loc", ())) or "body"
    return field, str(first.get("msg", "invalid value"))


class ModelCatalog:
    """The effective model table (file + console) and the console's writes to its part.

    ``box`` is called on first use (the secret key is loaded lazily). ``on_secrets`` gets every
    upstream key (file and console) whenever the console's part is loaded or saved, for the
    redactor.
    """

    def __init__(
        self,
        db: Database,
        box: Callable[[], SecretBox],
        *,
        file: ModelsFile | None = None,
        source: Path | None = None,
        on_secrets: Callable[[Sequence[str]], None] | None = None,
    ) -> None:
        self.db = db
        self._box = box
        self.file = file
        self.source = source
        self._on_secrets = on_secrets
        self._lock = threading.Lock()
        self._console = ConsoleModels()
        self._table: ModelTable | None = self._merge(self._console)
        self._loaded_at = float("-inf")

    # -- reading ---------------------------------------------------------------------------

    def _read(self, conn: Connection) -> ConsoleModels:
        value = conn.scalar(select(SETTINGS.c.value).where(SETTINGS.c.key == ROW_KEY))
        if value is None:
            return ConsoleModels()
        raw = self._box().open(value)
        if raw is None:
            log.warning("stored console models cannot be decrypted (SECRET_KEY changed?)")
            return ConsoleModels()
        try:
            return ConsoleModels.model_validate(json.loads(raw))
        except (ValueError, ValidationError):
            log.warning("stored console models are invalid; the console's models are ignored")
            return ConsoleModels()

    def _merge(self, console: ConsoleModels) -> ModelTable | None:
        file_upstreams = list(self.file.upstreams) if self.file else []
        file_models = list(self.file.models) if self.file else []
        taken_u = {u.name for u in file_upstreams}
        taken_m = {m.name for m in file_models}
        upstreams = file_upstreams + [u for u in console.upstreams if u.name not in taken_u]
        known = {u.name for u in upstreams}
        models = file_models + [
            m for m in console.models if m.name not in taken_m and m.upstream in known
        ]
        if not models:
            return None
        merged = ModelsFile.model_construct(upstreams=upstreams, models=models)
        return ModelTable(merged, source=self.source)

    def _use(self, console: ConsoleModels) -> ModelTable | None:
        table = self._merge(console)
        with self._lock:
            self._console, self._table = console, table
            self._loaded_at = time.monotonic()
        if self._on_secrets is not None:
            self._on_secrets(self.secrets())
        return table

    def _stale(self) -> bool:
        return time.monotonic() - self._loaded_at > REFRESH_SECONDS

    def current(self) -> ModelTable | None:
        """The table requests route by (None: no model anywhere, the single upstream rules)."""
        if self._stale():
            return self._use(self.db.read(self._read))
        return self._table

    async def acurrent(self) -> ModelTable | None:
        if self._stale():
            return self._use(await self.db.aread(self._read))
        return self._table

    def console(self) -> ConsoleModels:
        self.current()
        return self._console

    def secrets(self) -> list[str]:
        entries = [*(self.file.upstreams if self.file else []), *self._console.upstreams]
        return [u.api_key for u in entries if u.api_key]

    def file_upstream(self, name: str) -> bool:
        return self.file is not None and any(u.name == name for u in self.file.upstreams)

    def file_model(self, name: str) -> bool:
        return self.file is not None and any(m.name == name for m in self.file.models)

    # -- writing ---------------------------------------------------------------------------

    def _write(self, change: Callable[[ConsoleModels], ConsoleModels]) -> ConsoleModels:
        def work(conn: Connection) -> ConsoleModels:
            updated = change(self._read(conn))
            sealed = self._box().seal(updated.model_dump_json())
            now = datetime.now(UTC).replace(tzinfo=None)
            save_setting(conn, ROW_KEY, sealed, secret=True, now=now)
            return updated

        updated = self.db.write(work)
        self._use(updated)
        return updated

    def save_upstream(self, name: str, values: dict[str, Any]) -> UpstreamEntry:
        """Create or replace the console upstream ``name`` (BadRequest naming the field for a
        refused value). ``api_key`` absent keeps the stored key, but only while ``base_url``
        keeps its host: a stored key is never sent to a new host without being entered again.
        ``timeout_seconds`` and ``retries`` absent keep their stored values (the console's form
        does not show them); an explicit null clears them."""
        if self.file_upstream(name):
            raise BadRequest(
                f"the upstream {name!r} is defined in MODELS_FILE and is read-only here; "
                "choose another name",
                param="name",
                code="read_only",
            )
        made: list[UpstreamEntry] = []

        def change(doc: ConsoleModels) -> ConsoleModels:
            old = next((u for u in doc.upstreams if u.name == name), None)
            fields = {k: v for k, v in values.items() if k != "api_key" or v is not None}
            fields["name"] = name
            if "api_key" not in fields and old is not None and old.api_key:
                if _host(old.base_url) != _host(str(values.get("base_url", ""))):
                    raise BadRequest(
                        "base_url points to another host: enter api_key again in the same save "
                        "(the stored key is never sent to a new host)",
                        param="api_key",
                        code="invalid_value",
                    )
                fields["api_key"] = old.api_key
            if old is not None:
                for kept in ("timeout_seconds", "retries"):
                    fields.setdefault(kept, getattr(old, kept))
            entry = _validated(UpstreamEntry, fields)
            made.append(entry)
            others = [u for u in doc.upstreams if u.name != name]
            return ConsoleModels(upstreams=[*others, entry], models=doc.models)

        self._write(change)
        return made[0]

    def delete_upstream(self, name: str) -> None:
        def change(doc: ConsoleModels) -> ConsoleModels:
            if not any(u.name == name for u in doc.upstreams):
                raise NotFound(f"no console upstream named {name!r}", code="upstream_not_found")
            users = [m.name for m in doc.models if m.upstream == name]
            if users:
                raise BadRequest(
                    f"the upstream {name!r} is used by the model(s) {', '.join(users)}; "
                    "delete them or point them at another upstream first",
                    param="name",
                    code="upstream_in_use",
                )
            kept = [u for u in doc.upstreams if u.name != name]
            return ConsoleModels(upstreams=kept, models=doc.models)

        self._write(change)

    def save_model(self, name: str, values: dict[str, Any]) -> ModelEntry:
        """Create or replace the console model ``name`` (BadRequest naming the field)."""
        if self.file_model(name):
            raise BadRequest(
                f"the model {name!r} is defined in MODELS_FILE and is read-only here; "
                "choose another name",
                param="name",
                code="read_only",
            )
        made: list[ModelEntry] = []

        def change(doc: ConsoleModels) -> ConsoleModels:
            entry = _validated(ModelEntry, {**values, "name": name})
            known = {u.name for u in doc.upstreams}
            if self.file is not None:
                known |= {u.name for u in self.file.upstreams}
            if entry.upstream not in known:
                shown = ", ".join(sorted(known)) or "none yet: add an upstream first"
                raise BadRequest(
                    f"upstream {entry.upstream!r} is not defined; use one of: {shown}",
                    param="upstream",
                    code="invalid_value",
                )
            made.append(entry)
            others = [m for m in doc.models if m.name != name]
            return ConsoleModels(upstreams=doc.upstreams, models=[*others, entry])

        self._write(change)
        return made[0]

    def delete_model(self, name: str) -> None:
        def change(doc: ConsoleModels) -> ConsoleModels:
            if not any(m.name == name for m in doc.models):
                raise NotFound(f"no console model named {name!r}", code="model_not_found")
            kept = [m for m in doc.models if m.name != name]
            return ConsoleModels(upstreams=doc.upstreams, models=kept)

        self._write(change)


def _host(url: str) -> str:
    parts = urlsplit(url.strip())
    return f"{parts.scheme}://{parts.netloc}".lower()


def _validated(kind: type[_Entry], values: dict[str, Any]) -> _Entry:
    try:
        return kind.model_validate(values)
    except ValidationError as exc:
        field, msg = _first_error(exc)
        raise BadRequest(f"{field}: {msg}", param=field, code="invalid_value") from None
