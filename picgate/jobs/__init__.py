"""Scheduled work: the cleanup job, its scheduler and lease, the size cap after each store.

``install(services)`` wires it into a ``Services`` (called once from its constructor): the size
cap runs after every store, and in server mode the scheduler joins ``services.background``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from picgate.services import Services


def install(services: Services) -> None:
    from picgate.jobs.eviction import CapGuard

    services.images.on_stored.append(CapGuard(services))
    if not services.serverless:  # Lambda has EventBridge: no need to load the scheduler
        from picgate.jobs.scheduler import register

        register(services)
