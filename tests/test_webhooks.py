"""Tests for the webhook listener: signature checks, replay guard and the HTTP surface."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import pytest

from bot.providers.freepik import FreepikAdapter, WebhookBody
from bot.webhooks import (
    ReplayGuard,
    SignatureError,
    WebhookListener,
    verify_signature,
    webhook_url,
)

NOW = 1_700_000_000.0
RAW_KEY = b"0123456789abcdef0123456789abcdef"
WHSEC = "whsec_" + base64.b64encode(RAW_KEY).decode()
PLAIN_SECRET = "plain-text-secret"
BODY = json.dumps({"task_id": "t-1", "status": "COMPLETED", "generated": ["https://img/1.png"]}).encode()


@dataclass(frozen=True)
class Delivery:
    """What reached the handler, as the provider's own webhook reader parsed it."""

    provider: str
    task_id: str
    status: str
    generated: tuple[str, ...]


def sign(key: bytes, webhook_id: str, timestamp: str, body: bytes) -> str:
    """Return the base64 HMAC-SHA256 the Standard Webhooks scheme expects."""
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    return base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def verify(secret: str = WHSEC, **overrides: object) -> None:
    """Call verify_signature with a valid delivery, overriding any field."""
    args: dict[str, object] = {
        "webhook_id": "msg_1",
        "timestamp": str(int(NOW)),
        "body": BODY,
        "now": NOW,
    }
    args.update(overrides)
    if "signature_header" not in args:
        args["signature_header"] = "v1," + sign(
            RAW_KEY,
            str(args["webhook_id"]),
            str(args["timestamp"]),
            args["body"],  # type: ignore[arg-type]
        )
    verify_signature(secret, **args)  # type: ignore[arg-type]


# --- verify_signature -------------------------------------------------------------------------


def test_whsec_secret_uses_decoded_key() -> None:
    verify(WHSEC)


def test_whsec_secret_text_also_tried_as_raw_bytes() -> None:
    # The text "whsec_..." is also tried as raw bytes, so signing with it passes too.
    header = "v1," + sign(WHSEC.encode(), "msg_1", str(int(NOW)), BODY)
    verify(WHSEC, signature_header=header)


def test_raw_bytes_secret() -> None:
    header = "v1," + sign(PLAIN_SECRET.encode(), "msg_1", str(int(NOW)), BODY)
    verify(PLAIN_SECRET, signature_header=header)


def test_any_of_several_pairs_may_match() -> None:
    good = sign(RAW_KEY, "msg_1", str(int(NOW)), BODY)
    bad = base64.b64encode(b"x" * 32).decode()
    verify(signature_header=f"v1,{bad} v1,{good}")
    verify(signature_header=f"v1,{bad}  v2,{good}")


def test_wrong_signature() -> None:
    wrong = sign(b"another key", "msg_1", str(int(NOW)), BODY)
    with pytest.raises(SignatureError, match="no matching signature"):
        verify(signature_header=f"v1,{wrong}")


def test_tampered_body() -> None:
    header = "v1," + sign(RAW_KEY, "msg_1", str(int(NOW)), BODY)
    with pytest.raises(SignatureError, match="no matching signature"):
        verify(signature_header=header, body=BODY + b" ")


def test_stale_timestamp() -> None:
    with pytest.raises(SignatureError, match="too old"):
        verify(timestamp=str(int(NOW - 360)))


def test_future_timestamp() -> None:
    with pytest.raises(SignatureError, match="future"):
        verify(timestamp=str(int(NOW + 360)))


def test_timestamp_within_tolerance() -> None:
    verify(timestamp=str(int(NOW - 299)))
    verify(timestamp=str(int(NOW + 299)))


@pytest.mark.parametrize(
    ("field_name", "match"),
    [
        ("webhook_id", "missing webhook-id"),
        ("timestamp", "missing webhook-timestamp"),
        ("signature_header", "missing webhook-signature"),
    ],
)
def test_missing_headers(field_name: str, match: str) -> None:
    with pytest.raises(SignatureError, match=match):
        verify(**{field_name: ""})


@pytest.mark.parametrize("timestamp", ["abc", "17e8", " 1700000000", "+1700000000", "1_700_000_000"])
def test_non_numeric_timestamp(timestamp: str) -> None:
    with pytest.raises(SignatureError, match="non-numeric"):
        verify(timestamp=timestamp, signature_header="v1,xyz")


@pytest.mark.parametrize("header", ["garbage", "v1", "v1, ", "v1,"])
def test_malformed_signature_header(header: str) -> None:
    with pytest.raises(SignatureError, match="malformed"):
        verify(signature_header=header)


def test_undecodable_webhook_id_is_rejected_not_crashing() -> None:
    with pytest.raises(SignatureError, match="no matching signature"):
        verify(webhook_id="msg_\udcff", signature_header="v1,AAAA")


async def test_non_utf8_header_bytes_answer_401(harness: Harness) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", harness.listener.bound_port)
    request = (
        b"POST /webhooks/freepik HTTP/1.1\r\nHost: x\r\nwebhook-id: \xff\xfe\r\n"
        b"webhook-timestamp: %d\r\nwebhook-signature: v1,AAAA\r\nContent-Length: 2\r\n"
        b"Connection: close\r\n\r\n{}" % int(NOW)
    )
    writer.write(request)
    status_line = await reader.readline()
    writer.close()
    await writer.wait_closed()
    assert status_line.split()[1] == b"401"


def test_empty_secret_never_verifies() -> None:
    header = "v1," + sign(b"", "msg_1", str(int(NOW)), BODY)
    with pytest.raises(SignatureError, match="no webhook secret"):
        verify("", signature_header=header)


def test_error_message_never_contains_secret() -> None:
    with pytest.raises(SignatureError) as info:
        verify(PLAIN_SECRET, signature_header="v1,AAAA")
    assert PLAIN_SECRET not in str(info.value)


# --- ReplayGuard ------------------------------------------------------------------------------


def test_replay_guard_flags_repeats() -> None:
    guard = ReplayGuard(window=600)
    assert not guard.seen_before("a", NOW)
    assert guard.seen_before("a", NOW + 1)
    assert not guard.seen_before("b", NOW + 1)


def test_replay_guard_evicts_old_entries() -> None:
    guard = ReplayGuard(window=600)
    guard.seen_before("a", NOW)
    assert not guard.seen_before("b", NOW + 601)
    assert len(guard) == 1
    assert not guard.seen_before("a", NOW + 602)


def test_replay_guard_hard_cap() -> None:
    guard = ReplayGuard(window=600, max_entries=3)
    for n in range(10):
        guard.seen_before(f"id{n}", NOW)
    assert len(guard) == 3
    assert guard.seen_before("id9", NOW)


def test_replay_guard_forget() -> None:
    guard = ReplayGuard()
    guard.seen_before("a", NOW)
    guard.forget("a")
    assert not guard.seen_before("a", NOW)


# --- webhook_url ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("public_url", "expected"),
    [
        ("https://bot.example.com", "https://bot.example.com/webhooks/freepik"),
        ("https://bot.example.com/", "https://bot.example.com/webhooks/freepik"),
        ("https://example.com/bot", "https://example.com/bot/webhooks/freepik"),
        ("https://example.com/bot/", "https://example.com/bot/webhooks/freepik"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080/webhooks/freepik"),
    ],
)
def test_webhook_url(public_url: str, expected: str) -> None:
    assert webhook_url(public_url, "freepik") == expected


def test_webhook_url_custom_prefix() -> None:
    assert webhook_url("https://x.org/", "freepik", "hooks/") == "https://x.org/hooks/freepik"
    assert webhook_url("https://x.org", "freepik", "") == "https://x.org/freepik"


@pytest.mark.parametrize(
    ("public_url", "provider"),
    [("bot.example.com", "freepik"), ("ftp://x.org", "freepik"), ("https://x.org", "Free/pik")],
)
def test_webhook_url_rejects_bad_input(public_url: str, provider: str) -> None:
    with pytest.raises(ValueError, match=r"provider|WEBHOOK_PUBLIC_URL"):
        webhook_url(public_url, provider)


# --- the listener, end to end -----------------------------------------------------------------


@dataclass
class Harness:
    listener: WebhookListener
    session: aiohttp.ClientSession
    deliveries: list[Delivery] = field(default_factory=list)
    known: bool = True
    fail: bool = False
    health: dict[str, bool] = field(default_factory=lambda: {"database": True, "gateway": True})

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.listener.bound_port}"

    async def post(
        self,
        body: bytes = BODY,
        *,
        webhook_id: str = "msg_1",
        timestamp: float = NOW,
        key: bytes = RAW_KEY,
        provider: str = "freepik",
    ) -> aiohttp.ClientResponse:
        ts = str(int(timestamp))
        headers = {
            "webhook-id": webhook_id,
            "webhook-timestamp": ts,
            "webhook-signature": "v1," + sign(key, webhook_id, ts, body),
            "content-type": "application/json",
        }
        async with self.session.post(f"{self.base}/webhooks/{provider}", data=body, headers=headers) as resp:
            await resp.read()
            return resp


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    async with aiohttp.ClientSession() as session:
        h: Harness

        # The bot's handler parses the body with the provider's reader (and raises ProviderError for a
        # body of the wrong shape, which the listener answers with 400): so does this one.
        reader = FreepikAdapter(session, api_key="unused", base_url="http://127.0.0.1:9")

        async def on_delivery(provider: str, body: bytes) -> bool:
            parsed = reader.read_delivery(body).body
            assert isinstance(parsed, WebhookBody)
            h.deliveries.append(Delivery(provider, parsed.task_id, parsed.status, tuple(parsed.generated)))
            if h.fail:
                raise RuntimeError("boom")
            return h.known

        async def health() -> dict[str, bool]:
            return dict(h.health)

        listener = WebhookListener(
            secret=WHSEC,
            host="127.0.0.1",
            port=0,
            providers=["freepik"],
            on_delivery=on_delivery,
            health=health,
            max_body_bytes=1024,
            clock=lambda: NOW,
        )
        h = Harness(listener=listener, session=session)
        await listener.start()
        try:
            yield h
        finally:
            await listener.stop()


async def test_valid_delivery_reaches_handler(harness: Harness) -> None:
    resp = await harness.post()
    assert resp.status == 204
    assert harness.deliveries == [
        Delivery(provider="freepik", task_id="t-1", status="COMPLETED", generated=("https://img/1.png",))
    ]


async def test_extra_fields_and_missing_generated_tolerated(harness: Harness) -> None:
    body = json.dumps({"task_id": "t-2", "status": "SOMETHING_NEW", "extra": {"a": 1}}).encode()
    resp = await harness.post(body)
    assert resp.status == 204
    assert harness.deliveries == [Delivery("freepik", "t-2", "SOMETHING_NEW", ())]


async def test_bad_signature_is_401(harness: Harness, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="bot.webhooks"):
        resp = await harness.post(key=b"wrong key")
    assert resp.status == 401
    assert harness.deliveries == []
    assert "no matching signature" in caplog.text
    assert "msg_1" in caplog.text
    assert WHSEC not in caplog.text


async def test_stale_delivery_is_401(harness: Harness) -> None:
    resp = await harness.post(timestamp=NOW - 360)
    assert resp.status == 401
    assert harness.deliveries == []


async def test_missing_headers_are_401(harness: Harness) -> None:
    async with harness.session.post(f"{harness.base}/webhooks/freepik", data=BODY) as resp:
        assert resp.status == 401
    assert harness.deliveries == []


async def test_replayed_id_is_handled_once(harness: Harness) -> None:
    first = await harness.post()
    second = await harness.post()
    assert first.status == 204
    assert second.status == 200
    assert len(harness.deliveries) == 1


async def test_oversized_body_is_413(harness: Harness) -> None:
    body = json.dumps({"task_id": "t-1", "status": "COMPLETED", "generated": ["x" * 2000]}).encode()
    resp = await harness.post(body)
    assert resp.status == 413
    assert harness.deliveries == []


async def test_oversized_chunked_body_is_413(harness: Harness) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(4):
            yield b"x" * 512

    headers = {"webhook-id": "msg_c", "webhook-timestamp": str(int(NOW)), "webhook-signature": "v1,AAAA"}
    async with harness.session.post(
        f"{harness.base}/webhooks/freepik", data=chunks(), headers=headers
    ) as resp:
        assert resp.status == 413
    assert harness.deliveries == []


async def test_unknown_task_is_200(harness: Harness) -> None:
    harness.known = False
    resp = await harness.post()
    assert resp.status == 200
    assert len(harness.deliveries) == 1


async def test_malformed_json_is_400(harness: Harness) -> None:
    resp = await harness.post(b"{not json")
    assert resp.status == 400
    assert harness.deliveries == []


async def test_wrong_shape_is_400(harness: Harness) -> None:
    resp = await harness.post(json.dumps({"data": {"task_id": "t-1"}}).encode())
    assert resp.status == 400
    assert harness.deliveries == []


async def test_handler_failure_is_500_and_retry_allowed(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    harness.fail = True
    with caplog.at_level(logging.ERROR, logger="bot.webhooks"):
        resp = await harness.post()
    assert resp.status == 500
    assert "RuntimeError: boom" in caplog.text
    harness.fail = False
    retry = await harness.post()
    assert retry.status == 204
    assert len(harness.deliveries) == 2


async def test_unknown_route_is_404(harness: Harness) -> None:
    resp = await harness.post(provider="Not-A-Provider")
    assert resp.status == 404
    assert harness.deliveries == []


async def test_a_provider_without_webhooks_is_404(harness: Harness) -> None:
    resp = await harness.post(provider="novita")
    assert resp.status == 404
    assert harness.deliveries == []


async def test_rejection_log_is_rate_limited(harness: Harness, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="bot.webhooks"):
        for n in range(5):
            resp = await harness.post(key=b"wrong", webhook_id=f"msg_{n}")
            assert resp.status == 401
        resp = await harness.post(timestamp=NOW + 360)
        assert resp.status == 401
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(lines) == 2
    assert "no matching signature" in lines[0]
    assert "future" in lines[1]


async def test_healthz_ok(harness: Harness) -> None:
    async with harness.session.get(f"{harness.base}/healthz") as resp:
        assert resp.status == 200
        assert await resp.json() == {"database": True, "gateway": True, "status": "ok"}


async def test_healthz_degraded(harness: Harness) -> None:
    harness.health = {"database": True, "gateway": False}
    async with harness.session.get(f"{harness.base}/healthz") as resp:
        assert resp.status == 503
        assert await resp.json() == {"database": True, "gateway": False, "status": "degraded"}


async def accept_all(provider: str, body: bytes) -> bool:
    return True


async def test_bound_port_before_start_raises() -> None:
    async def health() -> dict[str, bool]:
        return {}

    listener = WebhookListener(
        secret=WHSEC, port=0, providers=["freepik"], on_delivery=accept_all, health=health
    )
    with pytest.raises(RuntimeError):
        _ = listener.bound_port
    await listener.stop()  # harmless when never started
    assert WHSEC not in repr(listener)


def test_empty_secret_refused() -> None:
    async def health() -> dict[str, bool]:
        return {}

    with pytest.raises(ValueError, match="secret"):
        WebhookListener(secret="", port=0, providers=["freepik"], on_delivery=accept_all, health=health)
