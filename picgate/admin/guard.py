"""Who is asking: the session cookie, the CSRF checks, and the ``Annotated`` aliases for routes.

JSON routes depend on ``AdminDep`` (a live session, else 401) or ``CsrfAdminDep`` (also the
``X-CSRF-Token`` header, else 403). Pages call ``page_admin`` and redirect when it is None.
Forms posted before a session exists (setup, login) use a double-submit token: a cookie and a
hidden field that must match.
"""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, Request, Response

from picgate.admin import auth
from picgate.admin.auth import AdminContext, AdminLoginRequired, CsrfFailed
from picgate.admin.throttle import HashingGate
from picgate.db.engine import Database
from picgate.deps import DatabaseDep

SESSION_COOKIE = "picgate_session"
FORM_CSRF_COOKIE = "picgate_csrf"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def is_https(request: Request) -> bool:
    return request.url.scheme == "https"


def client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def hashing_gate(request: Request) -> HashingGate:
    """The app's one gate for password checks (made on first use, on the serving loop)."""
    gate: HashingGate | None = getattr(request.app.state, "hashing_gate", None)
    if gate is None:
        gate = request.app.state.hashing_gate = HashingGate()
    return gate


async def admin_ready(request: Request, db: Database) -> bool:
    """Whether an admin account exists (once true, remembered for the process)."""
    if getattr(request.app.state, "admin_ready", False):
        return True
    ready = await db.aread(auth.admin_exists)
    if ready:
        request.app.state.admin_ready = True
    return ready


async def current_admin(request: Request, db: Database) -> AdminContext | None:
    if hasattr(request.state, "admin"):
        admin: AdminContext | None = request.state.admin
        return admin
    token = request.cookies.get(SESSION_COOKIE)
    # a write: loading ends an expired session and refreshes a live one's last use
    admin = await db.awrite(lambda s: auth.load_session(s, token)) if token else None
    request.state.admin = admin
    return admin


async def require_admin(request: Request, db: DatabaseDep) -> AdminContext:
    admin = await current_admin(request, db)
    if admin is None:
        raise AdminLoginRequired("Sign in to the admin console first (/admin/login).")
    return admin


AdminDep = Annotated[AdminContext, Depends(require_admin)]


async def require_csrf(request: Request, admin: AdminDep) -> AdminContext:
    if request.method not in SAFE_METHODS and not auth.tokens_match(
        request.headers.get(CSRF_HEADER), admin.csrf_token
    ):
        raise CsrfFailed("Missing or wrong CSRF token (send the X-CSRF-Token header).")
    return admin


CsrfAdminDep = Annotated[AdminContext, Depends(require_csrf)]


# -- cookies ---------------------------------------------------------------------------------


def set_session_cookie(response: Response, request: Request, token: str) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=int(auth.ABSOLUTE.total_seconds()),
        path="/admin",
        httponly=True,
        samesite="lax",
        secure=is_https(request),
    )


def clear_session_cookie(response: Response, request: Request) -> None:
    response.delete_cookie(
        SESSION_COOKIE, path="/admin", httponly=True, samesite="lax", secure=is_https(request)
    )


def form_csrf_token(request: Request) -> str:
    """The double-submit token for a pre-session form (reused while the cookie lives)."""
    existing = request.cookies.get(FORM_CSRF_COOKIE)
    if existing and 20 <= len(existing) <= 64:
        return existing
    token: str = getattr(request.state, "form_csrf", None) or secrets.token_urlsafe(24)
    request.state.form_csrf = token
    return token


def set_form_csrf_cookie(response: Response, request: Request, token: str) -> None:
    response.set_cookie(
        FORM_CSRF_COOKIE,
        token,
        max_age=3600,
        path="/admin",
        httponly=True,
        samesite="strict",
        secure=is_https(request),
    )


def form_csrf_ok(request: Request, submitted: str | None) -> bool:
    cookie = request.cookies.get(FORM_CSRF_COOKIE)
    return bool(cookie) and auth.tokens_match(submitted, cookie or "")
