"""Hostile input never breaks a tenant (issue 16), over real HTTP on 127.0.0.1 with the tiny model:
text that UTF-8 cannot carry is refused at the edge, every query parameter is range-checked, an
unhandled error answers JSON with an id found in the log, and a damaged stored row renders with an
error instead of breaking GET, list or cancel for the key's other requests."""

from __future__ import annotations

import json
import logging
import re
import sqlite3

import httpx
import pytest
from apitools import KEY_B, api_settings, auth, b64_image, body, serve
from conftest import make_image

from wan_demo.jobs.common import Job, Status
from wan_demo.jobs.worker import Worker

BASE = "/api/v1/apikey/requests"
PNG = b64_image(make_image(32, 32))
JSON_HEADERS = {**auth(), "Content-Type": "application/json"}


@pytest.fixture(scope="module")
def server(engine, tmp_path_factory):
    with serve(api_settings(tmp_path_factory.mktemp("hostile")), engine, run_worker=False) as running:
        yield running


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server[0], timeout=30) as c:
        yield c


def raw_submit(client: httpx.Client, prompt_json: str) -> httpx.Response:
    """`prompt_json` goes into the body as written: JSON escapes like \\ud800 reach the server."""
    data = json.dumps(body(PNG)).replace('"a cat walks on grass"', prompt_json)
    return client.post(BASE, content=data.encode(), headers=JSON_HEADERS)


@pytest.mark.parametrize(
    "prompt_json, words",
    [
        (r'"cat \ud800"', "lone surrogate U+D800"),
        (r'"\udcff"', "lone surrogate U+DCFF"),
        (r'"a\u0000b"', "NUL"),
    ],
)
def test_text_that_utf8_cannot_carry_is_refused(client, prompt_json, words):
    before = client.get(BASE, headers=auth()).json()["total"]
    r = raw_submit(client, prompt_json)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert (error["code"], error["field"]) == ("invalid_input", "payload.prompt")
    assert words in error["message"]
    listing = client.get(BASE, headers=auth())
    assert listing.status_code == 200 and listing.json()["total"] == before  # nothing stored


def test_unknown_fields_are_refused_at_every_level(client):
    top = client.post(BASE, json={**body(PNG), "priority": "high"}, headers=auth())
    assert top.status_code == 422 and top.json()["error"]["field"] == "priority", top.text
    inner = client.post(BASE, json=body(PNG, priority="high"), headers=auth())
    assert inner.status_code == 422 and inner.json()["error"]["field"] == "payload.priority"
    odd = '{"model": "m", "\\ud800": 1, "payload": {}}'  # a field name JSON-over-UTF-8 cannot carry
    r = client.post(BASE, content=odd.encode(), headers=JSON_HEADERS)
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_input", r.text


@pytest.mark.parametrize(
    "path, params, field",
    [
        ("", {"offset": "99999999999999999999"}, "offset"),
        ("", {"offset": str(2**63)}, "offset"),
        ("", {"offset": "-1"}, "offset"),
        ("", {"limit": "0"}, "limit"),
        ("", {"limit": "101"}, "limit"),
        ("", {"limit": "ten"}, "limit"),
        ("", {"status": "exploded"}, "status"),
        ("", {"model_id": "m" * 129}, "model_id"),
        ("/" + "r" * 65, {}, "request_id"),
        ("/" + "r" * 65 + "/cancel", {}, "request_id"),
    ],
)
def test_every_parameter_is_range_checked(client, path, params, field):
    method = "POST" if path.endswith("/cancel") else "GET"
    r = client.request(method, BASE + path, params=params, headers=auth())
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "invalid_input" and r.json()["error"]["field"] == field


def test_an_unhandled_error_answers_json_with_an_id_that_the_log_has(client, server, monkeypatch, caplog):
    """Fault injection: the job service's listing raises (as a broken disk or a bug would)."""

    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire at /srv/secret/requests.sqlite3")

    monkeypatch.setattr(server[1].jobs, "list", broken)
    with caplog.at_level(logging.ERROR, logger="wan_demo.rest.errors"):
        r = client.get(BASE, headers=auth())
    assert r.status_code == 500 and r.headers["content-type"] == "application/json"
    error = r.json()["error"]
    assert error["code"] == "internal" and re.fullmatch(r"[0-9a-f]{32}", error["request_id"])
    assert r.headers["x-request-id"] == error["request_id"] and error["request_id"] in error["message"]
    assert "secret" not in r.text and "Traceback" not in r.text and "RuntimeError" not in r.text
    logged = [rec for rec in caplog.records if error["request_id"] in rec.getMessage()]
    assert logged and logged[0].exc_info and "disk on fire" in str(logged[0].exc_info[1])
    monkeypatch.undo()
    assert client.get(BASE, headers=auth()).status_code == 200  # the server goes on


def plant_damaged_rows(store, owner: str) -> dict[str, str]:
    """Rows as a bug, an older version or a bad disk could have left them, written past the store.
    Returns request_id -> the status GET shows."""
    damage = {
        # the first landing stored JSON with ASCII escapes: a lone surrogate came back on read
        "escaped-surrogate": ("payload", json.dumps({"prompt": "cat \ud800"})),
        "not-json": ("payload", "{oops"),
        "bad-status": ("status", "exploded"),
        "bad-utf8": ("error_message", b"cat\n\xff"),  # bytes: not valid UTF-8
    }
    for rid in ("good", *damage):
        store.add(Job(rid, owner, "rest", "M", {"prompt": "p"}, {"prompt": "p"}, f"/in/{rid}.png"))
    db = sqlite3.connect(store.path)
    for rid, (column, value) in damage.items():
        cast = "CAST(? AS TEXT)" if isinstance(value, bytes) else "?"
        db.execute(f"UPDATE requests SET {column} = {cast} WHERE request_id = ?", (value, rid))
    db.commit()
    db.close()
    return {"good": "queued", **{rid: "queued" for rid in damage}, "bad-status": "failed"}


def test_a_damaged_row_renders_with_an_error_and_breaks_nothing_else(client, server):
    service = server[1]
    owner = service.keys.owner_of(f"Bearer {KEY_B}")
    expected = plant_damaged_rows(service.jobs.store, owner)
    listing = client.get(BASE, headers=auth(KEY_B))
    assert listing.status_code == 200, listing.text
    shown = {r["request_id"]: r for r in listing.json()["requests"]}
    assert set(shown) == set(expected)  # none skipped
    assert shown["good"]["error"] is None and shown["good"]["payload"] == {"prompt": "p"}
    for rid, status in expected.items():
        one = client.get(f"{BASE}/{rid}", headers=auth(KEY_B))
        assert one.status_code == 200 and one.json()["status"] == status, one.text
        if rid != "good":
            assert one.json()["error"]["code"] == "damaged_record", one.json()
    assert shown["escaped-surrogate"]["payload"] == {"prompt": "cat \ufffd"}
    cancelled = client.post(f"{BASE}/good/cancel", headers=auth(KEY_B))
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    damaged = client.post(f"{BASE}/not-json/cancel", headers=auth(KEY_B))
    assert damaged.status_code == 200 and damaged.json()["status"] == "cancelled"
    final = client.post(f"{BASE}/bad-status/cancel", headers=auth(KEY_B))
    assert final.status_code == 409 and final.json()["error"]["code"] == "not_cancellable"


def test_the_worker_fails_a_damaged_job_instead_of_guessing(engine, tmp_path):
    settings = api_settings(tmp_path)
    with serve(settings, engine, run_worker=False) as (_url, service, _worker):
        store = service.jobs.store
        plant_damaged_rows(store, "k")
        store.cancel("good")
        for rid in ("escaped-surrogate", "not-json"):
            job = store.claim_next("w", 30.0)
            assert job.request_id == rid and job.damage
            Worker(store, engine, settings)._run(job)
            done = store.get(rid)
            assert (done.status, done.error_code) == (Status.FAILED, "damaged_record"), done
