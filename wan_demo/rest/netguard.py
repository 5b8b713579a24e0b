"""The SSRF guard shared by URL image inputs (rest/inputs.py) and webhook deliveries (rest/webhooks.py).

Outbound HTTP goes only to addresses that are publicly routable (IPv4-mapped IPv6 judged as its
IPv4, carrier-grade NAT 100.64/10 refused too), or that a self-hoster allow-listed
(Settings.webhook_allow_private, webhooks only). The host is resolved once and the connection is
pinned to a checked address, so a DNS answer that changes between check and connect (rebinding)
cannot redirect it; TLS still verifies the certificate for the host name.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
from collections.abc import Callable
from urllib.parse import SplitResult, urlsplit

from wan_demo.core.request import InvalidRequest
from wan_demo.core.rules import parse_networks  # noqa: F401  # one parser: settings check it at start

SHARED_NET = ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT, not global
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], list[str]]


def _ip(ip_text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    ip = ipaddress.ip_address(ip_text.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def check_address(ip_text: str) -> bool:
    """True when the address is publicly routable (IPv4-mapped IPv6 is judged as its IPv4)."""
    ip = _ip(ip_text)
    if ip.version == 4 and ip in SHARED_NET:
        return False
    return ip.is_global and not (ip.is_multicast or ip.is_reserved or ip.is_loopback or ip.is_link_local)


def in_networks(ip_text: str, networks: tuple[Network, ...]) -> bool:
    ip = _ip(ip_text)
    return any(ip.version == net.version and ip in net for net in networks)


def resolve(host: str, port: int, field: str = "url") -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as e:
        why = e.strerror if isinstance(e, socket.gaierror) else "not a valid host name"
        raise InvalidRequest(field, f"host {host[:80]!r} does not resolve ({why})") from None
    return [info[4][0] for info in infos]


def split_url(url: str, field: str, schemes: tuple[str, ...]) -> tuple[SplitResult, int]:
    """The URL's parts and port, refusing other schemes, a missing host and user:password parts."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in schemes:
        raise InvalidRequest(field, f"only {' or '.join(schemes)} URLs are accepted")
    if not parts.hostname or parts.username or parts.password:
        raise InvalidRequest(field, "URL must have a host and no user:password part")
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError:
        raise InvalidRequest(field, "URL has an invalid port") from None
    return parts, port


class PinnedHTTPS(http.client.HTTPSConnection):
    """HTTPS to a fixed, already-checked IP while verifying the certificate for the host name."""

    def __init__(self, host: str, ip: str, port: int, timeout: float, context: ssl.SSLContext):
        super().__init__(host, port, timeout=timeout, context=context)
        self._ip, self._ctx = ip, context

    def connect(self) -> None:
        sock = socket.create_connection((self._ip, self.port), self.timeout)
        self.sock = self._ctx.wrap_socket(sock, server_hostname=self.host)


class PinnedHTTP(http.client.HTTPConnection):
    """Plain HTTP to a fixed, already-checked IP (the Host header still names the host)."""

    def __init__(self, host: str, ip: str, port: int, timeout: float):
        super().__init__(host, port, timeout=timeout)
        self._ip = ip

    def connect(self) -> None:
        self.sock = socket.create_connection((self._ip, self.port), self.timeout)
