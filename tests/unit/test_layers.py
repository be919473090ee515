"""The import direction (the import-linter contracts in ``pyproject.toml``) and the promise that
importing PicGate does nothing.

``lint-imports`` runs over the real tree in ``scripts/test.sh``; here it runs over a copy, to show
that the contracts pass as the tree stands and break on a wrong-way import.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--config", str(tree / "pyproject.toml")],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def copy_tree(target: Path) -> Path:
    shutil.copytree(
        ROOT / "picgate", target / "picgate", ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )
    shutil.copy(ROOT / "pyproject.toml", target / "pyproject.toml")
    return target


def add_import(module: Path, line: str) -> None:
    module.write_text(module.read_text() + f"\n{line}\n")


def test_layers_contracts_kept_as_is_broken_by_wrong_way_imports(tmp_path: Path) -> None:
    tree = copy_tree(tmp_path)
    kept = lint_imports(tree)
    assert kept.returncode == 0, kept.stdout + kept.stderr

    # bytes reaching up to the app, and a domain module taking the container
    add_import(tree / "picgate" / "storage" / "local.py", "import picgate.app  # noqa")
    add_import(tree / "picgate" / "gateway" / "chat.py", "import picgate.services  # noqa")
    broken = lint_imports(tree)

    assert broken.returncode == 1, broken.stdout + broken.stderr
    assert "picgate.storage.local -> picgate.app" in broken.stdout
    assert "picgate.gateway.chat -> picgate.services" in broken.stdout
    assert "Only the edges import the container BROKEN" in broken.stdout
    assert "Contracts: 1 kept, 2 broken." in broken.stdout


def test_import_picgate_app_and_cli_creates_nothing(tmp_path: Path) -> None:
    code = "import picgate.app, picgate.cli, picgate.services, picgate.library.library"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert list(tmp_path.iterdir()) == []  # no data folder, no database file, no secret key
