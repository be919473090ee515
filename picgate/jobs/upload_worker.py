"""The background upload worker of server mode: drives the upload queue without blocking."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import anyio.to_thread

from picgate.storage.upload_queue import UploadQueue

log = logging.getLogger("picgate")

WAKE_SECONDS = 5.0


class UploadWorker:
    """Server mode: runs ``queue.upload_due`` in a thread when woken (new image) or every few
    seconds.

    ``Services`` runs ``run`` as a background task; it never blocks the event loop, so a slow
    or unreachable bucket never delays a response.
    """

    def __init__(self, queue: UploadQueue, *, interval: float = WAKE_SECONDS) -> None:
        self.queue = queue
        self.interval = interval
        self._event: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.runs = 0

    def wake(self) -> None:
        """Ask for a run soon; callable from any thread, harmless before ``run`` starts."""
        loop, event = self._loop, self._event
        if loop is None or event is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            event.set()
        else:
            loop.call_soon_threadsafe(event.set)

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._event = event = asyncio.Event()
        event.set()  # a first pass at start: rows left pending by a previous run
        limit = 100
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), self.interval)
            event.clear()
            try:
                counts = await anyio.to_thread.run_sync(
                    lambda: self.queue.upload_due(limit=limit), abandon_on_cancel=True
                )
            except Exception as exc:  # keep the worker alive; the rows stay due
                log.warning("upload worker pass failed: %s", exc)
                continue
            finally:
                self.runs += 1
            if counts["uploaded"] + counts["failed"] + counts["retried"] >= limit:
                event.set()  # a full batch: there may be more waiting
