"""``GET /metrics``: Prometheus' text format through ``prometheus_client``.

Off unless ``METRICS_TOKEN`` is set; then only a caller sending it as a bearer token gets an
answer (compared in constant time); everyone else gets the 404 of an unknown path. Without
it the app neither imports this module (nor prometheus_client) nor counts, and ``/metrics``
is an unknown path.

Each app has its own ``CollectorRegistry`` (no process-global state: test apps, or two apps in
one process, never share counts). Replicas each expose their own counts; the gauges read from
the database are the same on every replica.

- ``picgate_requests_total{route, model, status}``: ``/v1`` calls as answered (a stream counts
  with the status it started with). ``model`` is the model the call was routed to; without a
  models file, a name other than ``GATEWAY_MODEL_NAME`` is counted as ``other`` so a client
  cannot grow the label set.
- ``picgate_upstream_seconds{model}``: time until the upstream's status line, by upstream model.
- ``picgate_images_stored``, ``picgate_image_bytes_stored``, ``picgate_uploads_pending``,
  ``picgate_uploads_failed``, ``picgate_local_cache_bytes``: read from the database at scrape
  time by ``StoreCollector`` (one query).
"""

from __future__ import annotations

from collections.abc import Iterable

import anyio.to_thread
from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from picgate.config import Settings
from picgate.library.rows import ImageRows

__all__ = ["Metrics", "MetricsMiddleware", "StoreCollector", "router"]

LATENCY_BUCKETS = (0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600)


class StoreCollector(Collector):
    """Gauges of the image library, read from the database when scraped."""

    def __init__(self, rows: ImageRows) -> None:
        self.rows = rows

    def collect(self) -> Iterable[Metric]:
        count, size, pending, failed, local = self.rows.gauges()
        for name, doc, value in (
            ("picgate_images_stored", "Images stored (rows not expired).", count),
            ("picgate_image_bytes_stored", "Bytes of the images stored.", size),
            ("picgate_uploads_pending", "Images waiting for their R2 upload.", pending),
            ("picgate_uploads_failed", "Images whose R2 upload failed (retried slowly).", failed),
            ("picgate_local_cache_bytes", "Bytes of the images with a local copy.", local),
        ):
            yield GaugeMetricFamily(name, doc, value=value)


class Metrics:
    """The registry of one app and the instruments PicGate updates."""

    def __init__(self, rows: ImageRows) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "picgate_requests",
            "API calls by route, model and status.",
            ["route", "model", "status"],
            registry=self.registry,
        )
        self.upstream_seconds = Histogram(
            "picgate_upstream_seconds",
            "Seconds until the upstream answered (its status line), by upstream model.",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(StoreCollector(rows))

    def observe_upstream(self, settings: Settings, seconds: float) -> None:
        self.upstream_seconds.labels(settings.upstream_model_name or "-").observe(seconds)

    def render(self) -> bytes:
        """The text exposition (reads the database: call off the event loop)."""
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Counts every ``/v1`` call with its route template, routed model and status."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        status = 500

        async def recording(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, recording)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            model = scope.get("state", {}).get("model") or "-"
            self.metrics.requests.labels(path, model, str(status)).inc()


router = APIRouter()


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    from picgate.deps import keys_match

    services = request.app.state.services
    token = services.settings.metrics_token
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if not token or scheme.lower() != "bearer" or not keys_match(given.strip(), token):
        raise HTTPException(404)
    body = await anyio.to_thread.run_sync(services.metrics.render)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
