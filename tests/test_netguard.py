"""The SSRF guard's rules, without a network: the one URL parser (only InvalidRequest naming the field,
whatever the text) and the address rule. The IPv6 forms that carry an IPv4 address are GENERATED
from lists of special-purpose and public IPv4 addresses (every form x every address), not listed by
hand; Python's own tables of non-global networks are a cross-check."""

from __future__ import annotations

import ipaddress
import itertools
from ipaddress import IPv4Address, IPv6Address, IPv6Network

import pytest

from wan_demo.core.request import InvalidRequest
from wan_demo.rest.addresses import V4_GLOBAL, V4_REFUSED, V6_GLOBAL, check_address, embedded_ipv4
from wan_demo.rest.netguard import in_networks, parse_networks, parse_url

# One address at each end of every refused IPv4 block, and a few well-known ones.
SPECIAL_V4 = sorted(
    {str(a) for net in V4_REFUSED for a in (net[0], net[-1]) if not any(a in g for g in V4_GLOBAL)}
    | {"127.0.0.1", "10.1.2.3", "169.254.169.254", "100.64.0.1", "192.168.1.1", "172.16.0.1", "0.0.0.0"}
)
PUBLIC_V4 = ["93.184.216.34", "8.8.8.8", "1.1.1.1", "151.101.1.69", "192.0.0.9"]
LOW32 = 0xFFFFFFFF


def rfc6052(prefix: IPv6Network, v4: IPv4Address) -> IPv6Address:
    """RFC 6052 section 2.2: the IPv4 address inside a /32../96 translation prefix (bits 64-71 zero)."""
    n, bits = int(v4), prefix.prefixlen
    if bits == 96:
        return IPv6Address(int(prefix.network_address) | n)
    before = 64 - bits  # IPv4 bits that fit between the prefix and bit 64
    high, low = n >> (32 - before), n & ((1 << (32 - before)) - 1)
    value = int(prefix.network_address) | (high << 64) | (low << (56 - (32 - before)))
    return IPv6Address(value)


def teredo(server: IPv4Address, client: IPv4Address, port: int = 40000) -> IPv6Address:
    """RFC 4380: 2001:0::/32, server IPv4, flags, then port and client IPv4 both XOR-obfuscated."""
    return IPv6Address(
        (0x20010000 << 96)
        | (int(server) << 64)
        | (0x8000 << 48)
        | ((~port & 0xFFFF) << 32)
        | (~int(client) & LOW32)
    )


def forms(v4: IPv4Address, other: IPv4Address) -> dict[str, IPv6Address]:
    """Every IPv6 form that carries `v4` (`other`: the second address where a form has two)."""
    n = int(v4)
    return {
        "mapped": IPv6Address((0xFFFF << 32) | n),
        "compatible": IPv6Address(n),
        "6to4": IPv6Address((0x2002 << 112) | (n << 80) | (0xBEEF << 64) | 1),
        "teredo-server": teredo(v4, other),
        "teredo-client": teredo(other, v4),
        "nat64": rfc6052(IPv6Network("64:ff9b::/96"), v4),
        **{
            f"nat64-local/{bits}": rfc6052(IPv6Network(f"64:ff9b:1::/{bits}"), v4)
            for bits in (48, 56, 64, 96)
        },
    }


SPECIAL_FORMS = [
    (f"{v4} {name}", str(ip))
    for v4 in SPECIAL_V4
    for name, ip in forms(IPv4Address(v4), IPv4Address("8.8.8.8")).items()
]


@pytest.mark.parametrize("case, ip", SPECIAL_FORMS, ids=[c for c, _ in SPECIAL_FORMS])
def test_every_form_carrying_a_special_ipv4_is_refused(case, ip):
    assert not check_address(ip), case


@pytest.mark.parametrize("v4", PUBLIC_V4)
def test_forms_carrying_a_public_ipv4_are_judged_by_it(v4):
    for name, ip in forms(IPv4Address(v4), IPv4Address("1.0.0.1")).items():
        if name.startswith("nat64-local"):  # local-use prefix: never globally reachable
            assert not check_address(str(ip)), name
        else:
            assert check_address(str(ip)), (name, ip)
            assert IPv4Address(v4) in embedded_ipv4(ip), name


def test_the_generated_forms_decode_back():
    """The generators above agree with the `ipaddress` module where it decodes a form itself."""
    v4, other = IPv4Address("169.254.169.254"), IPv4Address("8.8.8.8")
    made = forms(v4, other)
    assert made["6to4"].sixtofour == v4 and made["mapped"].ipv4_mapped == v4
    assert made["teredo-server"].teredo == (v4, other) and made["teredo-client"].teredo == (other, v4)
    assert str(made["nat64"]) == "64:ff9b::a9fe:a9fe"
    assert str(rfc6052(IPv6Network("2001:db8:100::/40"), IPv4Address("192.0.2.33"))) == "2001:db8:1c0:2:21::"


def test_the_issue_examples_and_plain_addresses():
    refused = [
        "2002:7f00:1::1",
        "2002:a9fe:a9fe::1",
        "::1",
        "::",
        "fe80::1%eth0",
        "fc00::1",
        "fd12::1",
        "ff02::1",
        "2001:db8::1",
        "3fff::1",
        "5f00::1",
        "2001:2::1",
        "100::1",
        "fec0::1",
        "junk",
    ]
    allowed = ["2606:2800:220:1:248:1893:25c8:1946", "2001:4860:4860::8888", "2001:1::1", "2001:20::1"]
    assert [ip for ip in refused if check_address(ip)] == []
    assert [ip for ip in allowed if not check_address(ip)] == []  # fmt: skip


def python_non_global() -> list[str]:
    """Both ends of every network Python's `ipaddress` module calls private or reserved."""
    tables = [ipaddress._IPv4Constants._private_networks, [ipaddress._IPv4Constants._reserved_network],  # noqa: SLF001
              ipaddress._IPv6Constants._private_networks, ipaddress._IPv6Constants._reserved_networks]  # noqa: SLF001  # fmt: skip
    return [str(a) for net in itertools.chain(*tables) for a in (net[0], net[-1])]


@pytest.mark.parametrize("ip", python_non_global())
def test_what_python_calls_non_global_is_refused_too(ip):
    """Except IANA's globally reachable anycast blocks (192.0.0.9, 2001:1::1 ...) and forms whose
    carried IPv4 address is public (then judged by it)."""
    address = ipaddress.ip_address(ip)
    carried = embedded_ipv4(address) if address.version == 6 else ()
    exempt = any(address in net for net in (*V4_GLOBAL, *V6_GLOBAL)) or (
        carried and all(check_address(str(a)) for a in carried)
    )
    assert exempt or not check_address(ip)


def test_the_allow_list_matches_the_address_the_socket_reaches():
    networks = parse_networks("127.0.0.1, 10.0.0.0/8, fd00::/8")
    assert in_networks("127.0.0.1", networks) and in_networks("::ffff:10.1.2.3", networks)
    assert in_networks("fd00::5", networks) and not in_networks("fe80::1", networks)
    assert not in_networks("2002:7f00:1::1", networks)  # 6to4 goes through a relay, elsewhere
    with pytest.raises(ValueError, match="not an IP address"):
        parse_networks("10.0.0.0/8, intranet")


BAD_URLS = [
    ("https://[::1", "unclosed '['"),
    ("https://::1]/", "unclosed '['"),
    ("https://[::1]x/", "no valid host"),
    ("https://[v1.x]/", "no valid host"),
    ("https://[zz]/", "no valid host"),
    ("https://[fe80::1%25eth0]/", "no valid host"),
    ("https://user:pw@example.com/", "user:password"),
    ("https://@example.com/", "user:password"),
    ("https://example.com\\@evil.test/", "user:password"),
    ("https://example.com:0/", "invalid port"),
    ("https://example.com:99999/", "invalid port"),
    ("https://example.com:+80/", "invalid port"),
    ("https://example.com:8o/", "invalid port"),
    ("https://a b/", "printable ASCII"),
    ("https://ex\uff03@evil/", "printable ASCII"),
    ("https://exämple.com/", "printable ASCII"),
    ("https://e.com/\x00", "printable ASCII"),
    ("https://" + "a" * 64 + ".com/", "not a valid host name"),
    ("https://a..b/", "not a valid host name"),
    ("ftp://example.com/", "only https"),
    ("https:/example.com", "only https"),
    ("https://", "no valid host"),
    ("https://e.com/" + "a" * 2040, "the limit is 2048"),
    (7, "must be a URL string"),
]


@pytest.mark.parametrize("url, words", BAD_URLS, ids=[repr(u)[:40] for u, _ in BAD_URLS])
def test_parse_url_refuses_with_the_field_named(url, words):
    with pytest.raises(InvalidRequest) as e:
        parse_url(url, "payload.some_url", ("https",))
    assert e.value.field == "payload.some_url" and words in e.value.rule, e.value.rule


def test_parse_url_parts():
    url = parse_url("HTTPS://Images.Example.COM:8443/a/b.png?x=1&y=%20#frag", "f", ("https",))
    assert (url.scheme, url.hostname, url.port, url.target) == ("https", "images.example.com", 8443,
                                                                "/a/b.png?x=1&y=%20")  # fmt: skip
    six = parse_url("http://[2001:DB8::1]/", "f", ("https", "http"))
    assert (six.hostname, six.port, six.target) == ("2001:db8::1", 80, "/")
