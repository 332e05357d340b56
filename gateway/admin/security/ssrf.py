"""Outbound URL policy for provider base URLs: strict parsing, address checks, and DNS resolution pinned to them.

``check_url`` parses once (no userinfo, fragments, odd characters; IDNA host; IP literals in every notation
``inet_aton`` accepts) and the URL is rebuilt from its parts. ``resolve_checked`` and ``PinnedResolver`` refuse a
name when any address it resolves to is non-public, and the resolver hands aiohttp only the addresses it checked,
so a DNS answer that changes between check and connect (rebinding) cannot redirect the connection. aiohttp does
not consult a resolver for IP-literal hosts, so every URL must also pass ``check_url`` before it is used.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import unicodedata
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, NamedTuple, Protocol
from urllib.parse import urlsplit

import idna
from aiohttp.abc import AbstractResolver, ResolveResult

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

MAX_URL_CHARS = 2048
DEFAULT_PORTS: Mapping[str, int] = MappingProxyType({"http": 80, "https": 443})
_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
_NUMERIC_LABEL = re.compile(r"[0-9]+|0x[0-9a-f]*")
_DIGITS: Mapping[int, str] = MappingProxyType({8: "01234567", 10: "0123456789", 16: "0123456789abcdef"})
_NUMERIC_FLAGS = socket.AI_NUMERICHOST | socket.AI_NUMERICSERV
_INET = frozenset({socket.AF_INET, socket.AF_INET6})
_BAD_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zs", "Zl", "Zp"})


def _nets(*cidrs: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(cidr) for cidr in cidrs)


# (what to call it, networks): checked in order, so the more specific names come first.
_RULES = (
    ("an unspecified address", _nets("0.0.0.0/8", "::/128")),
    ("a loopback address", _nets("127.0.0.0/8", "::1/128")),
    ("a private address", _nets("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")),
    ("a shared (CGNAT) address", _nets("100.64.0.0/10")),
    ("a link-local address", _nets("169.254.0.0/16", "fe80::/10")),
    ("a unique-local address", _nets("fc00::/7")),
    ("a multicast address", _nets("224.0.0.0/4", "ff00::/8")),
    (
        "a reserved address",
        _nets(
            "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24",
            "240.0.0.0/4", "::/96", "100::/64", "64:ff9b:1::/48", "2001:db8::/32", "fec0::/10",
        ),
    ),
)  # fmt: skip
# Cloud instance-metadata endpoints (AWS/GCP/Azure, AWS ECS, Alibaba, AWS IPv6): refused even with allow_private.
_METADATA = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "169.254.170.2", "100.100.100.200", "fd00:ec2::254")
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_V4_COMPATIBLE = ipaddress.ip_network("::/96")


class UnsafeUrl(ValueError):
    """A URL or address the policy refuses; the message names the rule and is safe to show to an operator."""


class BlockedAddress(PermissionError):
    """Raised by PinnedResolver (aiohttp wraps it in ClientConnectorDNSError); carries UnsafeUrl's message."""


class GetAddrInfo(Protocol):
    """The shape of ``loop.getaddrinfo``, injectable for tests and custom resolvers."""

    def __call__(
        self, host: str, port: int, *, family: int = ..., type: int = ..., proto: int = ..., flags: int = ...
    ) -> Awaitable[Sequence[tuple[int, int, int, str, tuple[Any, ...]]]]: ...


@dataclass(frozen=True, slots=True)
class UrlPolicy:
    """Which destinations are allowed; host patterns are exact names/IPs or ``*.suffix`` (subdomains only)."""

    allow_private: bool = False
    allow_hosts: frozenset[str] = frozenset()
    deny_hosts: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        object.__setattr__(self, "allow_hosts", frozenset(_normalize_pattern(p) for p in self.allow_hosts))
        object.__setattr__(self, "deny_hosts", frozenset(_normalize_pattern(p) for p in self.deny_hosts))


@dataclass(frozen=True, slots=True)
class ParsedUrl:
    """A checked URL's parts: lower-case scheme, normalised host (IDNA, or canonical IP), port, path and query."""

    scheme: str
    host: str
    port: int
    path: str
    query: str = ""

    @property
    def url(self) -> str:
        """The URL rebuilt from the checked parts; use this, never the original string."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = "" if DEFAULT_PORTS[self.scheme] == self.port else f":{self.port}"
        query = f"?{self.query}" if self.query else ""
        return f"{self.scheme}://{host}{port}{self.path}{query}"


class _Resolved(NamedTuple):
    family: int
    proto: int
    address: str


def check_url(url: str, policy: UrlPolicy) -> ParsedUrl:
    """Parse and check a URL without DNS: syntax, host normalisation, deny list, and IP-literal addresses."""
    _check_characters(url)
    try:
        parts = urlsplit(url)
    except ValueError:
        raise UnsafeUrl("the URL cannot be parsed") from None
    if parts.scheme not in DEFAULT_PORTS:
        raise UnsafeUrl("only http and https URLs are allowed")
    if "#" in url:
        raise UnsafeUrl("the URL must not have a fragment (#...)")
    raw_host, bracketed, port = _split_authority(parts.netloc, DEFAULT_PORTS[parts.scheme])
    host, literal = _normalize_host(raw_host, bracketed)
    _check_name(host, policy)
    if literal is not None:
        _check_address(literal, host, policy, verb="is")
    return ParsedUrl(parts.scheme, host, port, parts.path, parts.query)


async def validate_url(url: str, policy: UrlPolicy, *, getaddrinfo: GetAddrInfo | None = None) -> ParsedUrl:
    """``check_url`` plus ``resolve_checked`` on its host: what to run when an operator saves a base URL."""
    parsed = check_url(url, policy)
    await resolve_checked(parsed.host, parsed.port, policy, getaddrinfo=getaddrinfo)
    return parsed


async def resolve_checked(
    host: str, port: int, policy: UrlPolicy, *, family: int = socket.AF_UNSPEC, getaddrinfo: GetAddrInfo | None = None
) -> list[str]:
    """Resolve ``host`` (default: the loop's getaddrinfo) and return its addresses, refusing if ANY is unsafe."""
    return [r.address for r in await _resolve(host, port, policy, family, getaddrinfo)]


class PinnedResolver(AbstractResolver):
    """aiohttp resolver that returns only addresses that passed the policy, so aiohttp connects to exactly those."""

    def __init__(self, policy: UrlPolicy, *, getaddrinfo: GetAddrInfo | None = None) -> None:
        self.policy = policy
        """Replaceable: the gateway swaps it when the trusted (file) providers change."""
        self._getaddrinfo = getaddrinfo

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """Resolve and check; a refusal raises BlockedAddress, which aiohttp reports as ClientConnectorDNSError."""
        try:
            resolved = await _resolve(host, port, self.policy, family, self._getaddrinfo)
        except UnsafeUrl as exc:
            raise BlockedAddress(str(exc)) from None
        return [
            ResolveResult(
                hostname=host, host=r.address, port=port, family=r.family, proto=r.proto, flags=_NUMERIC_FLAGS
            )
            for r in resolved
        ]

    async def close(self) -> None:
        """Nothing to release."""


def parse_ipv4(text: str) -> ipaddress.IPv4Address | None:
    """An IPv4 address in any notation ``inet_aton`` accepts (``127.1``, ``0x7f000001``, ``0177.0.0.1``), or None."""
    parts = text.split(".")
    if len(parts) > 4:
        return None
    values = [_inet_part(part) for part in parts]
    numbers = [v for v in values if v is not None]
    if len(numbers) != len(values):
        return None
    *head, last = numbers
    if any(v > 255 for v in head) or last >= 256 ** (4 - len(head)):
        return None
    value = last
    for index, part in enumerate(head):
        value |= part << (8 * (3 - index))
    return ipaddress.IPv4Address(value)


def address_problem(ip: IPAddress) -> str | None:
    """Why ``ip`` is not a public unicast destination (e.g. "a private address"), or None when it is."""
    for how, embedded in _embedded_ipv4(ip):
        inner = address_problem(embedded)
        if inner is not None:
            return f"{how} of {inner}, {embedded}"
    for name, networks in _RULES:
        if any(ip.version == net.version and ip in net for net in networks):
            return name
    return None if ip.is_global else "a non-public address"


def _inet_part(part: str) -> int | None:
    lowered = part.lower()
    if lowered.startswith("0x"):
        digits, base = lowered[2:], 16
    elif len(lowered) > 1 and lowered.startswith("0"):
        digits, base = lowered[1:], 8
    else:
        digits, base = lowered, 10
    if not digits or any(c not in _DIGITS[base] for c in digits):
        return None
    return int(digits, base)


def _embedded_ipv4(ip: IPAddress) -> list[tuple[str, ipaddress.IPv4Address]]:
    """IPv4 addresses an IPv6 address carries: IPv4-mapped, 6to4, Teredo (server and client), NAT64, compatible."""
    if isinstance(ip, ipaddress.IPv4Address):
        return []
    found: list[tuple[str, ipaddress.IPv4Address]] = []
    if ip.ipv4_mapped is not None:
        found.append(("an IPv4-mapped IPv6 address", ip.ipv4_mapped))
    if ip.sixtofour is not None:
        found.append(("a 6to4 address", ip.sixtofour))
    if ip.teredo is not None:
        found.extend(("a Teredo address", v4) for v4 in ip.teredo)
    low32 = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip in _NAT64:
        found.append(("a NAT64 address", low32))
    elif ip in _V4_COMPATIBLE and int(ip) > 1:
        found.append(("an IPv4-compatible IPv6 address", low32))
    return found


def _check_characters(url: str) -> None:
    if len(url) > MAX_URL_CHARS:
        raise UnsafeUrl(f"the URL is longer than {MAX_URL_CHARS} characters")
    if any(c.isspace() or unicodedata.category(c) in _BAD_CATEGORIES for c in url):
        raise UnsafeUrl("the URL contains whitespace or control characters")
    if "\\" in url:
        raise UnsafeUrl("the URL contains a backslash")


def _split_authority(netloc: str, default_port: int) -> tuple[str, bool, int]:
    """``host[:port]`` or ``[v6][:port]`` -> (host, bracketed, port); userinfo is refused."""
    if "@" in netloc:
        raise UnsafeUrl("the URL must not contain a user name or password (user:pass@)")
    if netloc.startswith("["):
        host, _, rest = netloc[1:].partition("]")
        if rest and not rest.startswith(":"):
            raise UnsafeUrl("the URL's host is not a valid bracketed IPv6 address")
        return host, True, _parse_port(rest[1:], default_port)
    host, _, port = netloc.partition(":")
    if ":" in port:
        raise UnsafeUrl("the URL's host has more than one port separator (an IPv6 address needs [brackets])")
    return host, False, _parse_port(port, default_port)


def _parse_port(text: str, default: int) -> int:
    if not text:
        return default
    if not (text.isascii() and text.isdigit() and len(text) <= 5 and 1 <= int(text) <= 65535):
        raise UnsafeUrl("the URL's port must be a number from 1 to 65535")
    return int(text)


def _normalize_host(raw: str, bracketed: bool) -> tuple[str, IPAddress | None]:
    """(normalised host, its address when it is an IP literal); IDNA for names, canonical text for addresses."""
    if not raw:
        raise UnsafeUrl("the URL has no host")
    if "%" in raw:
        raise UnsafeUrl("the URL's host must not contain percent-escapes or an IPv6 zone")
    if bracketed:
        try:
            v6 = ipaddress.IPv6Address(raw)
        except ValueError:
            raise UnsafeUrl("the URL's host is not a valid bracketed IPv6 address") from None
        return str(v6), v6
    name = _idna(raw)
    v4 = parse_ipv4(name)
    if v4 is not None:
        return str(v4), v4
    _check_hostname(name)
    return name, None


def _idna(raw: str) -> str:
    """Lower-case ASCII, or UTS #46 IDNA for non-ASCII names (as yarl does); one trailing dot dropped."""
    try:
        name = raw.lower() if raw.isascii() else idna.encode(raw, uts46=True).decode("ascii")
    except idna.IDNAError:
        raise UnsafeUrl("the URL's host is not a valid internationalised domain name") from None
    return name.removesuffix(".")


def _check_hostname(name: str) -> None:
    labels = name.split(".")
    if _NUMERIC_LABEL.fullmatch(labels[-1]):
        raise UnsafeUrl("the URL's host looks numeric but is not a valid IPv4 address")
    if len(name) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise UnsafeUrl("the URL's host is not a valid host name")


def _normalize_pattern(pattern: str) -> str:
    """An allow/deny entry in the form hosts are compared in: lower-case IDNA name, canonical IP, or ``*.name``."""
    wildcard = pattern.startswith("*.")
    body = pattern.removeprefix("*.").strip("[]")
    try:
        text = str(ipaddress.ip_address(body))
    except ValueError:
        text = _idna(body) if body else ""
    if not text or "*" in text:
        raise ValueError("a host pattern must be a host name, an IP address, or *.domain")
    return f"*.{text}" if wildcard else text


def _matches(host: str, patterns: frozenset[str]) -> bool:
    """Exact entry, or a ``*.suffix`` entry for any parent domain of ``host``."""
    if host in patterns:
        return True
    labels = host.split(".")
    return any("*." + ".".join(labels[i:]) in patterns for i in range(1, len(labels)))


def _check_name(host: str, policy: UrlPolicy) -> None:
    if _matches(host, policy.deny_hosts):
        raise UnsafeUrl(f"the host {host} is on the deny list")
    trusted = policy.allow_private or _matches(host, policy.allow_hosts)
    if not trusted and (host == "localhost" or host.endswith(".localhost")):
        raise UnsafeUrl("the host is localhost, which always means this machine")


def _check_address(ip: IPAddress, host: str, policy: UrlPolicy, *, verb: str) -> None:
    """Refuse ``ip`` unless the host is allow-listed; allow_private lifts every rule but cloud metadata."""
    if _matches(str(ip), policy.deny_hosts):
        raise UnsafeUrl(f"the host {verb} a denied address ({ip})")
    if _matches(host, policy.allow_hosts):
        return
    unwrapped = [ip, *(v4 for _, v4 in _embedded_ipv4(ip))]
    if any(a in _METADATA for a in unwrapped):
        raise UnsafeUrl(f"the host {verb} a cloud metadata address ({ip})")
    problem = None if policy.allow_private else address_problem(ip)
    if problem is not None:
        raise UnsafeUrl(f"the host {verb} {problem} ({ip})")


def _literal(host: str) -> IPAddress | None:
    if ":" in host:
        try:
            return ipaddress.IPv6Address(host)
        except ValueError:
            raise UnsafeUrl("the host is not a valid IPv6 address") from None
    return parse_ipv4(host)


async def _resolve(
    host: str, port: int, policy: UrlPolicy, family: int, getaddrinfo: GetAddrInfo | None
) -> list[_Resolved]:
    """Resolve once and check every address; IP literals are checked without a lookup."""
    name = _idna(host.strip("[]")) if host else ""
    if not name:
        raise UnsafeUrl("the URL has no host")
    literal = _literal(name)
    if literal is not None:
        name = str(literal)
    _check_name(name, policy)
    if literal is not None:
        _check_address(literal, name, policy, verb="is")
        fam = socket.AF_INET6 if literal.version == 6 else socket.AF_INET
        return [_Resolved(fam, socket.IPPROTO_TCP, name)]
    lookup = getaddrinfo or asyncio.get_running_loop().getaddrinfo
    infos = await lookup(name, port, family=family, type=socket.SOCK_STREAM, flags=socket.AI_ADDRCONFIG)
    resolved = [_Resolved(fam, proto, str(sockaddr[0])) for fam, _, proto, _, sockaddr in infos if fam in _INET]
    if not resolved:
        raise UnsafeUrl("the host did not resolve to any IP address")
    for entry in resolved:
        _check_address(ipaddress.ip_address(entry.address), name, policy, verb="resolves to")
    return resolved
