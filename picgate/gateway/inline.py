"""The cap on image bytes PicGate inlines into one upstream request (``MAX_INLINE_IMAGES_MB``).

A request of a few KB can name one stored 4 MB image a hundred times (``image_url`` parts, or
markdown in an assistant message, pointing at this gateway's ``/images/...``; or ``image:
[url, url, ...]`` in a JSON edit). Each image is read and encoded once per request, but the body
sent upstream holds every reference's copy, so the cap counts every reference: it bounds the
bytes actually sent (and the memory to encode them), not the distinct images. A JSON edit over the cap is
refused before anything is sent: 413 ``inline_images_too_large``; a chat history over it is
trimmed instead (``trim.py``: older images downscaled, the oldest left out).

What PicGate places counts: images it reads or fetches by URL, and data URLs it moves out of
assistant text. Data URLs left where the client put them (user parts, base64 edit images) are
bounded by ``MAX_REQUEST_BODY_MB``.

Chat history images are resolved by ``history.HistoryImages``; the images of a JSON edit by
``EditImageLoader`` here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import anyio.to_thread

from picgate.errors import BadRequest, Gone, NotFound, PayloadTooLarge
from picgate.gateway.fetch import fetch_image_bytes
from picgate.gateway.references import own_image_id

if TYPE_CHECKING:
    import httpx

    from picgate.config import Settings
    from picgate.gateway.buffers import BufferHold
    from picgate.library.library import ImageLibrary

__all__ = ["EditImageLoader", "InlineBudget"]


@dataclass
class InlineBudget:
    """Bytes inlined so far into one upstream request, against a limit in bytes."""

    limit: int
    used: int = 0

    @classmethod
    def from_mb(cls, megabytes: int) -> InlineBudget:
        return cls(limit=megabytes * 2**20)

    def spend(self, size: int, *, param: str | None = None) -> None:
        """Count ``size`` more bytes; PayloadTooLarge (413) once the total passes the limit."""
        self.used += size
        if self.used > self.limit:
            raise PayloadTooLarge(
                "The images this request refers to by URL would put more than "
                f"{self.limit / 2**20:g} MB into the request sent upstream (every reference "
                "counts, a repeated image too). Refer to fewer images, or raise "
                "MAX_INLINE_IMAGES_MB.",
                param=param,
                code="inline_images_too_large",
            )


@dataclass
class EditImageLoader:
    """The bytes of one image of a JSON edit body: base64, a data URL, or an http(s) URL.

    A URL of this gateway's images (under ``base_url``, or any host when the id exists) is read
    from the store; another URL is fetched through the SSRF guard when
    ``ALLOW_EXTERNAL_IMAGE_FETCH`` is on, else refused. Each image is read, fetched or decoded
    once per request and the same bytes object serves every reference; the bytes of every URL
    reference count against ``budget``. Each image read or fetched by URL is taken from
    ``hold`` (the server-wide ``MAX_BUFFERED_MB``): a stored one before it is read.
    """

    library: ImageLibrary
    http: httpx.AsyncClient
    settings: Settings
    base_url: str
    budget: InlineBudget
    hold: BufferHold
    _by_id: dict[str, bytes] = field(default_factory=dict)
    _by_ref: dict[str, bytes] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        *,
        library: ImageLibrary,
        http: httpx.AsyncClient,
        settings: Settings,
        base_url: str,
        hold: BufferHold,
    ) -> EditImageLoader:
        budget = InlineBudget.from_mb(settings.max_inline_images_mb)
        return cls(library, http, settings, base_url, budget, hold)

    async def __call__(self, ref: str, param: str) -> bytes:
        if not ref.startswith(("http://", "https://")):
            if ref not in self._by_ref:
                self._by_ref[ref] = await anyio.to_thread.run_sync(self.library.decode, ref)
            return self._by_ref[ref]
        data = await self._url(ref, param)
        self.budget.spend(len(data), param=param)
        return data

    async def _url(self, url: str, param: str) -> bytes:
        image_id = own_image_id(url, [self.base_url])
        if image_id is not None:
            if image_id in self._by_id:
                return self._by_id[image_id]
            size = (await self.library.sizes([image_id])).get(image_id)
            try:
                if size is None:
                    raise NotFound("No such image.")
                await self.hold.take(size)
                data = await self.library.serving.read_bytes(image_id)
            except (NotFound, Gone):
                if url.startswith(self.base_url + "/images/"):
                    raise
                # another host's URL that only looks like ours: an external URL after all
            else:
                self._by_id[image_id] = data
                return data
        if url in self._by_ref:
            return self._by_ref[url]
        # a user-given URL: fetched only when the admin allows it, always via the guard
        if not self.settings.allow_external_image_fetch:
            raise BadRequest(
                "External image URLs are not fetched (ALLOW_EXTERNAL_IMAGE_FETCH is off); send "
                "the image as base64 or a data URL.",
                param=param,
                code="external_fetch_disabled",
            )
        data = await fetch_image_bytes(self.http, url, max_bytes=self.settings.max_image_mb * 2**20)
        await self.hold.take(len(data))
        self._by_ref[url] = data
        return data
