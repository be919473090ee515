"""``GET /health``: 200 when the database answers, 503 otherwise."""

from __future__ import annotations

import anyio.to_thread
from fastapi import APIRouter
from fastapi.responses import JSONResponse

from picgate import __version__
from picgate.deps import ConfigDep, DatabaseDep

router = APIRouter()


@router.get("/health")
async def health(db: DatabaseDep, config: ConfigDep) -> JSONResponse:
    try:
        await anyio.to_thread.run_sync(db.ping)
    except Exception as exc:  # any database failure means "not healthy"
        return JSONResponse(
            {"status": "error", "database": "unreachable", "detail": type(exc).__name__},
            status_code=503,
        )
    return JSONResponse(
        {
            "status": "ok",
            "version": __version__,
            "database": "ok",
            "mode": "serverless" if config.base.serverless else "server",
        }
    )
