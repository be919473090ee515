"""The Lambda layer is built from uv.lock for Amazon Linux 2023 (python3.13: glibc 2.34, x86_64,
manylinux wheels only). Every locked runtime package must have a wheel that runs there, or
``infra/build-lambda-layer.sh`` fails at deploy time (a wheel tagged manylinux_2_35 or newer, or
one built for another Python without an abi3 or pure-Python twin, would not install).

Checked offline: the layer's list is ``uv export`` of the lock, exactly as the script runs it,
and the wheels are the ones uv.lock records for each version."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.tags import Tag, compatible_tags, cpython_tags
from packaging.utils import canonicalize_name, parse_wheel_filename

REPO = Path(__file__).resolve().parents[2]
UV = Path(sys.executable).parent / "uv"
# the runtime serverless.yml names and the glibc of the Amazon Linux it runs on
RUNTIME = (3, 13)
GLIBC_MINOR = 34
# what Amazon Linux 2023 (glibc 2.34) accepts on x86_64, newest first
PLATFORMS = [f"manylinux_2_{minor}_x86_64" for minor in range(GLIBC_MINOR, 4, -1)] + [
    "manylinux2014_x86_64",
    "manylinux2010_x86_64",
    "manylinux1_x86_64",
]
LAMBDA_TAGS = {
    *cpython_tags(RUNTIME, platforms=PLATFORMS),
    *compatible_tags(RUNTIME, "cp{}{}".format(*RUNTIME), platforms=PLATFORMS),
}


def layer_requirements() -> dict[str, str]:
    """name → version, as infra/build-lambda-layer.sh exports them."""
    command = [
        str(UV),
        *("export", "--quiet", "--frozen", "--no-dev", "--no-emit-project", "--no-hashes"),
        *("--prune", "uvicorn"),
    ]
    text = subprocess.run(command, cwd=REPO, check=True, capture_output=True, text=True).stdout
    pins: dict[str, str] = {}
    for line in text.splitlines():
        requirement = line.split(";")[0].strip()
        if "==" in requirement and not requirement.startswith("#"):
            name, version = requirement.split("==")
            pins[canonicalize_name(name)] = version.strip()
    return pins


def locked_wheel_tags() -> dict[tuple[str, str], set[Tag]]:
    lock = tomllib.loads((REPO / "uv.lock").read_text())
    tags: dict[tuple[str, str], set[Tag]] = {}
    for package in lock["package"]:
        key = (canonicalize_name(package["name"]), package["version"])
        for wheel in package.get("wheels", []):
            filename = wheel["url"].rsplit("/", 1)[-1]
            tags.setdefault(key, set()).update(parse_wheel_filename(filename)[3])
    return tags


def test_lambda_layer_every_locked_package_has_a_wheel_for_the_runtime() -> None:
    pins = layer_requirements()
    assert "pillow" in pins and "uvicorn" not in pins and "fastapi" in pins
    wheels = locked_wheel_tags()
    missing = [
        f"{name}=={version}"
        for name, version in sorted(pins.items())
        if not wheels.get((name, version), set()) & LAMBDA_TAGS
    ]
    assert missing == [], f"no wheel for Amazon Linux 2023 / cp313 / x86_64: {missing}"


def test_lambda_layer_runtime_matches_serverless_yml_and_build_script() -> None:
    version = "{}.{}".format(*RUNTIME)
    serverless = (REPO / "serverless.yml").read_text()
    script = (REPO / "infra" / "build-lambda-layer.sh").read_text()
    assert re.search(rf"^  runtime: python{re.escape(version)}$", serverless, re.MULTILINE)
    assert f"__pycache__/handler.cpython-{RUNTIME[0]}{RUNTIME[1]}.pyc" in serverless
    assert re.search(rf"^RUNTIME_VERSION={re.escape(version)}\b", script, re.MULTILINE)
    assert re.search(rf"^GLIBC_MINOR={GLIBC_MINOR}\b", script, re.MULTILINE)


def test_lambda_layer_tags_take_manylinux_2_28_and_refuse_newer_glibc() -> None:
    cp = "cp{}{}".format(*RUNTIME)
    assert Tag(cp, cp, "manylinux_2_28_x86_64") in LAMBDA_TAGS  # Pillow from 12.3
    assert Tag(cp, "abi3", "manylinux_2_34_x86_64") in LAMBDA_TAGS
    assert Tag(cp, cp, "manylinux_2_35_x86_64") not in LAMBDA_TAGS
    assert Tag(cp, cp, "manylinux_2_28_aarch64") not in LAMBDA_TAGS
    assert Tag("cp311", "cp311", "manylinux_2_17_x86_64") not in LAMBDA_TAGS
