"""The console's HTML pages: first-run setup, login, logout, password, and the five tool pages.

With no admin yet, every page leads to ``/admin/setup``; without a session, to ``/admin/login``.
``?lang=en`` (or ``zh``) on any page stores the language in a cookie and reloads the page.
Forms answer with a redirect on success (post/redirect/get) and re-render with a message, and a
fitting status, on failure.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy.exc import IntegrityError

from picgate.admin import auth, backend, guard, i18n, settings_form
from picgate.admin.auth import AdminContext, CsrfFailed, LoginThrottled
from picgate.admin.rendering import AdminRoute, render, static_file
from picgate.admin.throttle import HashingBusy
from picgate.db.engine import Database
from picgate.deps import ConfigDep, DatabaseDep, EventsDep, LibraryDep

router = APIRouter(prefix="/admin", route_class=AdminRoute)

NAV = ("dashboard", "settings", "cache", "images", "logs", "keys", "models")
JS_PREFIXES = ("js.", "badge.", "sort.", "result.", "step.")


def translator(request: Request) -> i18n.Translator:
    return i18n.Translator(request.cookies.get(i18n.COOKIE) or i18n.DEFAULT_LANGUAGE)


def redirect(path: str) -> RedirectResponse:
    return RedirectResponse(path, status_code=303)


def language_switch(request: Request) -> Response | None:
    """``?lang=xx``: remember the language and reload the page without the parameter."""
    lang = request.query_params.get("lang")
    if lang is None:
        return None
    # keep the other parameters: the setup link carries its token in the query
    rest = urlencode([(k, v) for k, v in request.query_params.multi_items() if k != "lang"])
    response = redirect(request.url.path + (f"?{rest}" if rest else ""))
    if lang in i18n.LANGUAGES:
        response.set_cookie(
            i18n.COOKIE, lang, max_age=365 * 86400, path="/admin", samesite="lax", httponly=True
        )
    return response


def context(
    request: Request, page: str, admin: AdminContext | None, **extra: Any
) -> dict[str, Any]:
    t = translator(request)
    other = "en" if t.lang == "zh" else "zh"
    # the switch link keeps the page's query: the setup link's token must survive a switch
    kept = [(k, v) for k, v in request.query_params.multi_items() if k != "lang"]
    return {
        "t": t,
        "lang": t.lang,
        "other_lang": other,
        "lang_href": "?" + urlencode([*kept, ("lang", other)]),
        "page": page,
        "nav": NAV,
        "admin": admin,
        "csrf_token": admin.csrf_token if admin else "",
        "js_strings": t.prefixed(*JS_PREFIXES),
        **extra,
    }


async def gate(request: Request, db: Database) -> AdminContext | Response:
    """The signed-in admin, or where to send the browser instead."""
    switched = language_switch(request)
    if switched is not None:
        return switched
    if not await guard.admin_ready(request, db):
        return redirect("/admin/setup")
    admin = await guard.current_admin(request, db)
    if admin is None:
        return redirect("/admin/login")
    return admin


# -- the tool pages --------------------------------------------------------------------------


@router.get("")
async def dashboard(
    request: Request, db: DatabaseDep, library: LibraryDep, config: ConfigDep
) -> Response:
    admin = await gate(request, db)
    if isinstance(admin, Response):
        return admin
    stats = await backend.dashboard_stats(library, config)
    settings = await config.acurrent()
    # the first-start key is shown once, to the first admin who opens the dashboard
    key = config.take_generated_key()
    return render(
        "dashboard.html",
        context(request, "dashboard", admin, stats=stats, settings=settings, generated_key=key),
    )


@router.get("/settings")
async def settings_page(request: Request, db: DatabaseDep, config: ConfigDep) -> Response:
    admin = await gate(request, db)
    if isinstance(admin, Response):
        return admin
    settings = await config.acurrent()
    groups = settings_form.settings_view(settings)
    return render("settings.html", context(request, "settings", admin, groups=groups))


@router.get("/cache")
async def cache_page(
    request: Request, db: DatabaseDep, library: LibraryDep, config: ConfigDep
) -> Response:
    admin = await gate(request, db)
    if isinstance(admin, Response):
        return admin
    settings = await config.acurrent()
    stats = await backend.cache_stats(library, config)
    cap = settings_form.field_view(settings, "max_local_cache_mb")
    return render("cache.html", context(request, "cache", admin, stats=stats, cap=cap))


@router.get("/images")
async def images_page(request: Request, db: DatabaseDep, config: ConfigDep) -> Response:
    admin = await gate(request, db)
    if isinstance(admin, Response):
        return admin
    settings = await config.acurrent()
    base = (settings.public_base_url or "").rstrip("/")
    return render("images.html", context(request, "images", admin, public_base=base))


@router.get("/logs")
async def logs_page(request: Request, db: DatabaseDep) -> Response:
    admin = await gate(request, db)
    if isinstance(admin, Response):
        return admin
    return render("logs.html", context(request, "logs", admin))


@router.get("/keys")
async def keys_page(request: Request, db: DatabaseDep) -> Response:
    admin = await gate(request, db)
    if isinstance(admin, Response):
        return admin
    return render("keys.html", context(request, "keys", admin))


@router.get("/models")
async def models_page(request: Request, db: DatabaseDep) -> Response:
    admin = await gate(request, db)
    if isinstance(admin, Response):
        return admin
    return render("models.html", context(request, "models", admin))


@router.get("/static/{name}")
async def static(name: str) -> Response:
    return static_file(name)


# -- setup, login, logout, password ----------------------------------------------------------


def auth_page(
    request: Request,
    template: str,
    *,
    error: str | None = None,
    notice: str | None = None,
    username: str = "",
    status_code: int = 200,
    setup_token: str = "",
) -> Response:
    token = guard.form_csrf_token(request)
    page = template.removesuffix(".html")
    response = render(
        template,
        context(
            request,
            page,
            None,
            form_csrf=token,
            error=error,
            notice=notice,
            username=username,
            setup_token=setup_token,
        ),
        status_code=status_code,
    )
    guard.set_form_csrf_cookie(response, request, token)
    return response


@router.get("/setup")
async def setup_form(request: Request, db: DatabaseDep) -> Response:
    switched = language_switch(request)
    if switched is not None:
        return switched
    if await guard.admin_ready(request, db):
        return redirect("/admin/login")
    # a token from the console's link rides along hidden; without one the form asks for it
    given = request.query_params.get("token", "")[:128]
    return auth_page(request, "setup.html", setup_token=given)


@router.post("/setup")
async def setup_submit(
    request: Request, db: DatabaseDep, config: ConfigDep, events: EventsDep
) -> Response:
    if await guard.admin_ready(request, db):
        return redirect("/admin/login")
    form = await request.form()
    username = str(form.get("username", "")).strip()
    password = str(form.get("password", ""))
    given = str(form.get("setup_token", "")).strip()[:128]
    if not guard.form_csrf_ok(request, str(form.get("csrf_token", ""))):
        return auth_page(request, "setup.html", error="auth.error.csrf", status_code=403)
    if not auth.tokens_match(given, auth.setup_token(config.box)):
        events.tally("setup_refused", guard.client_ip(request))
        return auth_page(
            request,
            "setup.html",
            error="auth.error.setup_token",
            username=username,
            status_code=403,
        )
    problem = auth.check_credentials_shape(username, password)
    if problem is None and password != str(form.get("password_confirm", "")):
        problem = "auth.error.mismatch"
    if problem is not None:
        return auth_page(
            request,
            "setup.html",
            error=problem,
            username=username,
            status_code=422,
            setup_token=given,
        )
    try:
        created = await db.awrite(
            lambda s: auth.create_first_admin(s, username=username, password=password)
        )
    except IntegrityError:
        created = False
    if not created:
        return redirect("/admin/login")
    request.app.state.admin_ready = True
    events.info(f"👤 已创建管理员账户: {username}")
    return redirect("/admin/login?created=1")


@router.get("/login")
async def login_form(request: Request, db: DatabaseDep) -> Response:
    switched = language_switch(request)
    if switched is not None:
        return switched
    if not await guard.admin_ready(request, db):
        return redirect("/admin/setup")
    if await guard.current_admin(request, db) is not None:
        return redirect("/admin")
    notice = "setup.done" if request.query_params.get("created") else None
    if request.query_params.get("changed"):
        notice = "password.changed"
    return auth_page(request, "login.html", notice=notice)


@router.post("/login")
async def login_submit(request: Request, db: DatabaseDep, events: EventsDep) -> Response:
    if not await guard.admin_ready(request, db):
        return redirect("/admin/setup")
    form = await request.form()
    username = str(form.get("username", "")).strip()[:128]
    password = str(form.get("password", ""))[: auth.PASSWORD_MAX + 1]
    if not guard.form_csrf_ok(request, str(form.get("csrf_token", ""))):
        return auth_page(request, "login.html", error="auth.error.csrf", status_code=403)
    ip = guard.client_ip(request)
    # an account being guessed from many addresses is slowed down here, never locked out
    delay = await db.aread(lambda s: auth.account_delay(s, username=username))
    if delay > 0:
        await anyio.sleep(delay)

    # counted as a failure before the check (auth.admit), and checked outside any transaction
    # with one of a few hashing slots (throttle.HashingGate): bounded guesses, memory and CPU
    try:
        async with guard.hashing_gate(request).slot():
            ticket = await db.awrite(lambda s: auth.admit(s, username=username, ip=ip))
            ok = await anyio.to_thread.run_sync(
                auth.verify_password, ticket.password_hash, password
            )
    except LoginThrottled:
        events.tally("login_throttled", ip)
        return auth_page(
            request, "login.html", error="auth.error.throttled", username=username, status_code=429
        )
    except HashingBusy as busy:
        events.tally("login_busy", ip)
        page = auth_page(
            request, "login.html", error="auth.error.busy", username=username, status_code=503
        )
        page.headers.update(busy.headers)
        return page
    if not ok or ticket.user_id is None:
        events.tally("login_failed", ip)
        return auth_page(
            request, "login.html", error="auth.error.invalid", username=username, status_code=401
        )
    user_id = ticket.user_id
    token = await db.awrite(lambda s: auth.succeeded(s, username=username, ip=ip, user_id=user_id))
    events.info(f"🔐 管理员已登录: {username}")
    response = redirect("/admin")
    guard.set_session_cookie(response, request, token)
    return response


@router.post("/logout")
async def logout(request: Request, db: DatabaseDep) -> Response:
    admin = await guard.current_admin(request, db)
    if admin is not None:
        form = await request.form()
        if not auth.tokens_match(str(form.get("csrf_token", "")), admin.csrf_token):
            raise CsrfFailed("Missing or wrong CSRF token.")
        token = request.cookies.get(guard.SESSION_COOKIE)
        await db.awrite(lambda s: auth.end_session(s, token))
    response = redirect("/admin/login")
    guard.clear_session_cookie(response, request)
    return response


@router.get("/password")
async def password_form(request: Request, db: DatabaseDep) -> Response:
    admin = await gate(request, db)
    if isinstance(admin, Response):
        return admin
    return render("password.html", context(request, "password", admin))


@router.post("/password")
async def password_submit(request: Request, db: DatabaseDep, events: EventsDep) -> Response:
    admin = await gate(request, db)
    if isinstance(admin, Response):
        return admin
    form = await request.form()
    if not auth.tokens_match(str(form.get("csrf_token", "")), admin.csrf_token):
        raise CsrfFailed("Missing or wrong CSRF token.")
    current = str(form.get("current_password", ""))
    new = str(form.get("new_password", ""))
    problem = auth.check_credentials_shape(admin.username, new)
    if problem is None and new != str(form.get("password_confirm", "")):
        problem = "auth.error.mismatch"
    if problem is None:
        changed = await db.awrite(
            lambda s: auth.change_password(s, admin.user_id, current=current, new=new)
        )
        if changed:
            events.info(f"🔑 管理员已修改密码: {admin.username}")
            response = redirect("/admin/login?changed=1")
            guard.clear_session_cookie(response, request)
            return response
        problem = "password.error.current"
    return render(
        "password.html", context(request, "password", admin, error=problem), status_code=422
    )
