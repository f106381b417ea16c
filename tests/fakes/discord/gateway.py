"""The fake's gateway: HELLO, heartbeats, IDENTIFY/RESUME, events, and the scripted faults of a real one."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import secrets
from collections.abc import Callable
from typing import Any

import aiohttp
from aiohttp import web

from tests.fakes.discord.state import DiscordState


class Gateway:
    """Speak enough of the gateway protocol for discord.py, one session at a time."""

    def __init__(self, state: DiscordState, *, url: Callable[[], str], notify: Callable[[], None]) -> None:
        self._state = state
        self._url = url
        self._notify = notify
        # Gateway frames the bot sent, tokens redacted; tests can assert presence updates or member requests.
        self.received: list[dict[str, Any]] = []
        self.identify_count = 0
        self.resume_count = 0
        self.ready_generation = 0
        # Scripted faults: a close code to answer IDENTIFY with (4004: the token was refused), and a
        # gateway that accepts the connection but never says HELLO (a connection that hangs).
        self.identify_close_code: int | None = None
        self.silent = False

        self.sockets: set[web.WebSocketResponse] = set()
        self.ws: web.WebSocketResponse | None = None
        self._lock = asyncio.Lock()
        self._session_id: str | None = None
        self._seq = 0
        self._resumable = True

    def is_connected(self) -> bool:
        """Tell whether a bot is identified (or resumed) on an open connection."""
        return self.ws is not None and not self.ws.closed

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Serve one websocket connection until it closes."""
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        self.sockets.add(ws)
        try:
            if self.silent:
                async for _ in ws:
                    pass
                return ws
            await self._send(ws, {"op": 10, "d": {"heartbeat_interval": 41250}, "s": None, "t": None})
            async for frame in ws:
                if frame.type is aiohttp.WSMsgType.TEXT:
                    await self._on_frame(ws, json.loads(frame.data))
        finally:
            self.sockets.discard(ws)
            if self.ws is ws:
                self.ws = None
            self._notify()
        return ws

    async def disconnect(self, *, resumable: bool, code: int) -> None:
        """Close the session's websocket; the next RESUME is accepted only if `resumable`."""
        ws = self.ws
        self.ws = None
        self._resumable = resumable
        self._notify()
        if ws is not None:
            await ws.close(code=code)

    async def close_all(self) -> None:
        """Close every open connection (the fake is shutting down)."""
        for ws in list(self.sockets):
            with contextlib.suppress(Exception):
                await ws.close(code=1001)

    async def send_event(self, event: str, data: dict[str, Any]) -> None:
        """Send an event (op 0) on the current session."""
        assert self.ws is not None, "no gateway session"
        await self._send_event(self.ws, event, data)

    async def _send(self, ws: web.WebSocketResponse, payload: dict[str, Any]) -> None:
        # One lock for all sockets keeps frames whole and sequence numbers in send order.
        async with self._lock:
            if not ws.closed:
                await ws.send_str(json.dumps(payload))

    async def _send_event(self, ws: web.WebSocketResponse, event: str, data: dict[str, Any]) -> None:
        async with self._lock:
            self._seq += 1
            if not ws.closed:
                await ws.send_str(json.dumps({"op": 0, "t": event, "s": self._seq, "d": data}))

    async def _on_frame(self, ws: web.WebSocketResponse, frame: dict[str, Any]) -> None:
        op = frame.get("op")
        data = frame.get("d")
        recorded = copy.deepcopy(frame)
        if isinstance(recorded.get("d"), dict) and "token" in recorded["d"]:
            recorded["d"]["token"] = "<redacted>"
        self.received.append(recorded)
        if op == 1:
            await self._send(ws, {"op": 11, "d": None, "s": None, "t": None})
        elif op == 2:
            await self._identify(ws, data or {})
        elif op == 6:
            await self._resume(ws, data or {})
        elif op == 8:
            guild_ids = (data or {}).get("guild_id")
            for guild_id in guild_ids if isinstance(guild_ids, list) else [guild_ids]:
                chunk: dict[str, Any] = {
                    "guild_id": str(guild_id),
                    "members": [],
                    "chunk_index": 0,
                    "chunk_count": 1,
                    "not_found": [],
                    "nonce": (data or {}).get("nonce"),
                }
                await self._send_event(ws, "GUILD_MEMBERS_CHUNK", chunk)

    async def _identify(self, ws: web.WebSocketResponse, data: dict[str, Any]) -> None:
        if self.identify_close_code is not None:
            self.identify_count += 1
            await ws.close(code=self.identify_close_code, message=b"refused by the test")
            return
        state = self._state
        self._session_id = secrets.token_hex(16)
        self._seq = 0
        self._resumable = True
        ready: dict[str, Any] = {
            "v": 10,
            "user": {**copy.deepcopy(state.bot_user), "verified": True, "mfa_enabled": False, "flags": 0},
            "guilds": [{"id": str(g), "unavailable": True} for g in state.guild_ids],
            "session_id": self._session_id,
            "session_type": "normal",
            "resume_gateway_url": self._url(),
            "application": {"id": str(state.application_id), "flags": 0},
            "private_channels": [],
            "relationships": [],
            "presences": [],
            "geo_ordered_rtc_regions": [],
        }
        if data.get("shard") is not None:
            ready["shard"] = data["shard"]
        await self._send_event(ws, "READY", ready)
        for guild_id in state.guild_ids:
            await self._send_event(ws, "GUILD_CREATE", state.guild_create(guild_id))
        self.identify_count += 1
        self._became_ready(ws)

    async def _resume(self, ws: web.WebSocketResponse, data: dict[str, Any]) -> None:
        if not self._resumable or data.get("session_id") != self._session_id:
            # Invalid session, not resumable: the client starts over with IDENTIFY.
            await self._send(ws, {"op": 9, "d": False, "s": None, "t": None})
            return
        await self._send_event(ws, "RESUMED", {})
        self.resume_count += 1
        self._became_ready(ws)

    def _became_ready(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws
        self.ready_generation += 1
        self._notify()
