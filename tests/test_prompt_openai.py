"""OpenAI-compatible backend against a real HTTP stub server on 127.0.0.1 (no network)."""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from wan_demo.core.settings import Settings
from wan_demo.prompt.extend import extend_prompt
from wan_demo.prompt.openai_backend import image_data_uri
from wan_demo.prompt.text import MAX_OUTPUT_CHARS

GOOD = "A red kite climbs and dips in gusty wind while the camera tilts up slowly to follow it."


class Stub(ThreadingHTTPServer):
    """Answers POST /v1/chat/completions according to `mode`; records what it received."""

    mode = "ok"
    content: object = GOOD
    received: list[dict]


class Handler(BaseHTTPRequestHandler):
    server: Stub

    def log_message(self, *_args):  # keep test output quiet
        pass

    def do_POST(self):
        length = int(self.headers["Content-Length"])
        body = json.loads(self.rfile.read(length))
        self.server.received.append({"path": self.path, "auth": self.headers.get("Authorization"), **body})
        mode = self.server.mode
        if mode == "slow":
            time.sleep(1.5)
        if mode == "trickle":  # headers at once, then one byte every 0.3 s
            self._send(200, b"", length=40)
            for _ in range(40):
                try:
                    self.wfile.write(b" ")
                    self.wfile.flush()
                except OSError:  # the client gave up, as it should
                    return
                time.sleep(0.3)
            return
        if mode == "500":
            return self._send(500, b'{"error": "model crashed"}')
        if mode == "badjson":
            return self._send(200, b"<html>not json</html>")
        if mode == "nochoices":
            return self._send(200, b'{"choices": []}')
        answer = {"choices": [{"message": {"role": "assistant", "content": self.server.content}}]}
        self._send(200, json.dumps(answer).encode())

    def _send(self, status: int, payload: bytes, length: int | None = None):
        try:
            self._write(status, payload, length)
        except OSError:  # the client timed out and closed the socket
            pass

    def _write(self, status: int, payload: bytes, length: int | None):
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload) if length is None else length))
        self.end_headers()
        self.wfile.write(payload)


@pytest.fixture
def stub():
    server = Stub(("127.0.0.1", 0), Handler)
    server.received = []
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def openai_settings(stub: Stub, **changes) -> Settings:
    base = f"http://127.0.0.1:{stub.server_address[1]}/v1"
    return Settings(openai_base_url=base, openai_model="stub-vl", openai_api_key="k-123", **changes)


def test_openai_rewrite_and_request_shape(stub, image):
    stub.content = "Sure! Here is the prompt:\n" + GOOD
    final, info = extend_prompt("a red kite", image, openai_settings(stub, prompt_extender="openai"))
    assert final == GOOD and info["backend"] == "openai" and info["reason"] == "first choice"
    sent = stub.received[0]
    assert sent["path"] == "/v1/chat/completions" and sent["auth"] == "Bearer k-123"
    assert sent["model"] == "stub-vl" and sent["messages"][0]["role"] == "system"
    parts = sent["messages"][1]["content"]
    url = parts[0]["image_url"]["url"]
    assert url.startswith("data:image/jpeg;base64,") and "a red kite" in parts[1]["text"]


def test_auto_prefers_configured_endpoint(stub, image):
    final, info = extend_prompt("a red kite", image, openai_settings(stub))
    assert final == GOOD and info["backend"] == "openai"


def test_content_as_list_of_parts(stub, image):
    stub.content = [{"type": "text", "text": GOOD}]
    final, _info = extend_prompt("a red kite", image, openai_settings(stub))
    assert final == GOOD


@pytest.mark.parametrize(
    ("mode", "timeout_s", "error"),
    [
        ("500", 30, 'HTTP 500: {"error": "model crashed"}'),
        ("badjson", 30, "bad JSON response: JSONDecodeError"),
        ("nochoices", 30, "bad JSON response: IndexError"),
        ("slow", 0.5, "timeout after 0.5 s"),  # answers after 1.5 s
        ("trickle", 0.5, "timeout after 0.5 s"),  # 40 bytes at 0.3 s each: each read is quick
    ],
)
def test_failures_fall_back_to_rules(stub, image, mode, timeout_s, error):
    stub.mode = mode
    final, info = extend_prompt("a red kite", image, openai_settings(stub, prompt_timeout_s=timeout_s))
    assert info["backend"] == "rules" and final.startswith("a red kite.")
    assert info["attempts"][0]["backend"] == "openai" and info["attempts"][0]["error"].startswith(error)
    assert info["reason"].startswith("fallback after openai: ")


@pytest.mark.parametrize(
    ("content", "error"),
    [("", "empty output"), ("x" * (MAX_OUTPUT_CHARS + 1), "output too long"), (None, "bad JSON response")],
)
def test_unusable_answers_fall_back(stub, image, content, error):
    stub.content = content
    final, info = extend_prompt("a red kite", image, openai_settings(stub, prompt_extender="openai"))
    assert info["backend"] == "rules" and info["attempts"][0]["error"].startswith(error)


def test_unreachable_endpoint_falls_back(image):
    settings = Settings(openai_base_url="http://127.0.0.1:9/v1", openai_model="m", prompt_timeout_s=2)
    final, info = extend_prompt("一只猫", image, settings)
    assert info["backend"] == "rules" and "request failed: ConnectError" in info["attempts"][0]["error"]
    assert final.startswith("一只猫。")


def test_image_is_downscaled_jpeg():
    uri = image_data_uri(Image.new("RGB", (2000, 1000), (10, 200, 30)))
    decoded = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
    assert decoded.format == "JPEG" and decoded.size == (512, 256)
