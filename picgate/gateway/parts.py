"""``GatewayParts``: the components the ``/v1`` code works with, handed in by the routes."""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from picgate.eventlog import EventLog
from picgate.gateway.upstream import Upstream
from picgate.library.library import ImageLibrary


@dataclass(frozen=True)
class GatewayParts:
    """``library`` stores and serves images, ``events`` logs, ``upstream`` calls the upstream
    API, ``http`` is the shared outbound client (URL fetches)."""

    library: ImageLibrary
    events: EventLog
    upstream: Upstream
    http: httpx.AsyncClient
