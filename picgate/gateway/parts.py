"""``GatewayParts``: the components the ``/v1`` code works with, handed in by the routes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from picgate.eventlog import EventLog
from picgate.gateway.buffers import BufferBudget
from picgate.gateway.upstream import Upstream
from picgate.keyring import KeyRing
from picgate.library.library import ImageLibrary

if TYPE_CHECKING:
    import httpx


@dataclass(frozen=True)
class GatewayParts:
    """``library`` stores and serves images, ``events`` logs, ``upstream`` calls the upstream
    API, ``client`` returns the shared outbound client (URL fetches; see ``http``), ``buffers``
    the server-wide budget for the image bytes requests hold (``MAX_BUFFERED_MB``). ``keys`` and
    ``key_id`` are the gateway keys and the named key of this call (None: GATEWAY_API_KEY, which
    is not counted)."""

    library: ImageLibrary
    events: EventLog
    upstream: Upstream
    client: Callable[[], httpx.AsyncClient]
    buffers: BufferBudget
    keys: KeyRing | None = None
    key_id: str | None = None

    @property
    def http(self) -> httpx.AsyncClient:
        """The shared outbound client, asked for only when a call uses it: building it
        (httpcore, the CA bundle) is part of a cold start's first request otherwise, and
        ``GET /v1/models`` or a refused key never needs it."""
        return self.client()

    async def count_images(self, stored: int) -> None:
        """Count ``stored`` images for the call's named key: its usage and daily limit read
        this count. Every place that saves an image of a ``/v1`` call calls it."""
        if stored and self.keys is not None and self.key_id is not None:
            await self.keys.acount_images(self.key_id, stored)
