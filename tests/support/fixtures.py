"""The captured upstream shapes in ``tests/fixtures/upstream`` (override: PICGATE_FIXTURES)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
FIXTURES = Path(os.environ.get("PICGATE_FIXTURES") or REPO / "tests" / "fixtures" / "upstream")


def load_json(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    data.pop("_note", None)
    return data


def load_sse(name: str) -> bytes:
    """An SSE fixture without its leading ``#`` notes (they are not SSE)."""
    lines = (FIXTURES / name).read_text().splitlines(keepends=True)
    return "".join(line for line in lines if not line.startswith("#")).encode()
