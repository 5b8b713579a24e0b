"""Webhooks against the real server (`python app.py`, tiny model) and a real receiver on 127.0.0.1
(allow-listed with WAN_DEMO_WEBHOOK_ALLOW_PRIVATE): signed `processing` and `completed` deliveries
that verify with the standardwebhooks library's verifier; a receiver that is down for the first
tries gets them after a retry; a server SIGKILLed with a pending delivery delivers it after its
restart. One server process for the module (two process starts in all: the first start and the
restart after the kill). Refusals of non-public webhook URLs: tests/test_api_clients.py.
"""

from __future__ import annotations

import http.server
import json
import subprocess
import sys
import threading
import time

import httpx
import pytest
from apitools import KEY_A, auth, b64_image, body, wait_status
from conftest import make_image
from doctools import fenced, read
from standardwebhooks import Webhook, WebhookVerificationError
from test_durability import ROOT, free_port, kill, server_env, start

BASE = "/api/v1/apikey"
DONE = ("success", "failed", "cancelled")
MASTER = "test-master-secret-" + "x" * 24  # >= 32 characters
PNG = b64_image(make_image(96, 64))


class Receiver:
    """A webhook endpoint on 127.0.0.1 that can be taken down (nothing listens: connection refused)
    and brought up again on the same port. Records (headers, body) of every POST and answers 204."""

    def __init__(self):
        self.port, self.calls, self._server = free_port(), [], None
        self.url = f"http://127.0.0.1:{self.port}/hooks/wan?source=test"

    def up(self) -> None:
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802  # the stdlib's handler name
                data = self.rfile.read(int(self.headers.get("content-length", 0)))
                outer.calls.append(({k.lower(): v for k, v in self.headers.items()}, data, self.path))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):  # quiet
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def down(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def for_request(self, request_id: str, n: int, timeout: float = 90) -> list[tuple[dict, bytes, str]]:
        """The first `n` deliveries about `request_id` (waits for them, bounded)."""
        deadline = time.monotonic() + timeout
        while True:
            found = [c for c in self.calls if json.loads(c[1])["request_id"] == request_id]
            if len(found) >= n or time.monotonic() > deadline:
                return found
            time.sleep(0.1)


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    """The server process (restartable) and the receiver; yields a small namespace."""
    tmp = tmp_path_factory.mktemp("webhooks")
    port, receiver = free_port(), Receiver()
    env = server_env(tmp, port, WAN_DEMO_WEBHOOK_SECRET=MASTER, WAN_DEMO_WEBHOOK_ALLOW_PRIVATE="127.0.0.1",
                     WAN_DEMO_WEBHOOK_RETRY_S="1", WAN_DEMO_STEPS="1")  # fmt: skip
    state = {"env": env, "log": tmp / "server.log", "url": f"http://127.0.0.1:{port}", "receiver": receiver}
    state["proc"] = start(env, state["log"])
    try:
        yield state
    finally:
        kill(state["proc"])
        receiver.down()


@pytest.fixture(scope="module")
def secret(node) -> str:
    """KEY_A's signing secret, as the admin command prints it (shown once to that client)."""
    out = subprocess.run(
        [sys.executable, "-m", "wan_demo.rest.keys", "--webhook-secret", KEY_A],
        cwd=ROOT, env=node["env"], capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return out.stdout.strip()


def submit(client: httpx.Client, url: str, events=("processing", "completed")) -> str:
    data = {**body(PNG), "webhook_url": url, "webhook_events": list(events)}
    r = client.post(f"{BASE}/requests", json=data, headers=auth())
    assert r.status_code == 200, r.text
    return r.json()["request_id"]


def check_signed(calls, secret: str, request_id: str) -> list[dict]:
    """Every call verifies with the library's verifier; returns the bodies, in delivery order."""
    bodies = [Webhook(secret).verify(data, headers) for headers, data, _path in calls]
    assert [b["request_id"] for b in bodies] == [request_id] * len(calls)
    assert [h["webhook-event"] for h, _d, _p in calls] == ["processing", "completed"]
    assert len({h["webhook-id"] for h, _d, _p in calls}) == len(calls)  # one id per event
    return bodies


def docs_handler(secret: str):
    """docs/rest-api.md's verification block, run as written with only the secret filled in."""
    code = next(b for b in fenced(read("docs/rest-api.md"), "python") if "Webhook(SECRET)" in b)
    namespace: dict = {}
    exec(compile(code.replace('"whsec_..."', repr(secret)), "docs/rest-api.md", "exec"), namespace)  # noqa: S102
    return namespace["handle"]


def wait_webhook(client, request_id: str, ready, timeout: float = 60) -> dict:
    """Poll GET until `ready(view)`; returns the view."""
    deadline = time.monotonic() + timeout
    while True:
        view = client.get(f"{BASE}/requests/{request_id}", headers=auth()).json()
        if ready(view) or time.monotonic() > deadline:
            return view
        time.sleep(0.1)


def failing(view: dict) -> bool:
    hook = view["webhook"]
    return view["status"] == "success" and hook["attempts"] >= 2 and hook["next_attempt_at"] is not None


def test_processing_and_completed_are_signed_and_verify(node, secret):
    receiver = node["receiver"]
    receiver.up()
    with httpx.Client(base_url=node["url"], timeout=30) as client:
        rid = submit(client, receiver.url)
        final = wait_status(client, f"{BASE}/requests/{rid}", DONE, timeout=120)
        calls = receiver.for_request(rid, 2)
        view = wait_webhook(client, rid, lambda v: v["webhook"]["delivered"] == 2)
    assert final["status"] == "success", final
    processing, completed = check_signed(calls, secret, rid)
    assert (processing["status"], completed["status"]) == ("processing", "success")
    assert completed["outcome"] == final["outcome"] and completed["seed_used"] == final["seed_used"]
    assert calls[0][2] == "/hooks/wan?source=test"  # the path and query as given
    headers, data, _ = calls[1]
    with pytest.raises(WebhookVerificationError):  # a changed body or another key's secret fails
        Webhook(secret).verify(data.replace(b"success", b"failed!"), headers)
    with pytest.raises(WebhookVerificationError):
        Webhook("whsec_" + "A" * 44).verify(data, headers)
    assert docs_handler(secret)(data, headers) == completed  # the docs' receiver snippet, as written
    hook = view["webhook"]
    assert (hook["url"], hook["events"]) == (receiver.url, ["processing", "completed"])
    assert (hook["last_status"], hook["attempts"], hook["pending"], hook["next_attempt_at"]) == (
        204,
        2,
        0,
        None,
    )


def test_a_receiver_down_for_the_first_tries_gets_them_after_a_retry(node, secret):
    receiver = node["receiver"]
    receiver.down()
    with httpx.Client(base_url=node["url"], timeout=30) as client:
        rid = submit(client, receiver.url)
        view = wait_webhook(client, rid, failing, timeout=120)
        hook = view["webhook"]
        assert failing(view), view  # attempts made, the failure shown, the next attempt scheduled
        assert hook["last_status"] is None and "connection failed" in hook["last_error"]
        assert hook["pending"] == 2 and hook["next_attempt_at"] >= int(time.time()) - 1
        receiver.up()
        calls = receiver.for_request(rid, 2)
        view = wait_webhook(client, rid, lambda v: v["webhook"]["delivered"] == 2)
    check_signed(calls, secret, rid)
    assert view["webhook"]["attempts"] >= 3 and view["webhook"]["last_status"] == 204


@pytest.mark.system  # SIGKILL and a restart
def test_a_pending_delivery_survives_sigkill_and_is_delivered_after_restart(node, secret):
    receiver = node["receiver"]
    receiver.down()
    with httpx.Client(base_url=node["url"], timeout=30) as client:
        rid = submit(client, receiver.url)
        assert failing(wait_webhook(client, rid, failing, timeout=120))
    kill(node["proc"])  # SIGKILL: the outbox row is all that remembers the delivery
    receiver.up()
    node["proc"] = start(node["env"], node["log"])
    calls = receiver.for_request(rid, 2)  # an attempt cut by the kill is due again after its lease
    check_signed(calls, secret, rid)
    with httpx.Client(base_url=node["url"], timeout=30) as client:
        view = wait_webhook(client, rid, lambda v: v["webhook"]["delivered"] == 2)
    assert view["webhook"]["pending"] == 0 and view["status"] == "success"
