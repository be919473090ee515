"""Imports run one way: routes → domain → storage → db. Nothing below the routes imports the
container (``picgate.services``), so no module of storage, jobs or images, nor the gateway's
parts (the relay, the rewriter, the fetcher, the upstream client), can pull it in."""

from __future__ import annotations

import subprocess
import sys

import pytest

BELOW_THE_ROUTES = [
    "picgate.storage.archive",
    "picgate.storage.codec",
    "picgate.storage.image_store",
    "picgate.storage.incoming",
    "picgate.storage.local",
    "picgate.storage.memory_store",
    "picgate.storage.object_store",
    "picgate.storage.operations",
    "picgate.storage.s3_store",
    "picgate.storage.upload_queue",
    "picgate.images.serving",
    "picgate.gateway.coalesce",
    "picgate.gateway.fetch",
    "picgate.gateway.history",
    "picgate.gateway.inline",
    "picgate.gateway.relay",
    "picgate.gateway.request_json",
    "picgate.gateway.rewrite",
    "picgate.gateway.sse",
    "picgate.gateway.unstreamed",
    "picgate.gateway.upstream",
    "picgate.jobs.cleanup",
    "picgate.jobs.eviction",
    "picgate.jobs.repair",
    "picgate.jobs.scheduler",
    "picgate.jobs.stats",
    "picgate.jobs.upload_worker",
]


@pytest.mark.parametrize("module", BELOW_THE_ROUTES)
def test_module_import_does_not_load_services_or_routes(module: str) -> None:
    code = (
        f"import sys, {module}\n"
        "loaded = [m for m in sys.modules if m == 'picgate.services' or m.endswith('.routes')\n"
        "          or m in ('picgate.app', 'picgate.deps')]\n"
        "assert not loaded, loaded\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_chat_routes_import_does_not_load_the_app_factory() -> None:
    code = (
        "import sys, picgate.gateway.chat_routes\n"
        "assert 'picgate.app' not in sys.modules, 'chat_routes imports picgate.app'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
