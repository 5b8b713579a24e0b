"""Hostile input, round three (issue 27), over real HTTP on 127.0.0.1 with the tiny model: broken
URLs and huge integers answer 4xx naming the field (never 500), IPv6 forms that carry a private
IPv4 address are refused as webhook targets and URL inputs, the private allow-list still works, and
the submit budgets count only what they should while every submit answer carries RateLimit-*."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from apitools import KEY_A, KEY_B, api_settings, auth, b64_image, body, serve
from conftest import make_image

BASE = "/api/v1/apikey/requests"
PNG = b64_image(make_image(32, 32))
SECRET = "w" * 40
RATE_HEADERS = ("ratelimit-limit", "ratelimit-remaining", "ratelimit-reset", "ratelimit-policy")


@pytest.fixture(scope="module")
def server(engine, tmp_path_factory):
    """URL inputs and webhooks on, no private allow-list; nothing generates (the worker is off)."""
    settings = api_settings(tmp_path_factory.mktemp("guard"), allow_url_inputs=True, webhook_secret=SECRET)
    with serve(settings, engine, run_worker=False) as running:
        yield running


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server[0], timeout=30) as c:
        yield c


def refused(r: httpx.Response, field: str, words: str = "") -> None:
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert (error["code"], error["field"]) == ("invalid_input", field) and words in error["message"], error


BROKEN_URLS = [
    "https://[::1", "https://[::1]x/", "https://::1]/", "https://[v1.x]/", "https://ex\uff03@evil/",
    "https://a b/", "https://e.com:99999/", "https://e.com:0/", "https://@e.com/", "https://e.com/\x00",
]  # fmt: skip


@pytest.mark.parametrize("url", BROKEN_URLS)
def test_a_broken_url_answers_422_naming_the_field(client, url):
    refused(client.post(BASE, json=body(url), headers=auth()), "payload.path_input_image")
    end = body(PNG, path_last_image=url)  # issue 24's end frame goes through the same parser
    refused(client.post(BASE, json=end, headers=auth()), "payload.path_last_image")
    refused(client.post(BASE, json={**body(PNG), "webhook_url": url}, headers=auth()), "webhook_url")


CARRIES_PRIVATE = [
    "https://[2002:7f00:1::1]/", "https://[2002:a9fe:a9fe::1]/", "https://[64:ff9b::a9fe:a9fe]/",
    "https://[::ffff:169.254.169.254]/", "https://[::7f00:1]/", "https://[64:ff9b:1::a00:1]/",
    "https://[2001:0:4136:e378:8000:63bf:80ff:fffe]/",  # Teredo, client 127.0.0.1 (obfuscated)
]  # fmt: skip


@pytest.mark.parametrize("url", CARRIES_PRIVATE)
def test_ipv6_forms_that_carry_a_private_ipv4_are_refused(client, url):
    """As a webhook target, and as a URL input before any connection (a connection attempt would
    answer "could not fetch")."""
    hook = client.post(BASE, json={**body(PNG), "webhook_url": url + "hook"}, headers=auth())
    refused(hook, "webhook_url", "not a public address")
    refused(client.post(BASE, json=body(url + "a.png"), headers=auth()), "payload.path_input_image",
            "not a public address")  # fmt: skip
    end = body(PNG, path_last_image=url + "b.png")
    refused(client.post(BASE, json=end, headers=auth()), "payload.path_last_image", "not a public address")


HUGE = [2**1024, 10**400, -(10**400), 2**1024 + 1]
NUMERIC = ["num_inference_steps", "fps", "guidance_scale", "flow_shift", "seed", "video_length"]


@pytest.mark.parametrize("name", NUMERIC)
def test_huge_integers_answer_422_naming_the_field(client, name):
    for value in HUGE:
        data = json.dumps(body(PNG)).replace('"prompt":', f'"{name}": {value}, "prompt":', 1)
        r = client.post(BASE, content=data.encode(), headers={**auth(), "Content-Type": "application/json"})
        refused(r, f"payload.{name}")
        assert len(r.text) < 1000  # the number is described, not echoed in full


def test_the_private_allow_list_still_works(engine, tmp_path):
    settings = api_settings(tmp_path, webhook_secret=SECRET, webhook_allow_private="127.0.0.1")
    with serve(settings, engine, run_worker=False) as (url, _, _), httpx.Client(base_url=url) as c:
        for target in ("http://127.0.0.1:9/hook", "http://[::ffff:127.0.0.1]:9/hook"):  # the same socket
            r = c.post(BASE, json={**body(PNG), "webhook_url": target}, headers=auth())
            assert r.status_code == 200, r.text
            c.post(f"{BASE}/{r.json()['request_id']}/cancel", headers=auth())
        six = c.post(
            BASE, json={**body(PNG), "webhook_url": "http://[2002:7f00:1::1]:9/hook"}, headers=auth()
        )
        refused(six, "webhook_url", "not a public address")  # 6to4 goes to a relay, not to 127.0.0.1


def remaining(r: httpx.Response) -> int:
    assert all(h in r.headers for h in RATE_HEADERS), (r.status_code, dict(r.headers))
    return int(r.headers["ratelimit-remaining"])


def test_only_accepted_submits_use_the_budget_and_every_answer_says_so(engine, tmp_path):
    settings = api_settings(tmp_path, submits_per_min=3, max_active_per_key=12, max_file_size_mb=1)
    with serve(settings, engine, run_worker=False) as (url, _, _), httpx.Client(base_url=url) as c:
        bad = [c.post(BASE, json=body(PNG, seed=-5), headers=auth()) for _ in range(6)]  # 422
        raw = {**auth(), "Content-Type": "application/json"}
        odd = [
            c.post(BASE, content=b"{not json", headers=raw),
            c.post(BASE, content=b"x" * 1_500_000, headers=raw),
        ]
        assert [r.status_code for r in bad + odd] == [422] * 6 + [400, 413]
        assert {remaining(r) for r in bad + odd} == {3}  # refusals leave the submit budget alone
        key = {**auth(), "Idempotency-Key": "once"}
        first = c.post(BASE, json=body(PNG, seed=0), headers=key)
        replay = c.post(BASE, json=body(PNG, seed=0), headers=key)  # queues nothing: a refusal's budget
        assert replay.headers["idempotent-replayed"] == "true"
        more = [c.post(BASE, json=body(PNG, seed=i), headers=auth()) for i in (1, 2)]
        answers = [(r.status_code, remaining(r)) for r in (first, replay, *more)]
        assert answers == [(200, 2), (200, 2), (200, 1), (200, 0)]
        over = c.post(BASE, json=body(PNG), headers=auth())
        assert over.status_code == 429 and over.json()["error"]["code"] == "rate_limited"
        assert 1 <= int(over.headers["retry-after"]) <= 60 and over.headers["ratelimit-policy"] == "3;w=60"
        assert "3 submits" in over.json()["error"]["message"] and remaining(over) == 0
        no_key = c.post(BASE, json=body(PNG), headers={"Authorization": "Bearer nope"})
        assert no_key.status_code == 401 and "ratelimit-limit" not in no_key.headers  # no key, no budget


def test_refusals_have_their_own_larger_budget(engine, tmp_path):
    settings = api_settings(tmp_path, submits_per_min=2)
    with serve(settings, engine, run_worker=False) as (url, _, _), httpx.Client(base_url=url) as c:
        answers = [c.post(BASE, json=body("/etc/passwd"), headers=auth(KEY_B)) for _ in range(21)]
        assert [r.status_code for r in answers] == [422] * 20 + [429]
        last = answers[-1]
        assert last.headers["ratelimit-limit"] == "20" and last.headers["ratelimit-policy"] == "20;w=60"
        assert "20 refused submits" in last.json()["error"]["message"] and last.headers["retry-after"]
        assert c.post(BASE, json=body(PNG), headers=auth(KEY_A)).status_code == 200  # per key


def test_parallel_submits_cannot_overshoot_the_budget(engine, tmp_path):
    settings = api_settings(tmp_path, submits_per_min=3, max_active_per_key=12)
    with serve(settings, engine, run_worker=False) as (url, _, _), httpx.Client(base_url=url) as c:

        def one(seed: int) -> int:
            return c.post(BASE, json=body(PNG, seed=seed), headers=auth()).status_code

        with ThreadPoolExecutor(10) as pool:
            statuses = sorted(pool.map(one, range(10)))
    assert statuses == [200] * 3 + [429] * 7


def test_a_batch_uses_one_submit_per_video(engine, tmp_path):
    """num_videos (issue 24) counts against the submit budget once per video; a batch that does not
    fit this minute answers 429 and queues nothing; one that never could is a field error."""
    settings = api_settings(tmp_path, submits_per_min=3, max_active_per_key=12)
    with serve(settings, engine, run_worker=False) as (url, service, _), httpx.Client(base_url=url) as c:
        keyed = {**auth(), "Idempotency-Key": "pair"}
        pair = c.post(BASE, json=body(PNG, num_videos=2), headers=keyed)
        assert pair.status_code == 200 and remaining(pair) == 1, pair.text
        replay = c.post(BASE, json=body(PNG, num_videos=2), headers=keyed)  # not charged as 2 new jobs
        assert replay.headers["idempotent-replayed"] == "true" and remaining(replay) == 1, replay.text
        assert replay.json()["request_ids"] == pair.json()["request_ids"]
        again = c.post(BASE, json=body(PNG, num_videos=2, seed=9), headers=auth())
        assert again.status_code == 429 and remaining(again) == 1 and again.headers["retry-after"], again.text
        assert "this submit adds 2" in again.json()["error"]["message"]
        four = c.post(BASE, json=body(PNG, num_videos=4, seed=9), headers=auth())
        refused(four, "payload.num_videos", "more than this key's 3 submits per minute")
        assert remaining(four) == 1
        assert service.jobs.list(service.keys.owner_of(f"Bearer {KEY_A}"))[1] == 2
        one = c.post(BASE, json=body(PNG, seed=10), headers=auth())
        assert one.status_code == 200 and remaining(one) == 0


def test_a_dripping_server_cannot_stretch_a_fetch_past_its_time_cap(tmp_path):
    """One byte every 0.3 s with a 1 s cap: the fetch ends by the cap (the socket's per-receive
    timeout alone would let it run as long as the server keeps dripping)."""
    import socket
    import ssl
    import threading
    import time

    from tlstools import self_signed

    from wan_demo.core.request import InvalidRequest
    from wan_demo.core.settings import Settings
    from wan_demo.rest.inputs import fetch_url

    cert, key, pem = self_signed("drip.example", tmp_path)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))
    port, sent = listener.getsockname()[1], []

    def drip() -> None:
        conn = server_ctx.wrap_socket(listener.accept()[0], server_side=True)
        conn.recv(4096)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\nConnection: close\r\n\r\n")
        try:
            for _ in range(40):  # up to 12 s of dripping
                time.sleep(0.3)
                conn.sendall(b"x")
                sent.append(1)
        except OSError:
            return  # the client hung up: what the cap should do
        finally:
            conn.close()

    threading.Thread(target=drip, daemon=True).start()
    settings = Settings(allow_url_inputs=True)
    context = ssl.create_default_context(cadata=pem)
    with pytest.raises(InvalidRequest, match=r"took longer than 1 s"):
        fetch_url(f"https://drip.example:{port}/x", settings, max_bytes=10**6, timeout_s=1.0,
                  resolver=lambda *_: ["127.0.0.1"], allow=lambda a: True, context=context)  # fmt: skip
    listener.close()
    assert len(sent) < 20  # stopped by the cap, not by the server running out of drips
