"""``LazyRouter``: the admin console's stand-in in serverless mode, tested on a small app.

Each app here has routes before and after the stand-in, and a loader that counts its calls, so
the tests see when the router is imported and that the app then routes as an eager one does.
"""

from __future__ import annotations

import pytest
from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from starlette.routing import NoMatchFound

from picgate.lazy_router import LazyRouter


def console() -> APIRouter:
    router = APIRouter(prefix="/admin")

    @router.get("")
    def home() -> dict[str, str]:
        return {"page": "home"}

    @router.get("/items/{item}")
    def item(item: int) -> dict[str, int]:
        return {"item": item}

    return router


def build(lazy: bool) -> tuple[FastAPI, list[int]]:
    calls: list[int] = []

    def load() -> APIRouter:
        calls.append(1)
        return console()

    app = FastAPI()
    app.get("/v1/models")(lambda: {"data": []})
    if lazy:
        app.router.routes.append(LazyRouter(app, "/admin", load))
    else:
        app.include_router(load())
    app.get("/after")(lambda: {"after": True})
    return app, calls


def paths(app: FastAPI) -> list[str]:
    return [r.path for r in app.router.routes if isinstance(r, APIRoute)]


def test_lazy_router_other_paths_answer_without_loading() -> None:
    app, calls = build(lazy=True)
    with TestClient(app) as client:
        assert client.get("/v1/models").json() == {"data": []}
        assert client.get("/after").json() == {"after": True}
        assert client.get("/administrator").status_code == 404  # not under the prefix
    assert calls == []
    assert "/admin" not in paths(app)


def test_lazy_router_first_request_under_prefix_mounts_once_in_eager_order() -> None:
    app, calls = build(lazy=True)
    eager, _ = build(lazy=False)
    with TestClient(app) as client:
        assert client.get("/admin/items/7").json() == {"item": 7}
        assert client.get("/admin").json() == {"page": "home"}
        assert client.get("/admin/items/8").json() == {"item": 8}
    assert calls == [1]
    assert paths(app) == paths(eager)
    assert not [r for r in app.router.routes if isinstance(r, LazyRouter)]


def test_lazy_router_errors_under_prefix_match_the_eager_app() -> None:
    lazy_app, _ = build(lazy=True)
    eager_app, _ = build(lazy=False)
    requests = [
        ("POST", "/admin"),  # 405 with its Allow header
        ("GET", "/admin/items/not-a-number"),  # 422
        ("GET", "/admin/missing"),  # 404
        ("GET", "/admin/"),  # the redirect to /admin
    ]
    with TestClient(lazy_app) as lazy, TestClient(eager_app) as eager:
        for method, path in requests:
            got = lazy.request(method, path, follow_redirects=False)
            want = eager.request(method, path, follow_redirects=False)
            assert (got.status_code, got.json() if got.content else None) == (
                want.status_code,
                want.json() if want.content else None,
            ), path
            assert got.headers.get("allow") == want.headers.get("allow")
            assert got.headers.get("location") == want.headers.get("location")


def test_lazy_router_url_path_for_finds_the_routes_once_mounted() -> None:
    app, _ = build(lazy=True)
    with pytest.raises(NoMatchFound):
        app.url_path_for("item", item="3")
    with TestClient(app) as client:
        client.get("/admin")
    assert app.url_path_for("item", item="3") == "/admin/items/3"
