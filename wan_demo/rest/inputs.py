"""REST input images: base64 / data URI, or (opt-in) an https URL fetched once behind an SSRF guard.

`path_input_image` is NEVER read as a server path (Gradio's CVE-2024-47868 class of bug). Decoding
goes through image.decode_image (JPEG/PNG/WEBP only, pixel cap before decoding).
"""

from __future__ import annotations

import base64
import binascii
import http.client
import re
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

from PIL import Image

from wan_demo.core.request import InvalidRequest
from wan_demo.core.settings import Settings
from wan_demo.media.image import decode_image
from wan_demo.rest.netguard import PinnedHTTPS, Resolver, Url, check_address, parse_url, reachable

FIELD = "payload.path_input_image"
DATA_URI_TYPES = ("image/jpeg", "image/jpg", "image/png", "image/webp")
URL_TIMEOUT_S = 10.0  # whole fetch: connect + headers + body
ECHO_CHARS = 200  # inputs up to this length are echoed back as given
FORMS_HINT = "send base64, a data URI or an https URL; server file paths are never read"
BASE64_RE = re.compile(r"^[A-Za-z0-9+/_-]+={0,2}$")

__all__ = ["check_address", "fetch_url", "load_input_image"]  # check_address: the guard's, re-exported


@dataclass(frozen=True)
class InputImage:
    data: bytes  # the bytes as received (stored at submit, decoded again by the dispatcher)
    image: Image.Image
    format: str  # "JPEG" | "PNG" | "WEBP"
    echo: str  # what GET shows as path_input_image: as given if short, else a summary


def load_input_image(value: object, settings: Settings, field: str = FIELD) -> InputImage:
    """Turn `path_input_image` into checked image bytes. Raises InvalidRequest naming the rule."""
    if not isinstance(value, str):
        raise InvalidRequest(
            field, f"must be a string (base64, data URI or https URL), got {type(value).__name__}"
        )
    text = value.strip()
    if not text:
        raise InvalidRequest(field, "is required")
    max_bytes = settings.max_file_size_mb * 1024 * 1024
    if text.lower().startswith(("https://", "http://")):
        data = fetch_url(text, settings, field, max_bytes)
    else:
        data = decode_base64(text, field, max_bytes)
    image = decode_image(data, field)
    echo = (
        text if len(text) <= ECHO_CHARS else f"<{image.format} image, {len(data)} bytes, {len(text)} chars>"
    )
    return InputImage(data, image, image.format, echo)


def decode_base64(text: str, field: str, max_bytes: int) -> bytes:
    if text.startswith("data:"):
        header, sep, text = text.partition(",")
        media = header[5:].split(";")[0].lower()
        if not sep or ";base64" not in header.lower():
            raise InvalidRequest(field, "data URI must be base64-encoded (data:image/png;base64,...)")
        if media not in DATA_URI_TYPES:
            raise InvalidRequest(
                field, f"data URI type {media!r} is not allowed; use image/jpeg, image/png or image/webp"
            )
    text = "".join(text.split())  # line breaks are common in pasted base64
    if not BASE64_RE.match(text):
        raise InvalidRequest(field, f"is not valid base64 ({FORMS_HINT})")
    if len(text) * 3 // 4 > max_bytes:
        raise InvalidRequest(field, f"image is too big; the limit is {max_bytes // (1024 * 1024)} MB")
    try:
        decode = base64.urlsafe_b64decode if re.search(r"[-_]", text) else base64.b64decode
        return decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise InvalidRequest(field, f"is not valid base64 ({FORMS_HINT})") from None


def fetch_url(
    url: str,
    settings: Settings,
    field: str = FIELD,
    max_bytes: int = 20 * 1024 * 1024,
    resolver: Resolver | None = None,
    allow: Callable[[str], bool] = check_address,
    context: ssl.SSLContext | None = None,
    timeout_s: float = URL_TIMEOUT_S,
    sink: BinaryIO | None = None,
    what: str = "image",
) -> bytes:
    """GET an https URL once: every resolved address must be global, the connection goes to a checked
    address (no DNS rebinding), no redirects, a whole-fetch time cap and a byte cap. With `sink` the
    body is written there as it arrives (b"" is returned); `what` names it in messages."""
    if not settings.allow_url_inputs:
        instead = "send base64 or a data URI" if what == "image" else "use a library name or a hub file"
        raise InvalidRequest(field, f"URL inputs are disabled on this server; {instead}")
    target = parse_url(url, field, ("https",))
    addresses = reachable(target, field, allow, resolver)
    limits = Limits(field, what, max_bytes, timeout_s)
    try:
        return _get(target, addresses[0], limits, context or ssl.create_default_context(), sink)
    except InvalidRequest:
        raise
    except (OSError, http.client.HTTPException, ValueError) as e:  # ValueError: a bad header line
        raise InvalidRequest(field, f"could not fetch the URL ({type(e).__name__})") from None


@dataclass(frozen=True)
class Limits:
    field: str
    what: str  # "image" | "LoRA file": named in messages
    max_bytes: int
    timeout_s: float


def _get(url: Url, ip: str, limits: Limits, context: ssl.SSLContext, sink: BinaryIO | None = None) -> bytes:
    deadline = time.monotonic() + limits.timeout_s
    conn = PinnedHTTPS(url.hostname, ip, url.port, limits.timeout_s, context)
    field, accept = limits.field, "image/*" if limits.what == "image" else "*/*"
    try:
        conn.request("GET", url.target, headers={"User-Agent": "wan-demo/1", "Accept": accept})
        sock = conn.sock  # kept: an answer with "Connection: close" takes it from conn
        resp = conn.getresponse()
        if 300 <= resp.status < 400:
            raise InvalidRequest(
                field, f"URL answered {resp.status} (a redirect); redirects are not followed"
            )
        if resp.status != 200:
            raise InvalidRequest(field, f"URL answered HTTP {resp.status}")
        chunks, size = [], 0
        while chunk := _read_by(sock, resp, deadline, limits):
            size += len(chunk)
            if size > limits.max_bytes:
                limit = limits.max_bytes // (1024 * 1024)
                raise InvalidRequest(field, f"{limits.what} is too big; the limit is {limit} MB")
            if time.monotonic() > deadline:
                raise InvalidRequest(field, f"URL took longer than {limits.timeout_s:g} s")
            if sink is None:
                chunks.append(chunk)
            else:
                sink.write(chunk)
        return b"".join(chunks)
    finally:
        conn.close()


def _read_by(sock, resp, deadline: float, limits: Limits) -> bytes:
    """The next bytes of the body (at most 64 KiB, b"" at its end), waiting no later than `deadline`: a
    server dripping a byte at a time cannot stretch the fetch past the whole-fetch cap."""
    left = deadline - time.monotonic()
    try:
        if left <= 0:
            raise TimeoutError
        sock.settimeout(left)  # every wait for the network ends at the deadline
        return resp.read1(64 * 1024)  # one receive, not "until 64 KiB"
    except TimeoutError:
        raise InvalidRequest(limits.field, f"URL took longer than {limits.timeout_s:g} s") from None


def lora_fetcher(settings: Settings, **guard) -> Callable[[str, BinaryIO], None]:
    """The LoRA library's fetcher for https URLs (model/lora_library.Fetch): these URL rules, with
    the LoRA size cap (Settings.lora_max_mb) and time cap (lora_fetch_timeout_s). `guard`: resolver,
    allow, context (tests aim it at a local TLS server)."""

    def fetch(url: str, sink: BinaryIO) -> None:
        max_bytes = settings.lora_max_mb * 1024 * 1024
        fetch_url(url, settings, "loras", max_bytes, timeout_s=settings.lora_fetch_timeout_s, sink=sink,
                  what="LoRA file", **guard)  # fmt: skip

    return fetch
