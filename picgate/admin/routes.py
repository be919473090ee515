"""The admin console's router: HTML pages under ``/admin``, JSON under ``/admin/api``."""

from __future__ import annotations

from fastapi import APIRouter

from picgate.admin.access_api import router as access_router
from picgate.admin.api import router as api_router
from picgate.admin.models_api import router as models_router
from picgate.admin.pages import router as pages_router

router = APIRouter()
router.include_router(api_router)
router.include_router(access_router)
router.include_router(models_router)
router.include_router(pages_router)
