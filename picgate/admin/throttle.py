"""Bounding the password checks anonymous callers can start before they are authenticated.

``HashingGate``: a password check costs ~19 MiB and a CPU core for a moment (argon2id). Nothing
bounded how many ran at once: 2000 logins from 2000 addresses (no account needed: a missing
account costs a dummy verification) took the server from 77 to 810 MB and saturated the CPU.
At most ``slots`` checks run at once per process; an attempt waits up to ``wait`` seconds for a
slot, and at most ``max_waiting`` wait: past either, ``HashingBusy`` (503 with ``Retry-After``)
before any hashing. Waiting happens on the event loop, holding no worker thread.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from picgate.errors import PicGateError

__all__ = ["HashingBusy", "HashingGate"]

HASHING_SLOTS = 3
HASHING_WAIT_SECONDS = 2.0
HASHING_MAX_WAITING = 32


class HashingBusy(PicGateError):
    status_code = 503
    error_type = "server_error"
    code = "server_busy"


class HashingGate:
    """At most ``slots`` password checks at once; see the module docstring."""

    def __init__(
        self,
        slots: int = HASHING_SLOTS,
        *,
        wait: float = HASHING_WAIT_SECONDS,
        max_waiting: int = HASHING_MAX_WAITING,
    ) -> None:
        self.slots = slots
        self.wait = wait
        self.max_waiting = max_waiting
        self._semaphore: asyncio.Semaphore | None = None  # made on the loop that serves
        self._waiting = 0
        self.refused = 0

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one slot while inside; HashingBusy when none frees up in time."""
        if self._semaphore is None:
            self._semaphore = asyncio.Semaphore(self.slots)
        semaphore = self._semaphore
        if semaphore.locked() and self._waiting >= self.max_waiting:
            self.refused += 1
            raise self.busy()
        self._waiting += 1
        try:
            await asyncio.wait_for(semaphore.acquire(), self.wait)
        except TimeoutError:
            self.refused += 1
            raise self.busy() from None
        finally:
            self._waiting -= 1
        try:
            yield
        finally:
            semaphore.release()

    def busy(self) -> HashingBusy:
        retry = max(1, math.ceil(self.wait))
        return HashingBusy(
            "Too many sign-ins are being checked at once; try again in a moment.",
            headers={"Retry-After": str(retry)},
        )
