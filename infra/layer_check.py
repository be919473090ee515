"""Checks a built Lambda layer: ``handler.handler`` answers function-URL events from it alone.

    RUNTIME_PYTHON -S infra/layer_check.py .build/layer/python

Run by ``infra/build-lambda-layer.sh`` after every build, with the Lambda runtime's Python
(``-S``: no site-packages of that interpreter, so only the standard library, the layer and
PicGate's code can be imported). It lays the code out as the deployment package does (a copy of
``handler.py`` and ``picgate/`` with hash-checked bytecode, like ``/var/task``), puts the layer
after it (like ``/opt/python``), builds the app from a serverless environment (SQLite in a temp
dir, R2 pointing at a closed local port: nothing connects unless an image is archived) and feeds
``tests/events/function_url_get.json`` to ``handler.handler`` for ``/health``, ``/v1/models`` and
the admin setup page, then the scheduled event to ``handler.cleanup``. The dependencies PicGate
imports lazily (Pillow, boto3, cryptography, argon2, Alembic) are loaded and used once too.
Exits non-zero, naming the failure, when any answer is wrong or a module came from elsewhere.
"""

from __future__ import annotations

import compileall
import io
import json
import os
import py_compile
import shutil
import sys
import sysconfig
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
EVENTS = REPO / "tests" / "events"
KEY = "pg-layer-check-key-0123456789"


def task_copy(task: Path) -> None:
    """handler.py, picgate/ and admin_templates/ as the deployment package holds them
    (docs/DEPLOY.md)."""
    shutil.copy(REPO / "handler.py", task / "handler.py")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(REPO / "picgate", task / "picgate", ignore=ignore)
    shutil.copytree(REPO / "admin_templates", task / "admin_templates", ignore=ignore)
    mode = py_compile.PycInvalidationMode.CHECKED_HASH
    ok = compileall.compile_dir(task, quiet=1, invalidation_mode=mode)
    if not ok:
        raise SystemExit("layer check: PicGate's code does not compile on this Python")


def environment(data: Path) -> None:
    for name in [n for n in os.environ if n.startswith(("R2_", "DATABASE_", "UPSTREAM_"))]:
        del os.environ[name]
    os.environ.update(
        {
            "RUNTIME_MODE": "serverless",
            "AWS_LAMBDA_FUNCTION_NAME": "picgate-layer-check",
            "DATABASE_URL": f"sqlite:///{data}/db/picgate.db",
            "IMAGES_DIR": str(data / "images"),
            "DATA_DIR": str(data),
            "SECRET_KEY": "layer-check-secret-0123456789",
            "GATEWAY_API_KEY": KEY,
            "UPSTREAM_API_BASE": "http://127.0.0.1:9/v1",
            "UPSTREAM_MODEL_NAME": "gpt-image-1",
            "R2_ENDPOINT_URL": "http://127.0.0.1:9",
            "R2_ACCESS_KEY_ID": "layer-check",
            "R2_SECRET_ACCESS_KEY": "layer-check",
            "R2_BUCKET_NAME": "layer-check",
        }
    )


def url_event(path: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((EVENTS / "function_url_get.json").read_text())
    event.pop("_note", None)
    event["rawPath"] = event["requestContext"]["http"]["path"] = path
    event["headers"].update(headers or {})
    return event


def expect(answer: dict[str, Any], status: int, path: str) -> dict[str, Any]:
    if answer.get("statusCode") != status:
        raise SystemExit(f"layer check: {path} answered {answer.get('statusCode')}: {answer}")
    return answer


def lazy_dependencies() -> None:
    """What PicGate imports only when a feature is used: each loads and does one small thing."""
    import alembic.command  # noqa: F401  (migrations)
    import argon2
    import boto3
    from cryptography.fernet import Fernet
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(buffer, "PNG")
    Image.open(io.BytesIO(buffer.getvalue())).thumbnail((16, 16))
    # the R2 client as PicGate builds it from the environment (botocore's data files load)
    boto3.session.Session().client(
        "s3",
        endpoint_url=os.environ["R2_ENDPOINT_URL"],
        region_name="auto",
        aws_access_key_id=os.environ["R2_ACCESS_KEY_ID"],
        aws_secret_access_key=os.environ["R2_SECRET_ACCESS_KEY"],
    )
    Fernet(Fernet.generate_key()).encrypt(b"secret")
    argon2.PasswordHasher(time_cost=1, memory_cost=1024).hash("password")


def foreign_modules(allowed: list[Path]) -> list[str]:
    """Modules loaded from anywhere but the standard library, the layer and the task copy."""
    roots = [str(p.resolve()) for p in allowed]
    foreign = []
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        here = Path(file).resolve() if file else None
        if here and here != Path(__file__).resolve() and not str(here).startswith(tuple(roots)):
            foreign.append(f"{name} ({file})")
    return foreign


def main() -> int:
    if len(sys.argv) != 2 or not Path(sys.argv[1], "fastapi").is_dir():
        raise SystemExit("usage: python -S infra/layer_check.py .build/layer/python")
    layer = Path(sys.argv[1]).resolve()
    if "site" in sys.modules:
        raise SystemExit("layer check: run it with `python -S` (no site-packages)")
    with tempfile.TemporaryDirectory(prefix="picgate-layer-check-") as tmp:
        task, data = Path(tmp, "task"), Path(tmp, "data")
        task.mkdir()
        task_copy(task)
        environment(data)
        sys.path[:0] = [str(task), str(layer)]
        import handler  # the init phase: settings, services, app, migrations

        expect(handler.handler(url_event("/health"), None), 200, "/health")
        auth = {"authorization": f"Bearer {KEY}"}
        models = expect(handler.handler(url_event("/v1/models", auth), None), 200, "/v1/models")
        if json.loads(models["body"])["data"][0]["id"] != "picgate":
            raise SystemExit(f"layer check: /v1/models answered {models['body']}")
        expect(handler.handler(url_event("/admin/setup"), None), 200, "/admin/setup")
        scheduled = json.loads((EVENTS / "eventbridge_scheduled.json").read_text())
        report = handler.cleanup(scheduled, None)
        lazy_dependencies()
        stdlib = [Path(sysconfig.get_paths()[k]) for k in ("stdlib", "platstdlib")]
        foreign = foreign_modules([task, layer, *stdlib])
        if foreign:
            raise SystemExit(f"layer check: modules from outside the layer: {foreign[:10]}")
        handler.LOOP.run_until_complete(handler.services.http.aclose())
    version = ".".join(map(str, sys.version_info[:3]))
    print(
        f"layer check: python {version}, handler answered /health, /v1/models and /admin/setup,"
        f" cleanup ran ({len(report)} jobs reported), {len(sys.modules)} modules, all from"
        " the layer, PicGate's code or the standard library"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
