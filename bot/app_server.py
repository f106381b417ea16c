"""One aiohttp application served on its own host and port, started and stopped with the bot.

The webhook listener and the /metrics listener each own one: the same set-up, clean-up on a failed bind, the
port actually bound (port 0 in tests) and a stop that is safe to repeat, written once.
"""

from __future__ import annotations

from aiohttp import web


class AppServer:
    """Serve an aiohttp application on `host`:`port`, without an access log (probes and scrapes would drown
    the bot's own lines); `what` names it in the errors of a misuse."""

    def __init__(self, what: str, host: str, port: int, *, shutdown_timeout: float) -> None:
        self._what = what
        self.host = host
        self.port = port  # as configured; `bound_port` is the one listened on
        self._shutdown_timeout = shutdown_timeout
        self._runner: web.AppRunner | None = None

    @property
    def bound_port(self) -> int:
        """Return the port actually listened on (useful with port=0)."""
        if self._runner is None or not self._runner.addresses:
            raise RuntimeError(f"{self._what} is not running")
        port: int = self._runner.addresses[0][1]
        return port

    async def start(self, app: web.Application) -> None:
        """Listen with `app`; a port that cannot be bound leaves nothing behind."""
        if self._runner is not None:
            raise RuntimeError(f"{self._what} already started")
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=self._shutdown_timeout)
        await runner.setup()
        try:
            await web.TCPSite(runner, self.host, self.port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner

    async def stop(self) -> None:
        """Stop listening; safe to call when not started."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
