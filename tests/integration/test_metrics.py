"""GET /metrics over a real socket, parsed with prometheus_client's own parser."""

from __future__ import annotations

from collections.abc import Callable

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Gateway
from tests.support.upstream import StubUpstream

TOKEN = "metrics-token-0123456789"


def _scrape(gateway: Gateway) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    r = httpx.get(gateway.url + "/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(r.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def test_metrics_without_token_setting_is_404(gateway: Gateway) -> None:
    r = httpx.get(gateway.url + "/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "not_found"


def test_metrics_wrong_or_missing_token_is_404(start_gateway: Callable[..., Gateway]) -> None:
    gateway = start_gateway(metrics_token=TOKEN)
    assert httpx.get(gateway.url + "/metrics").status_code == 404
    wrong = {"Authorization": "Bearer metrics-token-wrong"}
    assert httpx.get(gateway.url + "/metrics", headers=wrong).status_code == 404


def test_metrics_scrape_counts_requests_latency_and_stored_images(
    start_gateway: Callable[..., Gateway], upstream: StubUpstream
) -> None:
    gateway = start_gateway(metrics_token=TOKEN)
    url = gateway.url + "/v1/images/generations"
    ok = httpx.post(url, headers=gateway.headers, json={"model": "picgate", "prompt": "a cat"})
    assert ok.status_code == 200, ok.text
    bad = httpx.post(url, headers=gateway.headers, json={"model": "picgate"})
    assert bad.status_code == 400
    samples = _scrape(gateway)

    def requests(status: str) -> float:
        labels = (("model", "picgate"), ("route", "/v1/images/generations"), ("status", status))
        return samples[("picgate_requests_total", labels)]

    assert requests("200") == 1
    assert requests("400") == 1
    assert samples[("picgate_upstream_seconds_count", (("model", "gpt-image-1"),))] == 1
    assert samples[("picgate_images_stored", ())] == 1
    assert samples[("picgate_image_bytes_stored", ())] == len(upstream.image)
    assert samples[("picgate_local_cache_bytes", ())] == len(upstream.image)
    assert samples[("picgate_uploads_pending", ())] == 0
    assert samples[("picgate_uploads_failed", ())] == 0


def test_metrics_two_apps_keep_their_own_counts(start_gateway: Callable[..., Gateway]) -> None:
    first = start_gateway(metrics_token=TOKEN)
    second = start_gateway(metrics_token=TOKEN)
    httpx.get(first.url + "/v1/models", headers=first.headers)
    key = ("picgate_requests_total", (("model", "-"), ("route", "/v1/models"), ("status", "200")))
    assert _scrape(first)[key] == 1
    assert key not in _scrape(second)
