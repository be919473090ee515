"""``handler.py`` as Lambda runs it: captured events in, Lambda-shaped answers out.

The module builds its app at import, from the environment, so the ``lam`` fixture sets the
environment (serverless mode, SQLite in a temp dir, R2 on the moto S3 server, the upstream
stub) and imports ``handler`` afresh once for this test module. Everything else is real:
Mangum, the FastAPI app, the database, the S3 server over HTTP, the upstream over HTTP.
"""

from __future__ import annotations

import asyncio
import base64
import importlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from tests import orm
from tests.conftest import APP_ENV, GATEWAY_KEY, UPSTREAM_KEY
from tests.lambda_support import (
    FakeContext,
    http_event,
    load_event,
    response_body,
    response_cookies,
    response_headers,
)
from tests.orm import Image, LogEntry
from tests.s3server import ACCESS_KEY_ID, SECRET_ACCESS_KEY, S3Server
from tests.support.images import make_image
from tests.support.upstream import StubUpstream

BUCKET = "picgate-lambda"
FUNCTION_URL_HOST = "abcdefghijklmnopqrstuvwxyz012345.lambda-url.us-east-1.on.aws"
# what a Lambda function may return (buffered function URLs and API Gateway alike)
LAMBDA_MAX_RESPONSE = 6 * 2**20
AUTH = {"authorization": f"Bearer {GATEWAY_KEY}"}
URL_EVENTS = ["function_url_get.json", "apigw_http_v2.json", "apigw_rest_v1.json"]


@pytest.fixture(scope="module")
def lam(
    tmp_path_factory: pytest.TempPathFactory, upstream_server: StubUpstream, s3_server: S3Server
) -> Iterator[ModuleType]:
    """``handler`` imported with a serverless environment (built once for this module)."""
    data = tmp_path_factory.mktemp("lambda")
    env = {
        "RUNTIME_MODE": "serverless",
        "AWS_LAMBDA_FUNCTION_NAME": "picgate-test-api",
        "DATABASE_URL": f"sqlite:///{data}/db/picgate.db",
        "IMAGES_DIR": str(data / "tmp-images"),
        "DATA_DIR": str(data),
        "SECRET_KEY": "lambda-test-secret-0123456789",
        "GATEWAY_API_KEY": GATEWAY_KEY,
        "UPSTREAM_API_BASE": upstream_server.base_url,
        "UPSTREAM_API_KEY": UPSTREAM_KEY,
        "UPSTREAM_MODEL_NAME": "gpt-image-1",
        "R2_ENDPOINT_URL": s3_server.endpoint_url,
        "R2_ACCESS_KEY_ID": ACCESS_KEY_ID,
        "R2_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
        "R2_BUCKET_NAME": BUCKET,
    }
    with pytest.MonkeyPatch.context() as mp:
        for name in APP_ENV:
            mp.delenv(name, raising=False)
        for name, value in env.items():
            mp.setenv(name, value)
        sys.modules.pop("handler", None)
        module = importlib.import_module("handler")
    yield module
    module.LOOP.run_until_complete(module.services.http.aclose())
    module.services.db.dispose()
    module.LOOP.close()
    asyncio.set_event_loop(None)
    sys.modules.pop("handler", None)


@pytest.fixture
def bucket(s3_server: S3Server) -> str:
    """The bucket the handler archives to (other tests may have reset the S3 server)."""
    s3_server.start()
    names = [b["Name"] for b in s3_server.client().list_buckets().get("Buckets", [])]
    if BUCKET not in names:
        s3_server.create_bucket(BUCKET)
    return BUCKET


def invoke(lam: ModuleType, event: dict[str, Any]) -> dict[str, Any]:
    answer: dict[str, Any] = lam.handler(event, FakeContext())
    assert len(json.dumps(answer)) < LAMBDA_MAX_RESPONSE, "Lambda would refuse this answer"
    return answer


def generate(lam: ModuleType, upstream: StubUpstream) -> tuple[dict[str, Any], str, str]:
    """POST the captured base64-bodied generation event; the answer, image id and extension."""
    event = load_event("function_url_post_base64.json")
    event["headers"].update(AUTH)
    answer = invoke(lam, event)
    assert answer["statusCode"] == 200, response_body(answer)
    url = json.loads(response_body(answer))["data"][0]["url"]
    match = re.fullmatch(rf"https://{re.escape(FUNCTION_URL_HOST)}/images/([\w-]+)\.(\w+)", url)
    assert match, url
    assert upstream.last("/v1/images/generations").json["prompt"] == "a red fox"
    return answer, match.group(1), match.group(2)


@pytest.mark.parametrize("name", URL_EVENTS)
def test_handler_health_event_answers_json_as_text(lam: ModuleType, name: str) -> None:
    answer = invoke(lam, http_event(name, path="/health"))
    assert answer["statusCode"] == 200
    assert answer["isBase64Encoded"] is False
    assert response_headers(answer)["content-type"].startswith("application/json")
    body = json.loads(answer["body"])
    assert body["status"] == "ok" and body["mode"] == "serverless"


def test_handler_generation_with_base64_body_archives_to_r2_before_returning(
    lam: ModuleType, upstream: StubUpstream, bucket: str, s3_server: S3Server
) -> None:
    answer, image_id, ext = generate(lam, upstream)
    assert answer["isBase64Encoded"] is False
    obj = s3_server.client().get_object(Bucket=bucket, Key=f"images/{image_id}.{ext}")
    assert obj["Body"].read() == upstream.image
    assert obj["ContentType"] == "image/png"
    # log lines and counters were written before the function returned
    assert lam.services.events.pending == 0
    lines = orm.read(
        lam.services.db, lambda s: s.scalar(select(func.count()).select_from(LogEntry))
    )
    assert lines and lines > 0


@pytest.mark.parametrize("name", URL_EVENTS)
def test_handler_image_get_returns_base64_binary_with_correct_bytes(
    lam: ModuleType, upstream: StubUpstream, bucket: str, name: str
) -> None:
    _, image_id, ext = generate(lam, upstream)
    answer = invoke(lam, http_event(name, path=f"/images/{image_id}.{ext}"))
    assert answer["statusCode"] == 200
    assert answer["isBase64Encoded"] is True
    headers = response_headers(answer)
    assert headers["content-type"] == "image/png"
    assert int(headers["content-length"]) == len(upstream.image)
    assert response_body(answer) == upstream.image


def test_handler_image_fetched_back_from_r2_when_tmp_was_emptied(
    lam: ModuleType, upstream: StubUpstream, bucket: str
) -> None:
    """A new container has an empty /tmp: the image comes back from R2, bytes intact."""
    _, image_id, ext = generate(lam, upstream)
    lam.services.cache.path(image_id, ext).unlink()
    answer = invoke(lam, http_event("function_url_get.json", path=f"/images/{image_id}.{ext}"))
    assert answer["statusCode"] == 200 and answer["isBase64Encoded"] is True
    assert response_body(answer) == upstream.image


def test_handler_multipart_edit_binary_body_reaches_upstream_intact(
    lam: ModuleType, upstream: StubUpstream, bucket: str
) -> None:
    source = make_image("PNG", 30_000, seed=7)
    request = httpx.Request(
        "POST",
        f"https://{FUNCTION_URL_HOST}/v1/images/edits",
        data={"prompt": "make it blue", "model": "picgate"},
        files={"image": ("in.png", source, "image/png")},
    )
    body = request.read()
    event = http_event(
        "function_url_get.json",
        method="POST",
        path="/v1/images/edits",
        headers={**AUTH, "content-type": request.headers["content-type"]},
        body=body,
    )
    answer = invoke(lam, event)
    assert answer["statusCode"] == 200, response_body(answer)
    sent = upstream.last("/v1/images/edits").form["image"][0]
    assert sent[1] == source


def test_handler_large_image_redirects_instead_of_inline(
    lam: ModuleType, upstream: StubUpstream, bucket: str
) -> None:
    upstream.image = make_image("PNG", 5_000_000, seed=3)
    assert len(upstream.image) > 4_500_000
    _, image_id, ext = generate(lam, upstream)
    answer = invoke(lam, http_event("function_url_get.json", path=f"/images/{image_id}.{ext}"))
    assert answer["statusCode"] == 302
    assert response_headers(answer)["location"].startswith("http")


def test_handler_large_image_without_local_copy_redirects_to_r2(
    lam: ModuleType, upstream: StubUpstream, bucket: str, s3_server: S3Server
) -> None:
    upstream.image = make_image("PNG", 5_000_000, seed=3)
    _, image_id, ext = generate(lam, upstream)
    lam.services.cache.path(image_id, ext).unlink()  # another container: empty /tmp
    answer = invoke(lam, http_event("function_url_get.json", path=f"/images/{image_id}.{ext}"))
    assert answer["statusCode"] == 302
    location = response_headers(answer)["location"]
    assert location.startswith(s3_server.endpoint_url) and image_id in location
    assert httpx.get(location).content == upstream.image


def test_handler_second_invocation_reuses_built_app(
    lam: ModuleType, upstream: StubUpstream, bucket: str
) -> None:
    client = lam.services.http
    generate(lam, upstream)
    # something else (a test runner, a library) swaps the thread's loop between invocations
    other = asyncio.new_event_loop()
    asyncio.set_event_loop(other)
    try:
        generate(lam, upstream)
    finally:
        other.close()
    invoke(lam, http_event("apigw_rest_v1.json", path="/health"))
    assert lam.BUILDS == 1
    assert lam.app.state.services is lam.services and lam.services.http is client
    assert not client.is_closed


def test_handler_unknown_path_answers_openai_error_shape(lam: ModuleType) -> None:
    answer = invoke(lam, http_event("function_url_get.json", path="/nope", headers=AUTH))
    assert answer["statusCode"] == 404
    assert set(json.loads(answer["body"])["error"]) == {"message", "type", "param", "code"}


def test_handler_image_rows_written_by_handler_are_marked_uploaded(
    lam: ModuleType, upstream: StubUpstream, bucket: str
) -> None:
    _, image_id, _ = generate(lam, upstream)
    row = orm.read(lam.services.db, lambda s: s.get(Image, image_id))
    assert row is not None and row.r2_state == "uploaded"


def _csrf(answer: dict[str, Any]) -> str:
    match = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', response_body(answer).decode())
    if match is None:
        match = re.search(r'value="([^"]+)"[^>]*name="csrf_token"', response_body(answer).decode())
    assert match, "no csrf_token input on the page"
    return match.group(1)


def _cookie_pairs(answer: dict[str, Any]) -> list[str]:
    return [c.split(";", 1)[0] for c in response_cookies(answer)]


def test_handler_admin_login_cookie_round_trip(lam: ModuleType) -> None:
    if importlib.util.find_spec("picgate.admin.routes") is None:
        pytest.skip("the admin console (picgate.admin) is not in this build")
    from tests.support.admin import setup_token

    form_headers = {"content-type": "application/x-www-form-urlencoded"}
    page = invoke(lam, http_event("function_url_get.json", path="/admin/setup"))
    assert page["statusCode"] == 200
    cookies = _cookie_pairs(page)
    form = httpx.QueryParams(
        {
            "username": "lambda-admin",
            "password": "correct horse battery staple",
            "password_confirm": "correct horse battery staple",
            "csrf_token": _csrf(page),
            "setup_token": setup_token("lambda-test-secret-0123456789"),
        }
    )
    done = invoke(
        lam,
        http_event(
            "function_url_get.json",
            method="POST",
            path="/admin/setup",
            headers=form_headers,
            body=str(form).encode(),
            cookies=cookies,
        ),
    )
    assert done["statusCode"] == 303, response_body(done)[:300]

    page = invoke(lam, http_event("function_url_get.json", path="/admin/login", cookies=cookies))
    cookies = _cookie_pairs(page) or cookies
    form = httpx.QueryParams(
        {
            "username": "lambda-admin",
            "password": "correct horse battery staple",
            "csrf_token": _csrf(page),
        }
    )
    login = invoke(
        lam,
        http_event(
            "function_url_get.json",
            method="POST",
            path="/admin/login",
            headers=form_headers,
            body=str(form).encode(),
            cookies=cookies,
        ),
    )
    assert login["statusCode"] == 303, response_body(login)[:300]
    session = [c for c in response_cookies(login) if c.startswith("picgate_session=")]
    assert session and "HttpOnly" in session[0] and "Secure" in session[0]
    dashboard = invoke(
        lam,
        http_event("function_url_get.json", path="/admin", cookies=[session[0].split(";")[0]]),
    )
    assert dashboard["statusCode"] == 200
    assert response_headers(dashboard)["content-type"].startswith("text/html")
    assert dashboard["isBase64Encoded"] is False


def test_cleanup_scheduled_event_returns_report(lam: ModuleType, bucket: str) -> None:
    report = lam.cleanup(load_event("eventbridge_scheduled.json"), FakeContext())
    assert isinstance(report, dict) and report["ran"] is True
    json.dumps(report)  # Lambda serialises the return value
    assert lam.services.events.pending == 0


def test_handler_events_directory_holds_every_shape() -> None:
    names = {p.name for p in Path(__file__).resolve().parents[1].joinpath("events").glob("*.json")}
    assert (
        set(URL_EVENTS) | {"function_url_post_base64.json", "eventbridge_scheduled.json"} <= names
    )
    encoded = load_event("function_url_post_base64.json")
    assert json.loads(base64.b64decode(encoded["body"]))["prompt"] == "a red fox"


def test_handler_import_without_r2_fails_naming_the_variables(tmp_path: Path) -> None:
    """Lambda's init phase fails with a message that says what to set."""
    env = {k: v for k, v in os.environ.items() if k not in APP_ENV}
    env.update(
        AWS_LAMBDA_FUNCTION_NAME="picgate-test-api",  # auto mode → serverless
        DATABASE_URL=f"sqlite:///{tmp_path}/picgate.db",
        SECRET_KEY="lambda-test-secret-0123456789",
    )
    done = subprocess.run(
        [sys.executable, "-c", "import handler"],
        cwd=Path(__file__).resolve().parents[2],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert "SettingsError" in last and "serverless mode" in last
    for name in ("R2_BUCKET_NAME", "R2_ACCESS_KEY_ID", "R2_SECRET_ACCESS_KEY", "R2_ACCOUNT_ID"):
        assert name in last


def test_handler_cold_models_call_without_metrics_or_models_file_leaves_optional_parts_unloaded(
    tmp_path: Path,
) -> None:
    """A cold start that answers ``GET /v1/models`` never loads what only other paths need:
    prometheus_client (METRICS_TOKEN), PyYAML (MODELS_FILE), argon2 (a password check) or the
    outbound HTTP client (a call to the upstream or a URL fetch)."""
    env = {k: v for k, v in os.environ.items() if k not in APP_ENV}
    env.update(
        RUNTIME_MODE="serverless",
        DATABASE_URL=f"sqlite:///{tmp_path}/db/picgate.db",
        IMAGES_DIR=str(tmp_path / "images"),
        SECRET_KEY="lambda-test-secret-0123456789",
        GATEWAY_API_KEY=GATEWAY_KEY,
        UPSTREAM_API_BASE="http://127.0.0.1:9/v1",  # never contacted
        R2_ENDPOINT_URL="http://127.0.0.1:9",
        R2_ACCESS_KEY_ID=ACCESS_KEY_ID,
        R2_SECRET_ACCESS_KEY=SECRET_ACCESS_KEY,
        R2_BUCKET_NAME=BUCKET,
    )
    code = (
        "import json, sys, handler\n"
        "from tests.lambda_support import http_event\n"
        f"event = http_event('function_url_get.json', path='/v1/models', headers={AUTH!r})\n"
        "status = handler.handler(event, None)['statusCode']\n"
        "loaded = [m for m in ('prometheus_client', 'yaml', 'argon2') if m in sys.modules]\n"
        "print(json.dumps([status, loaded, handler.services._http is not None]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=Path(__file__).resolve().parents[2],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [200, [], False]
