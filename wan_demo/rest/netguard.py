"""The SSRF guard shared by URL image inputs (rest/inputs.py) and webhook deliveries (rest/webhooks.py),
and by any other URL a client may send (LoRA files, an end frame): every URL goes through
`parse_url`, which can only raise InvalidRequest naming the field (a 4xx), never a server error.

Outbound HTTP goes only to addresses that are publicly routable by the rule in rest/addresses.py
(special-purpose registries of both families; an IPv6 form that carries an IPv4 address is judged
by that address), or that a self-hoster allow-listed (Settings.webhook_allow_private, webhooks
only; matched on the address the socket reaches, an IPv4-mapped address as its IPv4). The host is
resolved once and the connection is pinned to a checked address, so a DNS answer that changes
between check and connect (rebinding) cannot redirect it; TLS still verifies the certificate for
the host name.
"""

from __future__ import annotations

import http.client
import ipaddress
import re
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from wan_demo.core.request import InvalidRequest
from wan_demo.core.rules import parse_networks  # noqa: F401  # one parser: settings check it at start
from wan_demo.rest.addresses import check_address, same_destination

__all__ = ["Url", "check_address", "parse_url", "reachable", "resolve"]

MAX_URL_CHARS = 2048
MAX_HOST_CHARS = 253  # DNS: a name is at most 253 characters, each label at most 63
PRINTABLE = re.compile(r"[!-~]*")  # printable ASCII, no space: what an HTTP request line may carry
AUTHORITY = re.compile(r"(?:\[(?P<ip6>[0-9A-Fa-f:.]+)\]|(?P<name>[A-Za-z0-9._-]+))(?::(?P<port>[^:\[\]]*))?")
LABEL = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], list[str]]


@dataclass(frozen=True)
class Url:
    """A URL that passed `parse_url`: the parts a pinned connection needs."""

    text: str  # as the client sent it
    scheme: str  # lower case
    hostname: str  # for DNS and TLS: lower case, an IPv6 literal without brackets
    port: int
    path: str  # "/" at least
    query: str  # "" when none (the fragment is never sent)

    @property
    def target(self) -> str:
        """What the request line asks for: path and query."""
        return self.path + (f"?{self.query}" if self.query else "")


def parse_url(value: object, field: str, schemes: tuple[str, ...]) -> Url:
    """The one URL parser: a URL of one of `schemes` with a host, an optional port and no
    user:password part, in printable ASCII (percent-encode anything else; a non-ASCII host name in
    its xn-- form). Raises InvalidRequest(field, rule) and nothing else, whatever `value` is."""
    try:
        return _parse(value, field, schemes)
    except InvalidRequest:
        raise
    except Exception as e:  # noqa: BLE001  # urllib's ValueErrors and anything else: a 4xx, never a 500
        raise InvalidRequest(field, f"is not a valid URL ({_short(str(e))})") from None


def _parse(value: object, field: str, schemes: tuple[str, ...]) -> Url:
    if not isinstance(value, str):
        raise InvalidRequest(field, f"must be a URL string, got {type(value).__name__}")
    if len(value) > MAX_URL_CHARS:
        raise InvalidRequest(field, f"is {len(value)} characters; the limit is {MAX_URL_CHARS}")
    bad = PRINTABLE.match(value).end()
    if bad < len(value):
        raise InvalidRequest(
            field, f"has {_short(value[bad])} at {bad}: only printable ASCII without spaces (percent-encode "
            "other characters; write a non-ASCII host name in its xn-- form)",
        )  # fmt: skip
    scheme, sep, rest = value.partition("://")
    if scheme.lower() not in schemes or not sep:
        raise InvalidRequest(field, f"only {' or '.join(schemes)} URLs are accepted")
    netloc = rest.split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]
    if "@" in netloc:
        raise InvalidRequest(field, "URL must have no user:password@ part")
    found = AUTHORITY.fullmatch(netloc)
    if found is None:
        why = "an unclosed '[' or a stray ']'" if netloc.count("[") != netloc.count("]") else "no valid host"
        raise InvalidRequest(field, f"URL has {why} (a host is a name, an IPv4 address or [an IPv6 address])")
    host = _host(found["ip6"], found["name"], field)
    port = _port(found["port"], scheme.lower(), field)
    parts = urlsplit(value)  # the authority is checked above; this splits path, query and fragment
    return Url(value, scheme.lower(), host, port, parts.path or "/", parts.query)


def _host(ip6: str | None, name: str | None, field: str) -> str:
    if ip6 is not None:
        try:
            return str(ipaddress.IPv6Address(ip6))
        except ValueError:
            raise InvalidRequest(field, f"URL has [{_short(ip6)}], which is not an IPv6 address") from None
    name = (name or "").lower()
    labels = name[:-1].split(".") if name.endswith(".") else name.split(".")
    if len(name) > MAX_HOST_CHARS or not all(LABEL.fullmatch(label) for label in labels):
        raise InvalidRequest(field, f"URL host {_short(name)} is not a valid host name")
    return name


def _port(text: str | None, scheme: str, field: str) -> int:
    if not text:  # none, or "host:" with nothing after the colon
        return 443 if scheme == "https" else 80
    if not re.fullmatch(r"[0-9]{1,5}", text) or not 1 <= int(text) <= 65535:
        raise InvalidRequest(field, f"URL has an invalid port {_short(text)} (use 1..65535)")
    return int(text)


def split_url(url: object, field: str, schemes: tuple[str, ...]) -> tuple[Url, int]:
    """`parse_url` under its former name, with the port beside it (callers written before it)."""
    parsed = parse_url(url, field, schemes)
    return parsed, parsed.port


def resolve(host: str, port: int, field: str = "url") -> list[str]:
    """Every address the host resolves to (once); InvalidRequest when it does not resolve."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError, ValueError) as e:
        why = e.strerror if isinstance(e, socket.gaierror) else "not a valid host name"
        raise InvalidRequest(field, f"host {host[:80]!r} does not resolve ({why})") from None
    return [info[4][0] for info in infos]


def reachable(
    url: Url, field: str, allow: Callable[[str], bool], resolver: Resolver | None = None, hint: str = ""
) -> list[str]:
    """The URL's host resolved once, every address checked by `allow`; the list to connect to.
    InvalidRequest(field) when the host does not resolve or any address is refused."""
    try:
        addresses = (resolver or resolve)(url.hostname, url.port)
    except InvalidRequest as e:
        raise InvalidRequest(field, e.rule) from None
    if not addresses or not all(allow(a) for a in addresses):
        raise InvalidRequest(field, f"host {url.hostname[:80]!r} is not a public address{hint}; URL refused")
    return addresses


def in_networks(ip_text: str, networks: tuple[Network, ...]) -> bool:
    ip = same_destination(ip_text)
    return ip is not None and any(ip.version == net.version and ip in net for net in networks)


def _short(text: str, limit: int = 40) -> str:
    shown = repr(text)
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."


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
