"""The README's install command gets the versions of ``uv.lock``: ``constraints.txt`` is the
lock exported for pip, and it must not drift from the lock."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
EXPORT = ["export", "--quiet", "--frozen", "--no-dev", "--no-emit-project", "--no-hashes"]


def uv() -> str:
    beside = Path(sys.executable).with_name("uv")
    found = str(beside) if beside.is_file() else shutil.which("uv")
    assert found, "uv is part of the test environment (scripts/test.sh installs it)"
    return found


def requirement_lines(text: str) -> list[str]:
    return [
        line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")
    ]


def test_constraints_file_matches_uv_lock() -> None:
    exported = subprocess.run(
        [uv(), *EXPORT], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    shipped = (REPO / "constraints.txt").read_text()
    assert requirement_lines(shipped) == requirement_lines(exported), (
        "constraints.txt is out of date: run "
        "`uv export --frozen --no-dev --no-emit-project --no-hashes -o constraints.txt`"
    )


def test_constraints_file_pins_every_runtime_dependency() -> None:
    pins = {
        line.split("==", 1)[0]
        for line in requirement_lines((REPO / "constraints.txt").read_text())
        if re.match(r"[A-Za-z0-9_.-]+==[0-9]", line)
    }
    for name in ("fastapi", "starlette", "pillow", "sqlalchemy", "uvicorn", "pydantic"):
        assert name in pins


def test_readme_install_command_uses_the_constraints() -> None:
    for readme in ("README.md", "README.en.md"):
        text = (REPO / readme).read_text()
        first = re.search(r"```bash\n(.+?)\n```", text, re.S)
        assert first is not None
        command = first.group(1)
        assert "\n" not in command, f"{readme}: the first command is one line"
        assert "pip install -c constraints.txt ." in command and "picgate serve" in command
