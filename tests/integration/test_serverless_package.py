"""``serverless.yml`` packages offline with serverless v3, into the CloudFormation we expect.

Runs ``npx serverless package`` (serverless v3 from node_modules: ``npm ci``) on a copy of the
files it packages, in a temp dir, with fake AWS credentials and every SSM lookup answered by its
``PICGATE_*`` environment fallback, so no AWS call is made. Skipped only when ``npx`` itself is
missing; a missing ``node_modules`` is a failure that says to run ``npm ci``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
LAYER_ARN = "arn:aws:lambda:us-east-1:123456789012:layer:picgate-test-deps:7"
RUNTIME = "3.13"  # serverless.yml's provider.runtime
TAG = "cpython-313"  # its bytecode's name
pytestmark = pytest.mark.skipif(
    shutil.which("npx") is None, reason="npx (Node.js) is not installed"
)


def ssm_names() -> list[str]:
    """Every ``${env:PICGATE_X, ssm:.../X}`` lookup in serverless.yml (X)."""
    text = (REPO / "serverless.yml").read_text()
    return re.findall(r"\$\{env:PICGATE_([A-Z0-9_]+), ssm:", text)


CODE = ("picgate", "handler.py", "tests")


def runtime_python() -> str:
    """An interpreter of Lambda's Python version if uv finds one (the package's bytecode must be
    its own), else this one: its bytecode is then another runtime's and must stay out."""
    uv = Path(sys.executable).parent / "uv"
    found = subprocess.run(
        [str(uv), "python", "find", "--no-project", RUNTIME], capture_output=True, text=True
    )
    return found.stdout.strip() if found.returncode == 0 else sys.executable


@pytest.fixture(scope="module")
def packaged(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not (REPO / "node_modules" / "serverless").is_dir():
        pytest.fail("serverless v3 is not installed: run `npm ci` in the repository root")
    work = tmp_path_factory.mktemp("sls")
    for name in ("serverless.yml", "handler.py"):
        shutil.copy(REPO / name, work / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for code in ("picgate", "admin_templates"):
        shutil.copytree(REPO / code, work / code, ignore=ignore)
    for junk in ("tests", "docs", "bench", "data", ".venv"):  # must stay out of the zip
        (work / junk).mkdir()
        (work / junk / "junk.py").write_text("# not for Lambda\n")
    # the deploy steps (docs/DEPLOY.md): PicGate's bytecode, validated by the source's hash
    subprocess.run(
        [runtime_python(), "-m", "compileall", "-q", "--invalidation-mode", "checked-hash", *CODE],
        cwd=work,
        check=True,
    )
    (work / "picgate" / "__pycache__" / "app.cpython-312.pyc").write_bytes(b"other runtime")
    (work / "picgate" / "__pycache__" / "app.cpython-311.pyc").write_bytes(b"the old runtime")
    (work / "node_modules").symlink_to(REPO / "node_modules")
    env = {
        "PATH": os.environ["PATH"],
        # serverless and npm keep state in HOME; a fresh one costs ~10 s of first-run set-up,
        # so it lives (git-ignored) in node_modules, and `npm ci` starts it afresh
        "HOME": str(REPO / "node_modules" / ".cache" / "picgate-sls-home"),
        "NPM_CONFIG_UPDATE_NOTIFIER": "false",
        "NO_UPDATE_NOTIFIER": "1",
        "SLS_TELEMETRY_DISABLED": "1",
        "SLS_NOTIFICATIONS_MODE": "off",
        "SLS_INTERACTIVE_SETUP_DISABLE": "1",
        "AWS_ACCESS_KEY_ID": "AKIAFAKEFAKEFAKEFAKE",
        "AWS_SECRET_ACCESS_KEY": "fake-secret",
        "AWS_REGION": "us-east-1",
        "PICGATE_DEPS_LAYER_ARN": LAYER_ARN,
    }
    for name in ssm_names():
        env.setdefault(f"PICGATE_{name}", f"test-value-{name.lower()}")
    result = subprocess.run(
        ["npx", "--no-install", "serverless", "package", "--stage", "test"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return work / ".serverless"


def template(packaged: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(
        (packaged / "cloudformation-template-update-stack.json").read_text()
    )
    return data


def resources(packaged: Path, kind: str) -> dict[str, Any]:
    return {k: v for k, v in template(packaged)["Resources"].items() if v["Type"] == kind}


def test_serverless_yml_reads_every_required_setting_from_ssm() -> None:
    names = set(ssm_names())
    required = {"DATABASE_URL", "SECRET_KEY", "R2_ACCESS_KEY_ID", "R2_SECRET_ACCESS_KEY"}
    assert required | {"R2_BUCKET_NAME", "R2_ACCOUNT_ID", "DEPS_LAYER_ARN"} <= names
    text = (REPO / "serverless.yml").read_text()
    assert not re.search(r"(sk|pg)-[A-Za-z0-9]{8,}", text), "a key-shaped value in serverless.yml"


def test_serverless_package_functions_runtime_arch_and_handlers(packaged: Path) -> None:
    functions = resources(packaged, "AWS::Lambda::Function")
    handlers = {f["Properties"]["Handler"] for f in functions.values()}
    assert handlers == {"handler.handler", "handler.cleanup"}
    for function in functions.values():
        props = function["Properties"]
        assert props["Runtime"] == f"python{RUNTIME}"
        assert props["Architectures"] == ["x86_64"]
        assert props["Layers"] == [LAYER_ARN]
        assert props["Environment"]["Variables"]["RUNTIME_MODE"] == "serverless"
    api = next(
        f["Properties"]
        for f in functions.values()
        if f["Properties"]["Handler"] == "handler.handler"
    )
    assert api["Timeout"] <= 900 and api["MemorySize"] >= 512
    assert api["Environment"]["Variables"]["SECRET_KEY"] == "test-value-secret_key"


def test_serverless_package_function_url_with_cors(packaged: Path) -> None:
    (url,) = resources(packaged, "AWS::Lambda::Url").values()
    props = url["Properties"]
    assert props["AuthType"] == "NONE"
    assert props["TargetFunctionArn"] == {"Fn::GetAtt": ["ApiLambdaFunction", "Arn"]}
    assert "authorization" in props["Cors"]["AllowHeaders"]
    assert not props["Cors"].get("AllowCredentials")


def test_serverless_package_cleanup_runs_hourly(packaged: Path) -> None:
    (rule,) = resources(packaged, "AWS::Events::Rule").values()
    assert rule["Properties"]["ScheduleExpression"] == "rate(1 hour)"
    assert rule["Properties"]["Targets"][0]["Arn"] == {
        "Fn::GetAtt": ["CleanupLambdaFunction", "Arn"]
    }


def test_serverless_package_zip_holds_code_only(packaged: Path) -> None:
    with zipfile.ZipFile(packaged / "picgate.zip") as zipped:
        names = zipped.namelist()
    assert "handler.py" in names and "picgate/app.py" in names
    # the console's templates ride along: the Lambda package is not an installed wheel
    assert "admin_templates/base.html" in names and "admin_templates/static/admin.js" in names
    assert any(n.startswith("picgate/db/migrations/versions/") for n in names)
    for excluded in ("tests/", "docs/", "bench/", "data/", ".venv/", "node_modules/"):
        assert not [n for n in names if n.startswith(excluded)], excluded
    assert "serverless.yml" not in names
    # PicGate's own bytecode for the runtime's Python, hash-checked; nothing else compiled
    pycs = [n for n in names if n.endswith(".pyc")]
    assert all(n.endswith(f".{TAG}.pyc") for n in pycs), pycs
    assert all(
        n.startswith(("picgate/", "admin_templates/", "__pycache__/handler.")) for n in pycs
    ), pycs
    if runtime_python() == sys.executable and sys.implementation.cache_tag != TAG:
        pytest.skip(f"no Python {RUNTIME} here to compile the runtime's bytecode with")
    for name in (
        f"__pycache__/handler.{TAG}.pyc",
        f"picgate/__pycache__/app.{TAG}.pyc",
        f"picgate/db/migrations/versions/__pycache__/0001_initial.{TAG}.pyc",
    ):
        assert name in pycs
    with zipfile.ZipFile(packaged / "picgate.zip") as zipped:
        header = zipped.read(f"picgate/__pycache__/app.{TAG}.pyc")[:8]
    assert int.from_bytes(header[4:8], "little") == 0b11  # PEP 552: checked hash-based
