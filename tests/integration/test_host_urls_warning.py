"""Image URLs follow the request's ``Host`` when ``PUBLIC_BASE_URL`` is unset: said loudly at
start (stderr) and on the dashboard, and not said when it is set."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import closing

import pytest

from picgate.services import Services
from tests.conftest import Gateway
from tests.support.admin import signed_in

WARNING = "WARNING: PUBLIC_BASE_URL is not set"


def test_host_urls_unset_public_base_url_stderr_banner_at_start(
    make_services: Callable[..., Services], capsys: pytest.CaptureFixture[str]
) -> None:
    make_services()
    err = capsys.readouterr().err
    assert WARNING in err
    assert "PUBLIC_BASE_URL=https://" in err  # the fix, in the same breath


def test_host_urls_set_public_base_url_no_banner(
    make_services: Callable[..., Services], capsys: pytest.CaptureFixture[str]
) -> None:
    make_services(public_base_url="https://picgate.example.com")
    assert WARNING not in capsys.readouterr().err


def test_host_urls_dashboard_warns_until_public_base_url_set(
    start_gateway: Callable[..., Gateway],
) -> None:
    gateway = start_gateway()
    client, _ = signed_in(gateway.url)
    with closing(client):
        client.cookies.set("picgate_lang", "en")
        page = client.get("/admin").text
    assert 'id="base-url-health" data-set="no"' in page
    assert "Host header" in page
