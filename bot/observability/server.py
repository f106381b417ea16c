"""The /metrics listener: its own port (METRICS_PORT), so it works with webhooks on or off."""

from __future__ import annotations

import logging

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.aiohttp import make_aiohttp_handler

from bot.app_server import AppServer

log = logging.getLogger(__name__)


class MetricsListener:
    """Serve `GET /metrics` from one registry, in the format the scraper asks for (Prometheus text by default)."""

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        port: int,
        host: str = "0.0.0.0",  # noqa: S104 - bound like the webhook listener: the scraper must reach it
    ) -> None:
        self._registry = registry
        self._server = AppServer("metrics listener", host, port, shutdown_timeout=2.0)

    def __repr__(self) -> str:
        return f"MetricsListener(host={self._server.host!r}, port={self._server.port!r})"

    @property
    def bound_port(self) -> int:
        """Return the port actually listened on (useful with port=0)."""
        return self._server.bound_port

    async def start(self) -> None:
        app = web.Application()
        # prometheus_client's own handler: content negotiation (text or OpenMetrics) and gzip.
        app.router.add_get("/metrics", make_aiohttp_handler(self._registry))
        await self._server.start(app)
        log.info("metrics on %s:%d/metrics", self._server.host, self.bound_port)

    async def stop(self) -> None:
        """Stop listening; safe to call when not started."""
        await self._server.stop()
