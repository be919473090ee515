"""The background upload worker of server mode: drives the upload queue without blocking."""

from __future__ import annotations

import logging

import anyio.to_thread

from picgate.library.uploads import UploadQueue

log = logging.getLogger("picgate")

WAKE_SECONDS = 5.0
BATCH = 100


class UploadWorker:
    """Server mode: runs ``queue.upload_due`` in a thread when the queue's doorbell rings (a new
    image was queued) or every few seconds.

    The container runs ``run`` as a background task; it never blocks the event loop, so a slow
    or unreachable bucket never delays a response.
    """

    def __init__(self, queue: UploadQueue, *, interval: float = WAKE_SECONDS) -> None:
        self.queue = queue
        self.interval = interval
        self.runs = 0

    async def run(self) -> None:
        doorbell = self.queue.doorbell
        doorbell.listen()  # rung once: a first pass at start for rows a previous run left
        while True:
            await doorbell.wait(self.interval)
            try:
                counts = await anyio.to_thread.run_sync(
                    lambda: self.queue.upload_due(limit=BATCH), abandon_on_cancel=True
                )
            except Exception as exc:  # keep the worker alive; the rows stay due
                log.warning("upload worker pass failed: %s", exc)
                continue
            finally:
                self.runs += 1
            if counts["uploaded"] + counts["failed"] + counts["retried"] >= BATCH:
                doorbell.ring()  # a full batch: there may be more waiting
