"""Which IP addresses outbound HTTP may reach (URL inputs, webhooks): the address rule of the SSRF
guard (rest/netguard.py), decided by rule rather than by the `ipaddress` module's tables (they
differ between Python versions: 3.11.7 calls 6to4 2002::/16 global).

- IPv4: refused when in a block that IANA's IPv4 Special-Purpose Address Registry marks as not
  globally reachable (private, loopback, link-local, shared 100.64/10, documentation, benchmarking,
  reserved 240/4, broadcast ...), or multicast (224/4). A few blocks inside 192.0.0.0/24 are
  globally reachable anycast (PCP, TURN) and are allowed.
- IPv6: an address that carries an IPv4 address is judged by that IPv4 address, every one it
  carries: IPv4-mapped ::ffff:a.b.c.d and IPv4-compatible ::a.b.c.d (RFC 4291), 6to4 2002::/16
  (RFC 3056), Teredo 2001::/32 server and client (RFC 4380; the client is stored XOR-obfuscated),
  NAT64 well-known prefix 64:ff9b::/96 (RFC 6052). The local-use NAT64 prefix 64:ff9b:1::/48
  (RFC 8215) is refused whatever it carries: it is not globally reachable by definition. Any other
  IPv6 address must be global unicast (2000::/3) and outside the blocks IANA's IPv6 Special-Purpose
  Address Registry marks as not globally reachable (documentation, benchmarking, ORCHID, SRv6 SIDs
  ...), and not multicast.

Registries: https://www.iana.org/assignments/iana-ipv4-special-registry and
https://www.iana.org/assignments/iana-ipv6-special-registry (both read as of 2025).
"""

from __future__ import annotations

import ipaddress
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

Address = IPv4Address | IPv6Address
V4, V6 = IPv4Network, IPv6Network

# IANA IPv4 special-purpose blocks whose "Globally Reachable" is False, and multicast.
V4_REFUSED = {
    V4("0.0.0.0/8"): "'this network'",
    V4("10.0.0.0/8"): "private",
    V4("100.64.0.0/10"): "shared address space (carrier-grade NAT)",
    V4("127.0.0.0/8"): "loopback",
    V4("169.254.0.0/16"): "link-local",
    V4("172.16.0.0/12"): "private",
    V4("192.0.0.0/24"): "IETF protocol assignments",
    V4("192.0.2.0/24"): "documentation",
    V4("192.88.99.0/24"): "deprecated 6to4 relay anycast",
    V4("192.168.0.0/16"): "private",
    V4("198.18.0.0/15"): "benchmarking",
    V4("198.51.100.0/24"): "documentation",
    V4("203.0.113.0/24"): "documentation",
    V4("224.0.0.0/4"): "multicast",
    V4("240.0.0.0/4"): "reserved",  # 255.255.255.255 (limited broadcast) is inside
}
V4_GLOBAL = (V4("192.0.0.9/32"), V4("192.0.0.10/32"))  # PCP and TURN anycast: globally reachable

# IANA IPv6 special-purpose blocks whose "Globally Reachable" is False (inside 2000::/3; everything
# outside it is refused anyway), and the globally reachable exceptions inside 2001::/23.
V6_REFUSED = {
    V6("2001::/23"): "IETF protocol assignments",
    V6("2001:db8::/32"): "documentation",
    V6("3fff::/20"): "documentation",
    V6("5f00::/16"): "SRv6 segment identifiers",
}
V6_GLOBAL = (
    V6("2001:1::1/128"), V6("2001:1::2/128"), V6("2001:1::3/128"),  # PCP, TURN, DNS-SD SRP anycast
    V6("2001:3::/32"), V6("2001:4:112::/48"),  # AMT, AS112-v6
    V6("2001:20::/28"), V6("2001:30::/28"),  # ORCHIDv2, drone remote ID
)  # fmt: skip
GLOBAL_UNICAST = V6("2000::/3")
LOOPBACK_V6, UNSPECIFIED_V6 = V6("::1/128"), V6("::/128")
MAPPED, COMPATIBLE = V6("::ffff:0:0/96"), V6("::/96")
NAT64, NAT64_LOCAL = V6("64:ff9b::/96"), V6("64:ff9b:1::/48")
SIXTOFOUR, TEREDO = V6("2002::/16"), V6("2001::/32")
LOW32 = 0xFFFFFFFF


def parse(ip_text: str) -> Address | None:
    """An address from text as getaddrinfo gives it (an IPv6 zone `%eth0` dropped); None if not one."""
    try:
        return ipaddress.ip_address(ip_text.split("%")[0])
    except ValueError:
        return None


def embedded_ipv4(ip: IPv6Address) -> tuple[IPv4Address, ...]:
    """The IPv4 addresses an IPv6 address carries (none for a plain IPv6 address)."""
    if ip in MAPPED or ip in NAT64 or ip in COMPATIBLE:
        return (IPv4Address(int(ip) & LOW32),)
    if ip in SIXTOFOUR:
        return (IPv4Address((int(ip) >> 80) & LOW32),)
    if ip in TEREDO:  # server in bits 32-63, client in the last 32 bits, inverted
        return (IPv4Address((int(ip) >> 64) & LOW32), IPv4Address(~int(ip) & LOW32))
    return ()


def refusal(ip_text: str) -> str | None:
    """Why outbound HTTP must not go to this address, or None when it is publicly routable."""
    ip = parse(ip_text)
    if ip is None:
        return "not an IP address"
    if isinstance(ip, IPv4Address):
        return _v4_refusal(ip)
    if ip in LOOPBACK_V6 or ip in UNSPECIFIED_V6:  # inside ::/96, but not IPv4-compatible addresses
        return "the IPv6 loopback or unspecified address"
    if ip in NAT64_LOCAL:
        return "local-use NAT64 prefix (not globally reachable)"
    carried = embedded_ipv4(ip)
    if carried:
        why = next((r for r in map(_v4_refusal, carried) if r is not None), None)
        return None if why is None else f"carries a {why} IPv4 address"
    if ip not in GLOBAL_UNICAST:  # loopback, unspecified, unique-local, link-local, multicast, reserved
        return "not a global unicast IPv6 address"
    if any(ip in net for net in V6_GLOBAL):
        return None
    return next((f"{what} range" for net, what in V6_REFUSED.items() if ip in net), None)


def _v4_refusal(ip: IPv4Address) -> str | None:
    if any(ip in net for net in V4_GLOBAL):
        return None
    return next((what for net, what in V4_REFUSED.items() if ip in net), None)


def check_address(ip_text: str) -> bool:
    """True when the address is publicly routable under the rule above."""
    return refusal(ip_text) is None


def same_destination(ip_text: str) -> Address | None:
    """The address a socket really reaches: an IPv4-mapped IPv6 address is its IPv4 address (the
    allow-list matches on this; 6to4, Teredo and NAT64 go through a relay, elsewhere)."""
    ip = parse(ip_text)
    if isinstance(ip, IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip
