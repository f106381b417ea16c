"""bot.safe_download: links reach public addresses only, within size, time and redirect limits.

A server on 127.0.0.2 stands in for "the public internet" (the tests' address policy allows it);
every other loopback address stays refused, and no test ever connects outside 127.0.0.0/8.
"""

from __future__ import annotations

import asyncio
import io
import ipaddress
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from PIL import Image

from bot.core.images import check_image
from bot.core.safe_download import IPAddress, SafeDownloader, is_public_address
from bot.domain.errors import BadInput, Refusal
from bot.ui.words import Words
from tests.fakes.dns import StubResolver
from tests.sentences import sentence

SERVER_HOST = "127.0.0.2"
PUBLIC_STAND_IN = ipaddress.ip_address(SERVER_HOST)
MAX_BYTES = 100_000


def allow_stand_in(ip: IPAddress) -> bool:
    return ip == PUBLIC_STAND_IN or is_public_address(ip)


def png_bytes() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 10, 10)).save(buf, "PNG")
    return buf.getvalue()


IMAGE = png_bytes()


# --- a guard on every connection the tests make ------------------------------------------------


@pytest.fixture
def connections(loopback_connections: list[str]) -> list[str]:
    """The loopback guard of tests/conftest.py, under the name these tests use."""
    return loopback_connections


# --- the stand-in internet ----------------------------------------------------------------------


@dataclass
class Server:
    port: int
    hits: list[str] = field(default_factory=list)

    def url(self, path: str, host: str = SERVER_HOST) -> str:
        return f"http://{host}:{self.port}{path}"


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    stop = asyncio.Event()
    state = Server(port=0)

    @web.middleware
    async def record(request: web.Request, handler: Callable[..., Any]) -> web.StreamResponse:
        state.hits.append(request.path_qs)
        result: web.StreamResponse = await handler(request)
        return result

    async def image(request: web.Request) -> web.Response:
        return web.Response(body=IMAGE, content_type="text/html")  # the type is not trusted either way

    async def exact(request: web.Request) -> web.Response:
        return web.Response(body=b"x" * int(request.match_info["n"]))

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound(request.query["to"])

    async def chain(request: web.Request) -> web.Response:
        n = int(request.match_info["n"])
        raise web.HTTPFound(f"/chain/{n - 1}" if n > 0 else "/image.png")

    async def status(request: web.Request) -> web.Response:
        return web.Response(status=int(request.match_info["code"]), text="nope")

    async def hang(request: web.Request) -> web.Response:
        await stop.wait()
        return web.Response(body=IMAGE)

    async def forever(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        chunk = b"\xff" * 16_384
        while not stop.is_set():
            await resp.write(chunk)
        return resp

    async def trickle(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        while not stop.is_set():
            await resp.write(b"x")
            await asyncio.sleep(0.05)
        return resp

    async def huge_length(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Length": str(10**12)})
        await resp.prepare(request)
        await resp.write(b"\x89PNG")
        await stop.wait()  # a client that tried to read the body would wait for its timeout
        return resp

    app = web.Application(middlewares=[record])
    app.router.add_get("/image.png", image)
    app.router.add_get("/exact/{n}", exact)
    app.router.add_get("/redirect", redirect)
    app.router.add_get("/chain/{n}", chain)
    app.router.add_get("/status/{code}", status)
    app.router.add_get("/hang", hang)
    app.router.add_get("/forever", forever)
    app.router.add_get("/trickle", trickle)
    app.router.add_get("/huge-length", huge_length)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, SERVER_HOST, 0)
    await site.start()
    state.port = runner.addresses[0][1]
    yield state
    stop.set()
    await runner.cleanup()


@dataclass
class Policy:
    """The tests' address policy, remembering what it was asked."""

    asked: list[IPAddress] = field(default_factory=list)

    def __call__(self, ip: IPAddress) -> bool:
        self.asked.append(ip)
        return allow_stand_in(ip)


@pytest.fixture
def resolver() -> StubResolver:
    return StubResolver(
        {
            "images.example.test": [[SERVER_HOST]],
            "evil.example.test": [["127.0.0.1"]],
            "mixed.example.test": [[SERVER_HOST, "10.0.0.1"]],
            "metadata.example.test": [["169.254.169.254"]],
            "v6.example.test": [["::1"]],
            "rebind.example.test": [[SERVER_HOST], ["127.0.0.1"]],
        }
    )


@pytest.fixture
def policy() -> Policy:
    return Policy()


@pytest.fixture
async def downloader(resolver: StubResolver, policy: Policy) -> AsyncIterator[SafeDownloader]:
    dl = SafeDownloader(max_bytes=MAX_BYTES, timeout=0.5, address_allowed=policy, resolver=resolver)
    yield dl
    await dl.close()


async def refused(dl: SafeDownloader, url: str) -> str:
    with pytest.raises(BadInput) as caught:
        await dl.fetch(url)
    return Words().error(caught.value)


# --- fetching what is allowed --------------------------------------------------------------------


async def test_fetches_an_image_by_address(
    downloader: SafeDownloader, server: Server, connections: list[str]
) -> None:
    data = await downloader.fetch(server.url("/image.png"))

    assert data == IMAGE
    assert check_image(data, max_bytes=MAX_BYTES).format == "PNG"
    assert connections == [SERVER_HOST]


async def test_fetches_by_name_connecting_to_the_checked_address(
    downloader: SafeDownloader, server: Server, connections: list[str], resolver: StubResolver, policy: Policy
) -> None:
    data = await downloader.fetch(server.url("/image.png", host="images.example.test"))

    assert data == IMAGE
    assert resolver.calls == ["images.example.test"]
    assert policy.asked == [PUBLIC_STAND_IN]
    assert connections == [SERVER_HOST]


async def test_body_of_exactly_max_bytes_is_accepted(downloader: SafeDownloader, server: Server) -> None:
    assert len(await downloader.fetch(server.url(f"/exact/{MAX_BYTES}"))) == MAX_BYTES


async def test_follows_up_to_max_redirects(
    downloader: SafeDownloader, server: Server, connections: list[str]
) -> None:
    data = await downloader.fetch(server.url("/chain/2"))  # 3 redirects: /chain/2, 1, 0

    assert data == IMAGE
    assert server.hits == ["/chain/2", "/chain/1", "/chain/0", "/image.png"]
    assert connections == [SERVER_HOST] * 4  # no pooled connection outlives its check


async def test_follows_a_relative_redirect(downloader: SafeDownloader, server: Server) -> None:
    assert await downloader.fetch(server.url("/redirect?to=/image.png")) == IMAGE


async def test_accepts_a_link_in_discord_angle_brackets(downloader: SafeDownloader, server: Server) -> None:
    assert await downloader.fetch(f"<{server.url('/image.png')}>") == IMAGE


# --- addresses that are not public --------------------------------------------------------------


NOT_PUBLIC = "That link points to a private or local network address; send a link to a public website."


@pytest.mark.parametrize(
    ("url", "address"),
    [
        ("http://127.0.0.1:{port}/image.png", "127.0.0.1"),
        ("http://10.0.0.1/", "10.0.0.1"),
        ("http://169.254.169.254/latest/meta-data", "169.254.169.254"),
        ("http://[::1]:{port}/image.png", "::1"),
        ("http://[::ffff:127.0.0.1]:{port}/image.png", "::ffff:127.0.0.1"),
        ("http://2130706433:{port}/image.png", "127.0.0.1"),
        ("http://0x7f000001:{port}/image.png", "127.0.0.1"),
        ("http://127.1:{port}/image.png", "127.0.0.1"),
        ("http://127.0.0.1.:{port}/image.png", "127.0.0.1"),
        ("https://192.168.1.1/", "192.168.1.1"),
        ("http://[fe80::1%25eth0]/", "fe80::1%eth0"),
    ],
)
async def test_ip_literals_are_refused_before_any_connection(
    downloader: SafeDownloader,
    server: Server,
    connections: list[str],
    resolver: StubResolver,
    policy: Policy,
    url: str,
    address: str,
) -> None:
    reason = await refused(downloader, url.format(port=server.port))

    assert reason == NOT_PUBLIC
    assert policy.asked == [ipaddress.ip_address(address)]  # the address check said no...
    assert connections == []  # ...before anything was connected
    assert resolver.calls == []
    assert server.hits == []


@pytest.mark.parametrize(
    "name", ["evil.example.test", "mixed.example.test", "metadata.example.test", "v6.example.test"]
)
async def test_names_resolving_to_refused_addresses_are_refused(
    downloader: SafeDownloader, server: Server, connections: list[str], name: str
) -> None:
    reason = await refused(downloader, server.url("/image.png", host=name))

    assert reason == NOT_PUBLIC
    assert connections == []
    assert server.hits == []


async def test_dns_rebinding_cannot_swap_the_address_after_the_check(
    downloader: SafeDownloader, server: Server, connections: list[str], resolver: StubResolver
) -> None:
    url = server.url("/image.png", host="rebind.example.test")

    assert await downloader.fetch(url) == IMAGE  # first answer: the allowed address
    reason = await refused(downloader, url)  # second answer: loopback

    assert reason == NOT_PUBLIC
    assert resolver.calls == ["rebind.example.test", "rebind.example.test"]  # one lookup per fetch
    assert connections == [SERVER_HOST]  # the one connection went where the check said


async def test_redirect_to_loopback_is_refused(
    downloader: SafeDownloader, server: Server, connections: list[str]
) -> None:
    target = f"http://127.0.0.1:{server.port}/image.png"

    reason = await refused(downloader, server.url(f"/redirect?to={target}"))

    assert reason == NOT_PUBLIC
    assert connections == [SERVER_HOST]
    assert len(server.hits) == 1


async def test_redirect_to_a_name_resolving_to_loopback_is_refused(
    downloader: SafeDownloader, server: Server, connections: list[str]
) -> None:
    target = f"http://evil.example.test:{server.port}/image.png"

    assert await refused(downloader, server.url(f"/redirect?to={target}")) == NOT_PUBLIC
    assert connections == [SERVER_HOST]


async def test_redirect_to_metadata_service_is_refused(
    downloader: SafeDownloader, server: Server, connections: list[str]
) -> None:
    target = "http://169.254.169.254/latest/meta-data/iam"

    assert await refused(downloader, server.url(f"/redirect?to={target}")) == NOT_PUBLIC
    assert connections == [SERVER_HOST]


def test_default_policy_refuses_the_test_server() -> None:
    assert not is_public_address(PUBLIC_STAND_IN)


# --- links that are not web links ---------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "ftp://images.example.test/cat.png",
        "file:///etc/passwd",
        "data:image/png;base64,iVBORw0KGgo=",
        "javascript:alert(1)",
        "gopher://images.example.test/",
        "ws://images.example.test/",
    ],
)
async def test_non_web_schemes_are_refused(
    downloader: SafeDownloader, resolver: StubResolver, connections: list[str], url: str
) -> None:
    reason = await refused(downloader, url)

    assert reason == "That link is not a web link; send one that starts with http:// or https://."
    assert resolver.calls == []
    assert connections == []


@pytest.mark.parametrize("url", ["images.example.test/cat.png", "http:///cat.png", "http://[::1/", "", "   "])
async def test_malformed_links_are_refused(
    downloader: SafeDownloader, connections: list[str], url: str
) -> None:
    reason = await refused(downloader, url)

    assert reason == "That link is not a valid web address; send one that starts with http:// or https://."
    assert connections == []


@pytest.mark.parametrize(
    "url", ["http://user:pass@images.example.test/cat.png", "https://token@images.example.test/cat.png"]
)
async def test_links_with_credentials_are_refused(
    downloader: SafeDownloader, resolver: StubResolver, connections: list[str], url: str
) -> None:
    reason = await refused(downloader, url)

    assert reason == "That link contains a user name or password; send a link without them."
    assert resolver.calls == []
    assert connections == []


async def test_redirect_to_a_non_web_scheme_is_refused(
    downloader: SafeDownloader, server: Server, connections: list[str]
) -> None:
    reason = await refused(downloader, server.url("/redirect?to=file:///etc/passwd"))

    assert reason == sentence(Refusal.LINK_BAD_REDIRECT)
    assert reason.startswith("That link redirects to something that is not a web page;")
    assert connections == [SERVER_HOST]


async def test_unknown_name_is_refused(
    downloader: SafeDownloader, server: Server, connections: list[str]
) -> None:
    reason = await refused(downloader, server.url("/image.png", host="nowhere.example.test"))

    assert reason == "That link's website could not be found; check the address and try again."
    assert connections == []


# --- limits ---------------------------------------------------------------------------------------


async def test_too_many_redirects_are_refused(
    downloader: SafeDownloader, server: Server, connections: list[str]
) -> None:
    reason = await refused(downloader, server.url("/chain/3"))  # 4 redirects before the image

    assert reason == "That link redirects too many times; send the direct link to the image instead."
    assert server.hits == ["/chain/3", "/chain/2", "/chain/1", "/chain/0"]  # the 4th is not followed


async def test_a_server_that_never_answers_times_out(downloader: SafeDownloader, server: Server) -> None:
    started = time.monotonic()

    reason = await refused(downloader, server.url("/hang"))

    assert reason == "That link took too long to answer; try again later or send the image as an attachment."
    assert time.monotonic() - started < 2


async def test_a_trickling_body_hits_the_overall_timeout(downloader: SafeDownloader, server: Server) -> None:
    started = time.monotonic()

    reason = await refused(downloader, server.url("/trickle"))

    assert reason == sentence(Refusal.LINK_TOO_SLOW)
    assert time.monotonic() - started < 2


async def test_an_endless_body_is_cut_off_at_max_bytes(downloader: SafeDownloader, server: Server) -> None:
    started = time.monotonic()

    reason = await refused(downloader, server.url("/forever"))

    assert reason == "That link's file is larger than 100 KB; send a smaller image."
    assert time.monotonic() - started < 1


async def test_a_huge_content_length_is_refused_before_reading(
    downloader: SafeDownloader, server: Server
) -> None:
    started = time.monotonic()

    reason = await refused(downloader, server.url("/huge-length"))

    # Reading the body would have waited for the 0.5 s timeout; the header alone decided.
    assert reason == sentence(Refusal.LINK_TOO_LARGE, max_bytes=MAX_BYTES)
    assert time.monotonic() - started < 0.4


@pytest.mark.parametrize("code", [404, 403, 500, 304])
async def test_non_2xx_status_is_refused_with_the_status(
    downloader: SafeDownloader, server: Server, code: int
) -> None:
    reason = await refused(downloader, server.url(f"/status/{code}"))

    assert reason == (
        f"That link answered with status {code} instead of an image; "
        "check the link or send the image as an attachment."
    )


async def test_refusals_are_logged_with_the_host_only(
    downloader: SafeDownloader, server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bot.core.safe_download")

    await refused(downloader, server.url("/image.png?token=SECRET", host="evil.example.test"))

    assert [r.levelno for r in caplog.records] == [logging.INFO]
    assert "evil.example.test" in caplog.text
    assert "SECRET" not in caplog.text
    assert "/image.png" not in caplog.text


async def test_close_leaves_a_resolver_it_was_given_open(resolver: StubResolver, server: Server) -> None:
    dl = SafeDownloader(max_bytes=MAX_BYTES, address_allowed=allow_stand_in, resolver=resolver)
    await dl.fetch(server.url("/image.png"))

    await dl.close()
    await dl.close()  # twice is harmless

    assert not resolver.closed


async def test_default_resolver_refuses_localhost(connections: list[str]) -> None:
    dl = SafeDownloader(max_bytes=MAX_BYTES, timeout=2)  # the real policy and the system resolver
    try:
        assert await refused(dl, "http://localhost:9/") == NOT_PUBLIC
    finally:
        await dl.close()
    assert connections == []


# --- is_public_address ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("8.8.8.8", True),
        ("1.1.1.1", True),
        ("2606:4700::1111", True),
        ("2001:4860:4860::8888", True),
        ("::ffff:8.8.8.8", True),  # mapped: judged by its IPv4
        ("2002:808:808::1", True),  # 6to4 of a public address
        ("64:ff9b::808:808", True),  # NAT64 of a public address
        ("127.0.0.1", False),
        ("127.0.0.2", False),
        ("10.0.0.1", False),
        ("172.16.5.4", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),
        ("100.64.0.1", False),  # shared address space
        ("0.0.0.0", False),
        ("0.1.2.3", False),
        ("255.255.255.255", False),
        ("224.0.0.1", False),  # multicast
        ("239.255.255.250", False),
        ("240.0.0.1", False),  # reserved
        ("198.18.0.1", False),  # benchmarking
        ("192.0.2.1", False),  # documentation
        ("198.51.100.7", False),
        ("203.0.113.9", False),
        ("192.0.0.8", False),
        ("::1", False),
        ("::", False),
        ("fe80::1", False),
        ("fe80::1%eth0", False),
        ("fc00::1", False),
        ("fd00:ec2::254", False),  # unique local (the AWS IPv6 metadata service)
        ("fec0::1", False),  # site-local
        ("ff02::1", False),  # multicast
        ("2001:db8::1", False),  # documentation
        ("3fff::1", False),  # documentation
        ("100::1", False),  # discard-only
        ("::ffff:127.0.0.1", False),  # mapped loopback
        ("::ffff:10.0.0.1", False),
        ("::ffff:169.254.169.254", False),
        ("::127.0.0.1", False),  # deprecated IPv4-compatible
        ("2002:7f00:1::1", False),  # 6to4 of 127.0.0.1
        ("2002:a00:1::1", False),  # 6to4 of 10.0.0.1
        ("2002:a9fe:a9fe::1", False),  # 6to4 of 169.254.169.254
        ("64:ff9b::7f00:1", False),  # NAT64 of 127.0.0.1
        ("64:ff9b::a9fe:a9fe", False),  # NAT64 of 169.254.169.254
        ("64:ff9b:1::808:808", False),  # local-use NAT64
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", False),  # Teredo
    ],
)
def test_is_public_address(address: str, public: bool) -> None:
    assert is_public_address(ipaddress.ip_address(address)) is public
