"""JSON answers that carry megabytes of base64 without encoding them as JSON on the event loop.

An Images API answer with ``response_format=b64_json`` is small JSON around one or more huge
base64 strings. ``json.dumps`` of an 8 MB string scans and copies it (~60 ms here), and
Starlette's ``JSONResponse`` does it on the event loop. Base64 needs no JSON escaping, so
``SplicedJson`` keeps each one as bytes behind a placeholder: ``render()`` dumps the small
rest and splices the bytes in between its pieces (the work is on the small rest only, so it
stays on the event loop), and ``SplicedJsonResponse`` sends the pieces one after another, so
the base64 is neither scanned, escaped nor copied into one body.

The bytes on the wire are exactly what ``JSONResponse`` would send for the same content.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

from starlette.responses import Response
from starlette.types import Receive, Scope, Send


class SplicedJson:
    """``content`` (a JSON-able dict) whose ``blob`` placeholders stand for base64 bytes."""

    def __init__(self, content: dict[str, Any] | None = None) -> None:
        self.content: dict[str, Any] = content if content is not None else {}
        self._token = "pgb64" + secrets.token_hex(12)
        self._blobs: dict[str, bytes] = {}

    def blob(self, encoded: bytes) -> str:
        """A placeholder to put where the base64 text ``encoded`` goes. It must be base64
        (nothing to escape), which the callers' encoders and strict decoders guarantee."""
        key = f"{self._token}n{len(self._blobs)}"
        self._blobs[key] = encoded
        return key

    def render(self) -> list[bytes]:
        """The answer's bytes in pieces: the JSON around the blobs, and the blobs themselves."""
        skeleton = json.dumps(
            self.content, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")
        ).encode("utf-8")
        found = sorted((skeleton.find(key.encode("ascii")), key) for key in self._blobs)
        pieces: list[bytes] = []
        pos = 0
        for at, key in found:
            if at < 0:
                raise ValueError(f"placeholder {key} is not in the answer")
            pieces.append(skeleton[pos:at])
            pieces.append(self._blobs[key])
            pos = at + len(key)
        pieces.append(skeleton[pos:])
        return [piece for piece in pieces if piece]


class SplicedJsonResponse(Response):
    """A JSON response sent as several pieces with one ``Content-Length``."""

    media_type = "application/json"

    def __init__(self, answer: SplicedJson | list[bytes], status_code: int = 200) -> None:
        pieces = answer.render() if isinstance(answer, SplicedJson) else answer
        self.pieces = pieces
        super().__init__(content=b"", status_code=status_code)
        self.headers["content-length"] = str(sum(len(p) for p in pieces))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        last = len(self.pieces) - 1
        for index, piece in enumerate(self.pieces):
            await send({"type": "http.response.body", "body": piece, "more_body": index < last})
        if last < 0:
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        if self.background is not None:
            await self.background()
