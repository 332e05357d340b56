"""Provider base-URL policy: parsing refusals, every IP notation, allow/deny lists, DNS rebinding, aiohttp pinning.

DNS is always a fake (an injected getaddrinfo); the only real connections go to a loopback aiohttp server.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st

from gateway.admin.security.ssrf import (
    BlockedAddress,
    GetAddrInfo,
    ParsedUrl,
    PinnedResolver,
    UnsafeUrl,
    UrlPolicy,
    address_problem,
    check_url,
    parse_ipv4,
    resolve_checked,
    validate_url,
)

STRICT = UrlPolicy()
PUBLIC_V4 = "93.184.215.14"
PUBLIC_V6 = "2606:2800:21f:cb07:6820:80da:af6b:8b2c"

Answer = list[tuple[int, int, int, str, tuple[Any, ...]]]


class FakeDns:
    """An injectable getaddrinfo: each name maps to a list of answers, one per lookup (the last one repeats)."""

    def __init__(self, table: dict[str, list[list[str]]]) -> None:
        self.table = table
        self.calls: list[str] = []

    async def __call__(
        self, host: str, port: int, *, family: int = 0, type: int = 0, proto: int = 0, flags: int = 0
    ) -> Answer:
        self.calls.append(host)
        answers = self.table.get(host)
        if not answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        addresses = answers[min(len(self.calls_for(host)), len(answers)) - 1]
        return [_info(address, port) for address in addresses]

    def calls_for(self, host: str) -> list[str]:
        return [c for c in self.calls if c == host]


def _info(address: str, port: int) -> tuple[int, int, int, str, tuple[Any, ...]]:
    if ":" in address:
        return (socket.AF_INET6, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, port, 0, 0))
    return (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, port))


def dns(**names: str | list[str]) -> FakeDns:
    """``dns(api_example_com="1.2.3.4")``: underscores in keyword names stand for dots."""
    table = {k.replace("_", "."): [[v] if isinstance(v, str) else v] for k, v in names.items()}
    return FakeDns(table)


# --- check_url: accepted URLs ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://api.deepseek.com/v1", ParsedUrl("https", "api.deepseek.com", 443, "/v1")),
        ("http://api.example.com", ParsedUrl("http", "api.example.com", 80, "")),
        ("HTTPS://API.Example.COM.:8443/v1/", ParsedUrl("https", "api.example.com", 8443, "/v1/")),
        ("https://example.com:/v1", ParsedUrl("https", "example.com", 443, "/v1")),
        ("https://bücher.example/v1", ParsedUrl("https", "xn--bcher-kva.example", 443, "/v1")),
        ("https://ｅｘａｍｐｌｅ。com/v1", ParsedUrl("https", "example.com", 443, "/v1")),  # noqa: RUF001
        ("https://res.openai.azure.com/x?v=1", ParsedUrl("https", "res.openai.azure.com", 443, "/x", "v=1")),
        ("http://8.8.8.8/v1", ParsedUrl("http", "8.8.8.8", 80, "/v1")),
        ("http://[2606:4700:4700::1111]:8080/", ParsedUrl("http", "2606:4700:4700::1111", 8080, "/")),
        ("http://[2002:808:808::1]/", ParsedUrl("http", "2002:808:808::1", 80, "/")),  # 6to4 of a public v4
        ("http://my_service.example/", ParsedUrl("http", "my_service.example", 80, "/")),
    ],
)  # fmt: skip
def test_check_url_accepts_and_normalises(url: str, expected: ParsedUrl) -> None:
    assert check_url(url, STRICT) == expected


@pytest.mark.parametrize(
    ("url", "rebuilt"),
    [
        ("HTTPS://API.Example.COM.:443/v1", "https://api.example.com/v1"),
        ("http://[2606:4700:4700:0::1111]:8080/a?b=c", "http://[2606:4700:4700::1111]:8080/a?b=c"),
        ("https://bücher.example:8443/", "https://xn--bcher-kva.example:8443/"),
    ],
)
def test_parsed_url_is_rebuilt_from_its_checked_parts(url: str, rebuilt: str) -> None:
    assert check_url(url, STRICT).url == rebuilt
    assert check_url(rebuilt, STRICT) == check_url(url, STRICT)


# --- check_url: syntax refusals ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "rule"),
    [
        ("ftp://example.com/", "only http and https"),
        ("file:///etc/passwd", "only http and https"),
        ("gopher://example.com:70/", "only http and https"),
        ("javascript:alert(1)", "only http and https"),
        ("example.com/v1", "only http and https"),
        ("//example.com/v1", "only http and https"),
        ("http://user:pass@example.com/", "user name or password"),
        ("http://user@example.com/", "user name or password"),
        ("http://example.com@127.0.0.1/", "user name or password"),
        ("http://@example.com/", "user name or password"),
        ("http://example.com/#frag", "fragment"),
        ("http://example.com/#", "fragment"),
        ("http:///v1", "no host"),
        ("http://:8080/v1", "no host"),
        ("http:example.com", "no host"),
        ("http://example.com:0/", "port"),
        ("http://example.com:65536/", "port"),
        ("http://example.com:-1/", "port"),
        ("http://example.com:+80/", "port"),
        ("http://example.com:8O/", "port"),
        ("http://example.com:٨٠/", "port"),
        ("http://example.com:1:2/", "more than one port"),
        (" http://example.com/", "whitespace"),
        ("http://example.com /", "whitespace"),
        ("http://exam\tple.com/", "whitespace"),
        ("http://example.com/\n", "whitespace"),
        ("http://example.com\r\nHost: evil/", "whitespace"),
        ("http://exa\x00mple.com/", "control"),
        ("http://exa\u200bmple.com/", "control"),
        ("http://example.com\u3000/", "whitespace"),
        ("http://example.com\\@127.0.0.1/", "backslash"),
        ("http://ex%61mple.com/", "percent"),
        ("http://[fe80::1%25eth0]/", "percent"),
        ("http://[::1/", "cannot be parsed"),
        ("http://[127.0.0.1]/", r"cannot be parsed|bracketed IPv6"),  # urlsplit refuses it on newer 3.11
        ("http://[::1]x/", "bracketed IPv6"),
        ("http://1.2.3.4.5/", "looks numeric"),
        ("http://4294967296/", "looks numeric"),
        ("http://256.0.0.1/", "looks numeric"),
        ("http://08.0.0.1/", "looks numeric"),
        ("http://example.0x10/", "looks numeric"),
        ("http://-example.com/", "not a valid host name"),
        ("http://exa..mple.com/", "not a valid host name"),
        ("http://" + "a" * 64 + ".com/", "not a valid host name"),
        ("http://ex!ample.com/", "not a valid host name"),
        ("http://xn--a.com\u0301/", "internationalised"),
        ("http://example.com/" + "a" * 2100, "longer than"),
    ],
)
def test_check_url_refuses(url: str, rule: str) -> None:
    with pytest.raises(UnsafeUrl, match=rule):
        check_url(url, STRICT)


# --- IP literals in every notation -------------------------------------------------------------------------------

LOOPBACK_NOTATIONS = [
    "127.0.0.1",
    "127.0.0.1.",
    "2130706433",
    "0x7f000001",
    "0X7F000001",
    "0177.0.0.1",
    "0177.0000.0.01",
    "017700000001",
    "127.1",
    "127.0.1",
    "0x7f.1",
    "0x7f.0.0.0x1",
    "１２７.０.０.１",  # noqa: RUF001 - full-width digits, mapped by IDNA as yarl does
    "[::1]",
    "[0:0:0:0:0:0:0:1]",
    "[::ffff:7f00:1]",
    "[::ffff:127.0.0.1]",
    "[::127.0.0.1]",
    "[2002:7f00:1::]",
    "[64:ff9b::7f00:1]",
    "localhost",
    "localhost.",
    "LocalHost",
    "api.localhost",
]


@pytest.mark.parametrize("host", LOOPBACK_NOTATIONS)
def test_loopback_in_every_notation_is_refused(host: str) -> None:
    with pytest.raises(UnsafeUrl, match=r"loopback|localhost"):
        check_url(f"http://{host}:8000/v1", STRICT)


@pytest.mark.parametrize("host", LOOPBACK_NOTATIONS)
def test_loopback_in_every_notation_is_allowed_with_allow_private(host: str) -> None:
    parsed = check_url(f"http://{host}:8000/v1", UrlPolicy(allow_private=True))
    assert parsed.port == 8000


@pytest.mark.parametrize(
    ("host", "rule", "address"),
    [
        ("0.0.0.0", "unspecified", "0.0.0.0"),
        ("0", "unspecified", "0.0.0.0"),
        ("0x0", "unspecified", "0.0.0.0"),
        ("[::]", "unspecified", "::"),
        ("10.0.0.5", "private", "10.0.0.5"),
        ("012.0.0.5", "private", "10.0.0.5"),
        ("167772165", "private", "10.0.0.5"),
        ("172.16.0.1", "private", "172.16.0.1"),
        ("172.31.255.255", "private", "172.31.255.255"),
        ("192.168.1.1", "private", "192.168.1.1"),
        ("0xc0.0xa8.1.1", "private", "192.168.1.1"),
        ("100.64.0.1", "CGNAT", "100.64.0.1"),
        ("100.127.255.254", "CGNAT", "100.127.255.254"),
        ("169.254.0.1", "link-local", "169.254.0.1"),
        ("[fe80::1]", "link-local", "fe80::1"),
        ("[febf::1]", "link-local", "febf::1"),
        ("[fd00::1]", "unique-local", "fd00::1"),
        ("[fc00::1]", "unique-local", "fc00::1"),
        ("224.0.0.1", "multicast", "224.0.0.1"),
        ("[ff02::1]", "multicast", "ff02::1"),
        ("240.0.0.1", "reserved", "240.0.0.1"),
        ("255.255.255.255", "reserved", "255.255.255.255"),
        ("0xffffffff", "reserved", "255.255.255.255"),
        ("192.0.2.1", "reserved", "192.0.2.1"),
        ("[2001:db8::1]", "reserved", "2001:db8::1"),
        ("[::ffff:10.0.0.5]", "IPv4-mapped IPv6 address of a private address, 10.0.0.5", "::ffff:a00:5"),
        ("[::ffff:a00:5]", "IPv4-mapped", "::ffff:a00:5"),
        ("[2002:c0a8:101::1]", "6to4 address of a private address, 192.168.1.1", "2002:c0a8:101::1"),
        ("[2001:0:4136:e378:8000:63bf:f5ff:fffa]", "Teredo address of a private address, 10.0.0.5", ""),
        ("[2001:0:a00:5::1]", "Teredo address of a private address, 10.0.0.5", ""),  # Teredo server 10.0.0.5
        ("[64:ff9b::a00:5]", "NAT64 address of a private address, 10.0.0.5", "64:ff9b::a00:5"),
    ],
)
def test_non_public_literals_are_refused_naming_the_rule(host: str, rule: str, address: str) -> None:
    with pytest.raises(UnsafeUrl, match=rule) as info:
        check_url(f"https://{host}/v1", STRICT)
    assert str(info.value).startswith("the host is ")
    if address:
        assert str(info.value).endswith(f"({address})")


@pytest.mark.parametrize(
    "host",
    [
        "169.254.169.254",
        "2852039166",
        "0xa9fea9fe",
        "0251.0376.0251.0376",
        "169.254.43518",
        "[::ffff:169.254.169.254]",
        "[::ffff:a9fe:a9fe]",
        "169.254.170.2",
        "100.100.100.200",
        "[fd00:ec2::254]",
    ],
)
def test_cloud_metadata_is_refused_even_with_allow_private(host: str) -> None:
    for policy in (STRICT, UrlPolicy(allow_private=True)):
        with pytest.raises(UnsafeUrl, match="cloud metadata"):
            check_url(f"http://{host}/latest/meta-data/", policy)


def test_cloud_metadata_can_be_allowed_only_by_naming_it() -> None:
    policy = UrlPolicy(allow_hosts=frozenset({"169.254.169.254"}))
    assert check_url("http://0xa9fea9fe/", policy).host == "169.254.169.254"


# --- parse_ipv4 matches inet_aton (which getaddrinfo uses for numeric hosts) -------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "127.0.0.1", "2130706433", "0x7f000001", "0177.0.0.1", "127.1", "127.0.1", "0x7f.1", "00000127.0.0.1",
        "0", "0x", "0x0", "00", "08", "09.1.1.1", "0xffffffff", "4294967295", "4294967296", "1.2.3.4.5", "1..2",
        "1.2.3.", ".1.2.3", "", "1.2.3.0x100", "1.2.65535", "1.2.65536", "1.16777215", "1.16777216", "256.1",
        "0x100.1", "1.0x1ffff", "0xG", "1e3", "-1", "+1", "1_0", "0x_1", " 1",
    ],
)  # fmt: skip
def test_parse_ipv4_agrees_with_inet_aton(text: str) -> None:
    assert _ours(text) == _inet_aton(text)


@given(st.text(alphabet="0123456789xXabcdefABCDEF.", max_size=24))
def test_parse_ipv4_agrees_with_inet_aton_on_any_numeric_text(text: str) -> None:
    assert _ours(text) == _inet_aton(text)


def _ours(text: str) -> str | None:
    parsed = parse_ipv4(text)
    return None if parsed is None else str(parsed)


def _inet_aton(text: str) -> str | None:
    try:
        return socket.inet_ntoa(socket.inet_aton(text))
    except (OSError, ValueError):
        return None


def test_address_problem_passes_public_addresses() -> None:
    for text in (PUBLIC_V4, "8.8.8.8", "1.1.1.1", PUBLIC_V6, "2002:808:808::1", "::ffff:8.8.8.8"):
        assert address_problem(ipaddress.ip_address(text)) is None, text


# --- allow and deny lists ----------------------------------------------------------------------------------------


def test_deny_hosts_exact_and_wildcard() -> None:
    policy = UrlPolicy(deny_hosts=frozenset({"evil.example", "*.internal.corp", "10.9.8.7"}))
    for url in (
        "https://evil.example/",
        "https://EVIL.example./",
        "https://a.internal.corp/",
        "https://a.b.internal.corp/",
        "http://10.9.8.7/",
        "http://0x0a090807/",
    ):
        with pytest.raises(UnsafeUrl, match="deny list"):
            check_url(url, policy)
    for url in ("https://internal.corp/", "https://notevil.example/", "https://xinternal.corp/"):
        assert check_url(url, policy)


def test_deny_wins_over_allow_and_allow_private() -> None:
    policy = UrlPolicy(
        allow_private=True, allow_hosts=frozenset({"vllm.lan"}), deny_hosts=frozenset({"vllm.lan", "*.lan"})
    )
    with pytest.raises(UnsafeUrl, match="deny list"):
        check_url("http://vllm.lan:8000/v1", policy)


def test_allow_hosts_lets_one_private_host_through_and_no_other() -> None:
    policy = UrlPolicy(allow_hosts=frozenset({"10.0.0.5", "*.vllm.lan"}))
    assert check_url("http://10.0.0.5:8000/v1", policy).host == "10.0.0.5"
    assert check_url("http://167772165:8000/v1", policy).host == "10.0.0.5"
    with pytest.raises(UnsafeUrl, match="private"):
        check_url("http://10.0.0.6:8000/v1", policy)


def test_policy_patterns_are_normalised_and_validated() -> None:
    policy = UrlPolicy(
        allow_hosts=frozenset({"VLLM.Lan.", "[::FFFF:0a00:0005]", "*.Bücher.example"}),
        deny_hosts=frozenset({"Evil.Example."}),
    )
    assert policy.allow_hosts == frozenset({"vllm.lan", "::ffff:a00:5", "*.xn--bcher-kva.example"})
    assert policy.deny_hosts == frozenset({"evil.example"})
    for bad in ("*", "*.", "a.*.b", ""):
        with pytest.raises(ValueError, match="host pattern"):
            UrlPolicy(deny_hosts=frozenset({bad}))


# --- resolve_checked with a fake resolver (DNS rebinding and names that point inside) ----------------------------


async def test_resolve_checked_returns_public_addresses() -> None:
    fake = dns(api_example_com=[PUBLIC_V4, PUBLIC_V6])
    assert await resolve_checked("api.example.com", 443, STRICT, getaddrinfo=fake) == [PUBLIC_V4, PUBLIC_V6]
    assert fake.calls == ["api.example.com"]


@pytest.mark.parametrize(
    ("answer", "rule"),
    [
        (["127.0.0.1"], "loopback"),
        (["10.0.0.5"], "private"),
        (["100.64.1.1"], "CGNAT"),
        (["169.254.169.254"], "cloud metadata"),
        (["0.0.0.0"], "unspecified"),
        (["::"], "unspecified"),
        (["::1"], "loopback"),
        (["::ffff:127.0.0.1"], "IPv4-mapped"),
        (["fe80::1"], "link-local"),
        (["fd12:3456::1"], "unique-local"),
        (["239.1.1.1"], "multicast"),
        (["2002:a00:5::1"], "6to4"),
        (["2001:0:4136:e378:8000:63bf:f5ff:fffa"], "Teredo"),
        ([PUBLIC_V4, "10.0.0.5"], "private"),  # ANY bad address refuses the name
        ([PUBLIC_V6, "::1"], "loopback"),
    ],
)
async def test_resolve_checked_refuses_a_public_looking_name_that_points_inside(answer: list[str], rule: str) -> None:
    fake = dns(api_example_com=answer)
    with pytest.raises(UnsafeUrl, match=rule) as info:
        await resolve_checked("api.example.com", 443, STRICT, getaddrinfo=fake)
    assert str(info.value).startswith("the host resolves to ")


async def test_resolve_checked_allow_private_and_allow_hosts() -> None:
    fake = dns(vllm_lan="10.0.0.5", other_lan="10.0.0.6")
    assert await resolve_checked("vllm.lan", 80, UrlPolicy(allow_private=True), getaddrinfo=fake) == ["10.0.0.5"]
    only_vllm = UrlPolicy(allow_hosts=frozenset({"vllm.lan"}))
    assert await resolve_checked("vllm.lan", 80, only_vllm, getaddrinfo=fake) == ["10.0.0.5"]
    with pytest.raises(UnsafeUrl, match="private"):
        await resolve_checked("other.lan", 80, only_vllm, getaddrinfo=fake)


async def test_metadata_behind_a_name_is_refused_even_with_allow_private() -> None:
    fake = dns(metadata_google_internal="169.254.169.254")
    with pytest.raises(UnsafeUrl, match="cloud metadata"):
        await resolve_checked("metadata.google.internal", 80, UrlPolicy(allow_private=True), getaddrinfo=fake)


async def test_denied_names_are_refused_before_any_lookup() -> None:
    fake = dns(evil_example=PUBLIC_V4)
    policy = UrlPolicy(deny_hosts=frozenset({"*.example"}))
    with pytest.raises(UnsafeUrl, match="deny list"):
        await resolve_checked("evil.example", 443, policy, getaddrinfo=fake)
    assert fake.calls == []


async def test_denied_addresses_are_refused_after_lookup() -> None:
    fake = dns(api_example_com=PUBLIC_V4)
    with pytest.raises(UnsafeUrl, match="denied address"):
        await resolve_checked("api.example.com", 443, UrlPolicy(deny_hosts=frozenset({PUBLIC_V4})), getaddrinfo=fake)


@pytest.mark.parametrize("host", ["2130706433", "0x7f000001", "0177.0.0.1", "127.1", "::1", "[::ffff:7f00:1]"])
async def test_resolve_checked_handles_literals_without_dns(host: str) -> None:
    fake = dns()
    with pytest.raises(UnsafeUrl, match="loopback"):
        await resolve_checked(host, 80, STRICT, getaddrinfo=fake)
    assert await resolve_checked(host, 80, UrlPolicy(allow_private=True), getaddrinfo=fake) in (
        ["127.0.0.1"],
        ["::1"],
        ["::ffff:7f00:1"],
    )
    assert fake.calls == []


async def test_resolve_checked_refuses_an_empty_answer_and_passes_on_dns_errors() -> None:
    fake = FakeDns({"empty.example": [[]]})
    with pytest.raises(UnsafeUrl, match="did not resolve"):
        await resolve_checked("empty.example", 80, STRICT, getaddrinfo=fake)
    with pytest.raises(socket.gaierror):
        await resolve_checked("nxdomain.example", 80, STRICT, getaddrinfo=fake)


async def test_resolve_checked_uses_the_event_loop_getaddrinfo_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = dns(api_example_com="10.1.2.3")
    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", fake)
    with pytest.raises(UnsafeUrl, match=r"private address \(10\.1\.2\.3\)"):
        await resolve_checked("api.example.com", 443, STRICT)
    assert fake.calls == ["api.example.com"]


async def test_validate_url_checks_syntax_then_resolution() -> None:
    fake = dns(api_example_com=PUBLIC_V4, rebound_example_com="192.168.0.10")
    parsed = await validate_url("https://API.example.com/v1", STRICT, getaddrinfo=fake)
    assert parsed.url == "https://api.example.com/v1"
    with pytest.raises(UnsafeUrl, match="private"):
        await validate_url("https://rebound.example.com/v1", STRICT, getaddrinfo=fake)
    with pytest.raises(UnsafeUrl, match="user name"):
        await validate_url("https://a@api.example.com/v1", STRICT, getaddrinfo=fake)


# --- PinnedResolver ----------------------------------------------------------------------------------------------


async def test_pinned_resolver_returns_checked_results_in_aiohttp_shape() -> None:
    resolver = PinnedResolver(STRICT, getaddrinfo=dns(api_example_com=[PUBLIC_V4, PUBLIC_V6]))
    results = await resolver.resolve("api.example.com", 443, socket.AF_UNSPEC)
    assert results == [
        {
            "hostname": "api.example.com",
            "host": PUBLIC_V4,
            "port": 443,
            "family": socket.AF_INET,
            "proto": socket.IPPROTO_TCP,
            "flags": socket.AI_NUMERICHOST | socket.AI_NUMERICSERV,
        },
        {
            "hostname": "api.example.com",
            "host": PUBLIC_V6,
            "port": 443,
            "family": socket.AF_INET6,
            "proto": socket.IPPROTO_TCP,
            "flags": socket.AI_NUMERICHOST | socket.AI_NUMERICSERV,
        },
    ]
    await resolver.close()


async def test_pinned_resolver_blocks_dns_rebinding() -> None:
    """Public at validation time, loopback a moment later: the second lookup is refused, not connected to."""
    fake = FakeDns({"rebind.example": [[PUBLIC_V4], ["127.0.0.1"]]})
    assert await validate_url("https://rebind.example/v1", STRICT, getaddrinfo=fake)
    resolver = PinnedResolver(STRICT, getaddrinfo=fake)
    with pytest.raises(BlockedAddress, match=r"loopback address \(127\.0\.0\.1\)"):
        await resolver.resolve("rebind.example", 443, socket.AF_UNSPEC)
    assert fake.calls == ["rebind.example", "rebind.example"]


# --- end to end through aiohttp: refused without touching the server, allowed with allow_private -----------------


@pytest.fixture
async def loopback_server() -> AsyncIterator[tuple[int, list[str]]]:
    seen: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Host", ""))
        return web.Response(text="hello")

    app = web.Application()
    app.router.add_get("/v1/models", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield port, seen
    finally:
        await runner.cleanup()


def session_with(policy: UrlPolicy, fake: GetAddrInfo) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(resolver=PinnedResolver(policy, getaddrinfo=fake), family=socket.AF_INET)
    return aiohttp.ClientSession(connector=connector)


async def test_aiohttp_refuses_a_name_that_resolves_to_loopback(loopback_server: tuple[int, list[str]]) -> None:
    port, seen = loopback_server
    fake = dns(provider_example_com="127.0.0.1")
    async with session_with(STRICT, fake) as session:
        with pytest.raises(aiohttp.ClientConnectorDNSError) as info:
            await session.get(f"http://provider.example.com:{port}/v1/models", allow_redirects=False)
    assert isinstance(info.value.os_error, BlockedAddress)
    assert "loopback" in str(info.value.os_error)
    assert fake.calls == ["provider.example.com"]
    assert seen == []


async def test_aiohttp_connects_to_the_pinned_address_when_allowed(loopback_server: tuple[int, list[str]]) -> None:
    port, seen = loopback_server
    fake = dns(provider_example_com="127.0.0.1")  # the name exists only in the fake, so the pin is what connects
    async with (
        session_with(UrlPolicy(allow_private=True), fake) as session,
        session.get(f"http://provider.example.com:{port}/v1/models", allow_redirects=False) as resp,
    ):
        assert resp.status == 200
        assert await resp.text() == "hello"
    assert seen == [f"provider.example.com:{port}"]


async def test_aiohttp_hex_literal_goes_through_the_pinned_resolver(loopback_server: tuple[int, list[str]]) -> None:
    """aiohttp treats ``0x7f000001`` as a name; the resolver parses it like inet_aton and applies the policy."""
    port, seen = loopback_server
    fake = dns()
    async with session_with(STRICT, fake) as session:
        with pytest.raises(aiohttp.ClientConnectorDNSError) as info:
            await session.get(f"http://0x7f000001:{port}/v1/models")
    assert isinstance(info.value.os_error, BlockedAddress)
    assert seen == []
    async with (
        session_with(UrlPolicy(allow_private=True), fake) as session,
        session.get(f"http://0x7f000001:{port}/v1/models") as resp,
    ):
        assert resp.status == 200
    assert fake.calls == []
    assert len(seen) == 1
