"""Payload image decoding and the SSRF guard. URL fetches go to a local TLS server on 127.0.0.1 with a
self-signed certificate for `images.test` (the resolver and address check are injected for that)."""

from __future__ import annotations

import base64
import io
import ssl

import pytest
from conftest import make_image
from tlstools import tls_server as serve_tls

from wan_demo.core.request import InvalidRequest
from wan_demo.core.settings import Settings
from wan_demo.rest.inputs import check_address, fetch_url, load_input_image

ON = Settings(allow_url_inputs=True)


def png_bytes() -> bytes:
    buf = io.BytesIO()
    make_image(64, 48).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize(
    "ip,ok",
    [
        ("93.184.216.34", True), ("2606:2800:220:1:248:1893:25c8:1946", True),
        ("127.0.0.1", False), ("10.1.2.3", False), ("172.16.0.1", False), ("192.168.1.1", False),
        ("169.254.169.254", False), ("100.64.0.1", False), ("100.127.255.254", False), ("0.0.0.0", False),
        ("::1", False), ("::ffff:127.0.0.1", False), ("::ffff:10.0.0.1", False), ("fe80::1%eth0", False),
        ("fc00::1", False), ("224.0.0.1", False), ("255.255.255.255", False),
    ],
)  # fmt: skip
def test_check_address(ip, ok):
    assert check_address(ip) is ok


@pytest.mark.parametrize(
    "url,resolved,rule",
    [
        ("http://example.com/a.png", ["93.184.216.34"], "only https"),
        ("https://user:pw@example.com/a.png", ["93.184.216.34"], "user:password"),
        ("https://localhost/a.png", ["127.0.0.1"], "not a public address"),
        ("https://[::ffff:127.0.0.1]/a.png", ["::ffff:127.0.0.1"], "not a public address"),
        ("https://rebind.test/a.png", ["93.184.216.34", "10.0.0.1"], "not a public address"),
        ("https://cgnat.test/a.png", ["100.64.1.1"], "not a public address"),
        ("https://meta.test/latest", ["169.254.169.254"], "not a public address"),
        ("https://example.com:99999/a.png", ["93.184.216.34"], "invalid port"),
    ],
)
def test_url_guard_refuses(url, resolved, rule):
    with pytest.raises(InvalidRequest, match=rule) as e:
        fetch_url(url, ON, resolver=lambda host, port: resolved)
    assert e.value.field == "payload.path_input_image"


def test_urls_off_by_default():
    with pytest.raises(InvalidRequest, match="disabled"):
        load_input_image("https://example.com/a.png", Settings())


def test_base64_and_data_uri_decode():
    data = png_bytes()
    for text in (base64.b64encode(data).decode(), "data:image/png;base64," + base64.b64encode(data).decode(),
                 base64.urlsafe_b64encode(data).decode().rstrip("=")):  # fmt: skip
        got = load_input_image(text, Settings())
        assert got.data == data and got.format == "PNG" and got.image.size == (64, 48)
        assert got.echo.startswith("<PNG image, ") and text not in got.echo
    with pytest.raises(InvalidRequest, match="never read"):
        load_input_image("/etc/hostname", Settings())


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory):
    """HTTPS on 127.0.0.1 serving /ok.png, /redirect, /big, /missing with a cert for images.test."""
    pytest.importorskip("cryptography")  # test-only: makes the self-signed certificate
    image = png_bytes()
    routes = {"/ok.png": (200, image), "/big": (200, b"\0" * 300_000), "/missing": (404, b"no")}
    folder = tmp_path_factory.mktemp("tls")
    with serve_tls("images.test", folder, routes, {"/redirect": "https://127.0.0.1/secret"}) as (
        port,
        ctx,
        _,
    ):
        yield port, ctx, image


def fetch(port, ctx, path, **kw):
    return fetch_url(
        f"https://images.test:{port}{path}", ON, resolver=lambda h, p: ["127.0.0.1"], allow=lambda ip: True,
        context=ctx, **kw,
    )  # fmt: skip


def test_fetch_once_over_verified_tls(tls_server):
    port, ctx, image = tls_server
    assert fetch(port, ctx, "/ok.png") == image
    with pytest.raises(InvalidRequest, match="redirects are not followed"):
        fetch(port, ctx, "/redirect")
    with pytest.raises(InvalidRequest, match="too big"):
        fetch(port, ctx, "/big", max_bytes=100_000)
    with pytest.raises(InvalidRequest, match="HTTP 404"):
        fetch(port, ctx, "/missing")
    with pytest.raises(InvalidRequest, match="could not fetch"):  # certificate not trusted
        fetch(port, ssl.create_default_context(), "/ok.png")
