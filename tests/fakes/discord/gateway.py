"""The fake's gateway: HELLO, heartbeats, IDENTIFY/RESUME, events, and the scripted faults of a real one.

Sharding as Discord does it: a client that identifies with `shard: [id, count]` gets a session of that
shard, whose READY and GUILD_CREATEs name only the guilds with `(guild_id >> 22) % count == id`, and an
event about a guild goes to the session of the guild's shard (direct messages to shard 0). Several
processes, each running some shards, can so be connected at once, as on Discord.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

from tests.fakes.discord.state import DiscordState


@dataclass
class _Session:
    """One identified connection: its shard, its id for RESUME and its own sequence numbers."""

    ws: web.WebSocketResponse
    session_id: str
    shard_id: int = 0
    shard_count: int = 1
    seq: int = 0
    resumable: bool = True


def shard_of(guild_id: int | None, shard_count: int) -> int:
    """Return the shard Discord sends a guild's events to (direct messages: shard 0)."""
    return 0 if guild_id is None else (guild_id >> 22) % shard_count


class Gateway:
    """Speak enough of the gateway protocol for discord.py: one session per shard, the latest one in `ws`."""

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
        # The latest session's socket (a bot that runs every shard of one has just that one).
        self.ws: web.WebSocketResponse | None = None
        self._lock = asyncio.Lock()
        self._sessions: dict[str, _Session] = {}  # by session id, kept for RESUME
        self._by_shard: dict[int, _Session] = {}  # the live session of each shard
        self._latest: _Session | None = None

    def is_connected(self) -> bool:
        """Tell whether a bot is identified (or resumed) on an open connection."""
        return self.ws is not None and not self.ws.closed

    def shards_connected(self, shard_ids: list[int]) -> bool:
        """Tell whether each of these shards has a session on an open connection."""
        return all(shard in self._by_shard and not self._by_shard[shard].ws.closed for shard in shard_ids)

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
            for shard, session in list(self._by_shard.items()):
                if session.ws is ws:
                    del self._by_shard[shard]
            self._notify()
        return ws

    async def disconnect(self, *, resumable: bool, code: int) -> None:
        """Close the latest session's websocket; its next RESUME is accepted only if `resumable`."""
        ws = self.ws
        self.ws = None
        if self._latest is not None:
            self._latest.resumable = resumable
        self._notify()
        if ws is not None:
            await ws.close(code=code)

    async def close_all(self) -> None:
        """Close every open connection (the fake is shutting down)."""
        for ws in list(self.sockets):
            with contextlib.suppress(Exception):
                await ws.close(code=1001)

    async def send_event(self, event: str, data: dict[str, Any], *, shard: int | None = None) -> None:
        """Send an event (op 0) to the session of `shard`, else of the guild it is about, else the latest."""
        session = self._session_for(data, shard)
        if session is not None:
            await self._send_session_event(session, event, data)
            return
        assert self.ws is not None, "no gateway session"
        await self._send_event(self.ws, event, data)

    def _session_for(self, data: dict[str, Any], shard: int | None) -> _Session | None:
        if shard is not None:
            assert shard in self._by_shard, f"no session for shard {shard}"
            return self._by_shard[shard]
        if self._latest is None or self._latest.shard_count == 1:
            return None  # one session holds every guild: the latest one
        guild = data.get("guild_id")
        return self._by_shard.get(shard_of(int(guild) if guild else None, self._latest.shard_count))

    def connected_shards(self) -> list[int]:
        return sorted(shard for shard, session in self._by_shard.items() if not session.ws.closed)

    async def _send(self, ws: web.WebSocketResponse, payload: dict[str, Any]) -> None:
        # One lock for all sockets keeps frames whole and sequence numbers in send order.
        async with self._lock:
            if not ws.closed:
                await ws.send_str(json.dumps(payload))

    async def _send_event(self, ws: web.WebSocketResponse, event: str, data: dict[str, Any]) -> None:
        session = next((s for s in self._sessions.values() if s.ws is ws), None)
        if session is not None:
            await self._send_session_event(session, event, data)
            return
        async with self._lock:
            if not ws.closed:
                await ws.send_str(json.dumps({"op": 0, "t": event, "s": None, "d": data}))

    async def _send_session_event(self, session: _Session, event: str, data: dict[str, Any]) -> None:
        async with self._lock:
            session.seq += 1
            if not session.ws.closed:
                await session.ws.send_str(json.dumps({"op": 0, "t": event, "s": session.seq, "d": data}))

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
        shard_id, shard_count = data.get("shard") or [0, 1]
        session = _Session(ws, secrets.token_hex(16), int(shard_id), int(shard_count))
        # A new session of a shard ends its earlier ones: they can no longer be resumed.
        for old in [key for key, s in self._sessions.items() if s.shard_id == session.shard_id]:
            del self._sessions[old]
        self._sessions[session.session_id] = session
        guild_ids = [g for g in state.guild_ids if shard_of(g, session.shard_count) == session.shard_id]
        ready: dict[str, Any] = {
            "v": 10,
            "user": {**copy.deepcopy(state.bot_user), "verified": True, "mfa_enabled": False, "flags": 0},
            "guilds": [{"id": str(g), "unavailable": True} for g in guild_ids],
            "session_id": session.session_id,
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
        await self._send_session_event(session, "READY", ready)
        for guild_id in guild_ids:
            await self._send_session_event(session, "GUILD_CREATE", state.guild_create(guild_id))
        self.identify_count += 1
        self._became_ready(session)

    async def _resume(self, ws: web.WebSocketResponse, data: dict[str, Any]) -> None:
        session = self._sessions.get(str(data.get("session_id")))
        if session is None or not session.resumable:
            # Invalid session, not resumable: the client starts over with IDENTIFY.
            await self._send(ws, {"op": 9, "d": False, "s": None, "t": None})
            return
        session.ws = ws
        session.resumable = True
        await self._send_session_event(session, "RESUMED", {})
        self.resume_count += 1
        self._became_ready(session)

    def _became_ready(self, session: _Session) -> None:
        self._by_shard[session.shard_id] = session
        self._latest = session
        self.ws = session.ws
        self.ready_generation += 1
        self._notify()
