"""The /metrics listener: its own port (METRICS_PORT), so it works with webhooks on or off."""

from __future__ import annotations

import logging

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.aiohttp import make_aiohttp_handler

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
        self._host = host
        self._port = port
        self._runner: web.AppRunner | None = None

    def __repr__(self) -> str:
        return f"MetricsListener(host={self._host!r}, port={self._port!r})"

    @property
    def bound_port(self) -> int:
        """Return the port actually listened on (useful with port=0)."""
        if self._runner is None or not self._runner.addresses:
            raise RuntimeError("metrics listener is not running")
        port: int = self._runner.addresses[0][1]
        return port

    async def start(self) -> None:
        if self._runner is not None:
            raise RuntimeError("metrics listener already started")
        app = web.Application()
        # prometheus_client's own handler: content negotiation (text or OpenMetrics) and gzip.
        app.router.add_get("/metrics", make_aiohttp_handler(self._registry))
        # No access log: a scrape every 15 s would drown the bot's own lines.
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        try:
            await web.TCPSite(runner, self._host, self._port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        log.info("metrics on %s:%d/metrics", self._host, self.bound_port)

    async def stop(self) -> None:
        """Stop listening; safe to call when not started."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
