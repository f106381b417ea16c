"""Download what a member's link points at without letting the link reach inside our network.

Every address the bot connects to is checked first, and the connection goes to exactly the
address that was checked: names are resolved once, by a resolver that hands the connector only
approved addresses, so a DNS answer cannot change between the check and the connect.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from bot.domain.errors import BadInput, Refusal

log = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_SCHEMES = frozenset({"http", "https"})
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_CHUNK = 64 * 1024

# Spelt out even where `is_global` already says no, because what `is_global` covers has
# changed between Python patch releases; these must stay refused whatever the interpreter.
_REFUSED_V4 = tuple(
    ipaddress.IPv4Network(n)
    for n in (
        "0.0.0.0/8",  # "this network"
        "10.0.0.0/8",
        "100.64.0.0/10",  # carrier-grade NAT, shared address space
        "127.0.0.0/8",
        "169.254.0.0/16",  # link-local, including the 169.254.169.254 cloud metadata service
        "172.16.0.0/12",
        "192.0.0.0/24",  # IETF protocol assignments
        "192.0.2.0/24",  # documentation
        "192.88.99.0/24",  # deprecated 6to4 relay anycast
        "192.168.0.0/16",
        "198.18.0.0/15",  # benchmarking
        "198.51.100.0/24",  # documentation
        "203.0.113.0/24",  # documentation
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, including 255.255.255.255 broadcast
    )
)
_REFUSED_V6 = tuple(
    ipaddress.IPv6Network(n)
    for n in (
        "::/96",  # unspecified, loopback and the deprecated IPv4-compatible form
        "64:ff9b:1::/48",  # local-use NAT64
        "100::/64",  # discard-only
        "2001::/23",  # IETF protocol assignments, including Teredo 2001::/32
        "2001:db8::/32",  # documentation
        "3fff::/20",  # documentation
        "fc00::/7",  # unique local
        "fe80::/10",  # link-local
        "fec0::/10",  # deprecated site-local
        "ff00::/8",  # multicast
    )
)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # the last 32 bits are an IPv4 address
# Dotted forms with fewer than four parts, hex or octal parts, or one big number: inet_aton
# and many resolvers read these as IPv4 addresses ("2130706433", "0x7f.1", "0177.0.0.1").
_LEGACY_V4 = re.compile(r"(?:0x[0-9a-f]*|[0-9]+)(?:\.(?:0x[0-9a-f]*|[0-9]+)){0,3}", re.IGNORECASE)


def is_public_address(ip: IPAddress) -> bool:
    """Tell whether an address is on the public internet, judging embedded IPv4 by itself."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:  # ::ffff:a.b.c.d is that IPv4 host
            return is_public_address(ip.ipv4_mapped)
        if ip in _NAT64:  # a DNS64 answer for an IPv4 host: only the embedded address counts
            return is_public_address(ipaddress.IPv4Address(int(ip) & 0xFFFF_FFFF))
        if ip.sixtofour is not None and not is_public_address(ip.sixtofour):
            return False
        if ip.teredo is not None and not is_public_address(ip.teredo[1]):
            return False
        if ip.is_site_local or any(ip in net for net in _REFUSED_V6):
            return False
    elif any(ip in net for net in _REFUSED_V4):
        return False
    return ip.is_global and not (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
    )


def _literal_address(host: str) -> IPAddress | None:
    """Read a URL host that is an IP address, in standard or legacy numeric form."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    bare = host.removesuffix(".")
    if _LEGACY_V4.fullmatch(bare) is None:
        return None
    try:
        return ipaddress.IPv4Address(socket.inet_aton(bare))
    except OSError:
        return None


class _AddressRefused(OSError):
    """A resolved address failed the policy; an OSError so aiohttp reports it as a DNS error."""


class _CheckingResolver(AbstractResolver):
    """Resolve with another resolver and pass on the answer only if every address is allowed."""

    def __init__(
        self, inner: AbstractResolver, allowed: Callable[[IPAddress], bool], *, owns_inner: bool
    ) -> None:
        self._inner = inner
        self._allowed = allowed
        self._owns_inner = owns_inner

    def _is_allowed(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:  # a resolver that answers with a name: nothing we can vouch for
            return False
        return self._allowed(ip)

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """Return the addresses for host, refusing them all if any one is not allowed."""
        results = await self._inner.resolve(host, port, family)
        if not results:
            raise OSError(f"no addresses for {host}")
        # One bad address refuses the lot: a name that mixes public and private answers is
        # either misconfigured or an attack, and we cannot tell which.
        if not all(self._is_allowed(r["host"]) for r in results):
            raise _AddressRefused(f"{host} resolves to a refused address")
        return results

    async def close(self) -> None:
        """Close the wrapped resolver if this object created it."""
        if self._owns_inner:
            await self._inner.close()


@dataclass(slots=True)
class _Progress:
    """Where a fetch has got to, for the log line of a refusal."""

    host: str


def _host_for_log(url: str) -> str:
    """Return only the host of a URL: paths and queries may carry tokens."""
    try:
        return URL(url).host or "?"
    except (ValueError, TypeError):
        return "?"


class SafeDownloader:
    """Fetch member-supplied http(s) links with SSRF guards, size caps and a time limit."""

    def __init__(
        self,
        *,
        max_bytes: int,
        timeout: float = 15.0,
        max_redirects: int = 3,
        address_allowed: Callable[[IPAddress], bool] = is_public_address,
        resolver: AbstractResolver | None = None,
        user_agent: str = "imageprompt-bot/0.1 (+image download)",
    ) -> None:
        self._max_bytes = max_bytes
        self._timeout = timeout
        self._max_redirects = max_redirects
        self._address_allowed = address_allowed
        self._resolver = resolver
        self._user_agent = user_agent
        self._session: aiohttp.ClientSession | None = None
        self._checking_resolver: _CheckingResolver | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        """Return the one session, creating it inside the running loop on first use."""
        if self._session is None or self._session.closed:
            # ThreadedResolver binds to the running loop, so it too is made here, not in __init__.
            inner = self._resolver or aiohttp.ThreadedResolver()
            self._checking_resolver = _CheckingResolver(
                inner, self._address_allowed, owns_inner=self._resolver is None
            )
            connector = aiohttp.TCPConnector(
                resolver=self._checking_resolver,
                use_dns_cache=False,  # every connection resolves, and so is checked, afresh
                force_close=True,  # no pooled connection outlives the check that opened it
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(
                    total=self._timeout, sock_connect=self._timeout, sock_read=self._timeout
                ),
                headers={
                    "User-Agent": self._user_agent,
                    "Accept": "image/*",
                    # Counting compressed bytes would let a small gzip body inflate past the cap.
                    "Accept-Encoding": "identity",
                },
                auto_decompress=False,
                trust_env=False,  # never route member links through an environment proxy
                cookie_jar=aiohttp.DummyCookieJar(),  # one member's cookies never reach another's link
            )
        return self._session

    def _refuse(self, host: str, why: str, refusal: Refusal, **params: str | int) -> BadInput:
        """Log a refusal with the host only and build the error the member sees."""
        log.info("refused download from %s: %s", host, why)
        return BadInput(refusal, **params)

    def _checked_url(self, url: URL, progress: _Progress) -> URL:
        """Check a URL's scheme, credentials and, for an IP literal, its address."""
        if url.scheme.lower() not in _SCHEMES:
            if not url.scheme:
                raise self._refuse(progress.host, "no scheme", Refusal.LINK_INVALID)
            raise self._refuse(progress.host, f"scheme {url.scheme}", Refusal.LINK_NOT_WEB)
        if not url.host:
            raise self._refuse(progress.host, "no host", Refusal.LINK_INVALID)
        progress.host = url.host
        if url.user is not None or url.password is not None:
            raise self._refuse(progress.host, "credentials in URL", Refusal.LINK_HAS_CREDENTIALS)
        # aiohttp connects to an IP literal without asking the resolver, so check it here.
        literal = _literal_address(url.host)
        if literal is not None and not self._address_allowed(literal):
            raise self._refuse(progress.host, "address refused", Refusal.LINK_NOT_PUBLIC)
        return url

    def _redirect_target(self, resp: aiohttp.ClientResponse, progress: _Progress) -> URL:
        """Return the checked URL a redirect points at."""
        location = resp.headers.get("Location")
        if not location:
            raise self._refuse(progress.host, "redirect without Location", Refusal.LINK_BAD_REDIRECT)
        try:
            target = resp.url.join(URL(location))
        except (ValueError, TypeError):
            raise self._refuse(progress.host, "bad redirect", Refusal.LINK_BAD_REDIRECT) from None
        if target.scheme.lower() not in _SCHEMES:
            raise self._refuse(
                progress.host, f"redirect to scheme {target.scheme}", Refusal.LINK_BAD_REDIRECT
            )
        return self._checked_url(target, progress)

    async def _read_body(self, resp: aiohttp.ClientResponse, progress: _Progress) -> bytes:
        """Read the body, stopping as soon as it is known to be too large."""
        if resp.content_length is not None and resp.content_length > self._max_bytes:
            resp.close()
            raise self._refuse(
                progress.host,
                f"Content-Length {resp.content_length}",
                Refusal.LINK_TOO_LARGE,
                max_bytes=self._max_bytes,
            )
        body = bytearray()
        async for chunk in resp.content.iter_chunked(_CHUNK):
            body += chunk
            if len(body) > self._max_bytes:
                resp.close()  # drop the connection rather than drain an endless body
                raise self._refuse(
                    progress.host, "body over the limit", Refusal.LINK_TOO_LARGE, max_bytes=self._max_bytes
                )
        return bytes(body)

    async def _fetch(self, url: str, progress: _Progress) -> bytes:
        """Follow up to max_redirects redirects by hand, checking each hop from scratch."""
        try:
            target = URL(url.strip().removeprefix("<").removesuffix(">"))
        except (ValueError, TypeError):
            raise self._refuse(progress.host, "unparsable URL", Refusal.LINK_INVALID) from None
        target = self._checked_url(target, progress)
        session = self._get_session()
        for _ in range(self._max_redirects + 1):
            try:
                async with session.get(target, allow_redirects=False) as resp:
                    if resp.status in _REDIRECT_STATUSES:
                        target = self._redirect_target(resp, progress)
                        continue
                    if not 200 <= resp.status < 300:
                        raise self._refuse(
                            progress.host,
                            f"status {resp.status}",
                            Refusal.LINK_HTTP_STATUS,
                            status=resp.status,
                        )
                    return await self._read_body(resp, progress)
            except TimeoutError:
                raise  # aiohttp's own timeouts are ClientErrors too; fetch() words them
            except aiohttp.ClientConnectorDNSError as exc:
                if isinstance(exc.os_error, _AddressRefused):
                    raise self._refuse(progress.host, "address refused", Refusal.LINK_NOT_PUBLIC) from None
                raise self._refuse(progress.host, "name not resolved", Refusal.LINK_HOST_NOT_FOUND) from None
            except aiohttp.InvalidURL:
                raise self._refuse(progress.host, "invalid URL", Refusal.LINK_INVALID) from None
            except aiohttp.ClientError as exc:
                raise self._refuse(progress.host, f"{type(exc).__name__}", Refusal.LINK_UNREACHABLE) from None
        raise self._refuse(progress.host, "too many redirects", Refusal.LINK_TOO_MANY_REDIRECTS)

    async def fetch(self, url: str) -> bytes:
        """Download a link's bytes, or raise BadInput saying why the member's link cannot be used."""
        progress = _Progress(host=_host_for_log(url))
        try:
            # ClientTimeout bounds each request; this bounds the whole chain of redirects.
            async with asyncio.timeout(self._timeout):
                return await self._fetch(url, progress)
        except TimeoutError:
            raise self._refuse(progress.host, "timed out", Refusal.LINK_TOO_SLOW) from None

    async def close(self) -> None:
        """Close the session and, if it was ours, the resolver."""
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._checking_resolver is not None:
            await self._checking_resolver.close()
            self._checking_resolver = None
