"""A server-wide budget for the image bytes requests make PicGate hold (``MAX_BUFFERED_MB``).

Per-request caps (``MAX_INLINE_IMAGES_MB``, the non-stream answer cap) bound one request, not
the server: sixteen small chat requests that each inline one big stored image reached 1.65 GB
together. Every request that inlines images (chat history, the images of a JSON edit) or buffers
a whole upstream answer (the Images API, a non-stream chat answer, an upstream that ignored
``stream: true``) takes its bytes from one ``BufferBudget`` before it holds them, through a
``BufferHold`` that gives them back when the request is done with them.

A request that cannot get its share waits up to ``wait`` seconds for other requests to give
bytes back; then it is refused with ``503 server_busy`` and ``Retry-After`` (OpenAI's shape),
before it holds anything more. A request asking for more than the whole budget at once is
refused at once. ``peak`` is the most ever held (the figure tests and operators read).

Everything runs on the event loop: no locks. Waiters are plain futures made on the running
loop, so one budget serves event loops that come and go (a Lambda container's invocations).
"""

from __future__ import annotations

import asyncio
from math import ceil
from types import TracebackType

from picgate.errors import ServerBusy

__all__ = ["BufferBudget", "BufferHold"]

# how long a request waits for room; a client retrying after Retry-After sees the same wait
WAIT_SECONDS = 5.0
# bytes taken at a time while an answer streams in: one step per MiB, not one per network read
STEP = 2**20


class BufferBudget:
    """At most ``limit`` bytes held at once by every request of this process together."""

    def __init__(self, limit: int, *, wait: float = WAIT_SECONDS) -> None:
        self.limit = limit
        self.wait = wait
        self.held = 0
        self.peak = 0
        self._waiters: set[asyncio.Future[None]] = set()

    @classmethod
    def from_mb(cls, megabytes: int) -> BufferBudget:
        return cls(megabytes * 2**20)

    def hold(self) -> BufferHold:
        """A new, empty share for one request (release it, or use it as ``async with``)."""
        return BufferHold(self)

    async def acquire(self, size: int, *, already: int = 0) -> None:
        """Take ``size`` bytes, waiting up to ``wait`` seconds; ServerBusy (503) otherwise, and
        at once when ``size`` on top of what the caller ``already`` holds passes the limit."""
        if already + size > self.limit:
            raise self._busy(f"one request needs {_mb(already + size)} MB, more than all of it")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.wait
        while self.held + size > self.limit:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise self._busy("other requests hold it")
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiters.add(waiter)
            try:
                await asyncio.wait({waiter}, timeout=remaining)
            finally:
                self._waiters.discard(waiter)
        self.held += size
        self.peak = max(self.peak, self.held)

    def release(self, size: int) -> None:
        """Give ``size`` bytes back and wake every waiter (each checks again for its share)."""
        self.held -= size
        waiters, self._waiters = self._waiters, set()
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _busy(self, why: str) -> ServerBusy:
        retry = ceil(self.wait)
        return ServerBusy(
            f"PicGate is busy: the memory for images it holds for requests (MAX_BUFFERED_MB = "
            f"{_mb(self.limit)} MB) is taken ({why}). Try again in {retry} s, or raise "
            "MAX_BUFFERED_MB.",
            headers={"Retry-After": str(retry)},
        )


class BufferHold:
    """One request's share of a ``BufferBudget``; ``release`` gives all of it back (idempotent)."""

    def __init__(self, budget: BufferBudget) -> None:
        self.budget = budget
        self.held = 0

    async def take(self, size: int) -> None:
        """``size`` more bytes for this request (see ``BufferBudget.acquire``)."""
        if size <= 0:
            return
        await self.budget.acquire(size, already=self.held)
        self.held += size

    async def cover(self, total: int) -> None:
        """Make the share at least ``total`` bytes, in steps of ``STEP`` (a growing buffer)."""
        if total > self.held:
            await self.take(max(total - self.held, min(STEP, self.budget.limit - self.held)))

    def release(self) -> None:
        held, self.held = self.held, 0
        if held:
            self.budget.release(held)

    async def __aenter__(self) -> BufferHold:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()


def _mb(size: int) -> str:
    return f"{size / 2**20:.3g}"
