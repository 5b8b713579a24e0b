"""Fuzzing the REST API over real HTTP (uvicorn on 127.0.0.1, tiny model, the real job store).

1. Schemathesis reads the served OpenAPI schema and generates requests for every operation, valid
   and invalid by the schema; each is sent with the key and without. No answer may be a 5xx, and
   every answer must match the schema (status code, content type, body, headers).
2. Hypothesis builds request bodies from any JSON plus hostile text (lone surrogates, NUL): each
   answers 2xx, or a 4xx JSON error naming a field; after an accepted one, GET, list and cancel of
   that key answer 2xx.
3. Hypothesis builds URLs (broken brackets, odd ports, userinfo, IPv6 forms that carry a private
   IPv4 address, control characters) for `webhook_url` and `path_input_image`, and integers up to
   10**400 for every numeric field, against a server with URL inputs and webhooks on: the same rule.

The worker does not run here: accepted requests stay queued and are cancelled (nothing generates).
Budget: FUZZ_EXAMPLES per operation / property in the default run, FUZZ_EXAMPLES_SLOW under -m slow.
Run with -s to see the number of generated cases and the 5xx count.
"""

from __future__ import annotations

import json
from collections import Counter

import httpx
import pytest
import schemathesis
from apitools import api_settings, auth, b64_image, serve
from conftest import make_image
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from wan_demo.core.settings import API_MODEL_ID, SEED_MAX

BASE = "/api/v1/apikey"
FUZZ_EXAMPLES = 50  # per operation (x2 requests: with and without the key) and for the property
FUZZ_EXAMPLES_SLOW = 300
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
    negative_data_rejection,
]
QUIET = dict(deadline=None, database=None, suppress_health_check=list(HealthCheck))
STATS: Counter = Counter()  # generated cases, requests sent, 5xx answers


@pytest.fixture(scope="module")
def server(engine, tmp_path_factory):
    settings_ = api_settings(tmp_path_factory.mktemp("fuzz"), max_active_per_key=4)
    with serve(settings_, engine, run_worker=False) as running:
        yield running


@pytest.fixture(scope="module")
def rest_schema(server):
    url = server[0]
    loaded = schemathesis.openapi.from_url(f"{url}/api/v1/openapi.json")
    loaded.config.update(base_url=f"{url}/api/v1")
    return loaded


schema = schemathesis.pytest.from_fixture("rest_schema")


def call_both_ways(case) -> None:
    """The generated request with the key and without (the case's own headers otherwise kept)."""
    STATS["schema cases"] += 1
    for headers in (auth(), {"Authorization": ""}):
        response = case.call(headers=headers)
        STATS["requests"] += 1
        STATS["5xx"] += response.status_code >= 500
        case.validate_response(response, checks=CHECKS, headers=headers)


@schema.parametrize()
@settings(max_examples=FUZZ_EXAMPLES, **QUIET)
def test_schema_fuzz(case):
    call_both_ways(case)


@pytest.mark.slow
@schema.parametrize()
@settings(max_examples=FUZZ_EXAMPLES_SLOW, **QUIET)
def test_schema_fuzz_long(case):
    call_both_ways(case)


# --- property: any JSON body -------------------------------------------------------------------
PNG = b64_image(make_image(32, 32))
HOSTILE_TEXT = st.sampled_from(
    ["cat \ud800", "\udcff", "a\x00b", "   ", "x" * 2001, "\u202e\ufeff", "../../etc/passwd", "é" * 10]
)
TEXT = st.text(st.characters(exclude_categories=()), max_size=30) | HOSTILE_TEXT
SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | TEXT
ANY_JSON = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=6,
)
OPTIONAL = {
    "video_length": st.sampled_from([5, 10]),
    "prompt_extend": st.booleans(),
    "seed": st.integers(-1, SEED_MAX),
    # issue 24 (batches stay out: an accepted batch's other jobs would fill the per-key limit)
    "path_last_image": st.just(PNG),
    "interpolate": st.sampled_from([1, 2]),
    "nag_scale": st.floats(1.0, 30.0),  # quality server: refused, naming the field
}
FIELDS = {
    "prompt": st.just("a cat walks") | ANY_JSON,
    "path_input_image": st.sampled_from([PNG, "data:image/png;base64," + PNG]) | ANY_JSON,
    "video_length": st.sampled_from([5, 10]) | ANY_JSON,
    "prompt_extend": st.booleans() | ANY_JSON,
    "seed": st.integers(-1, SEED_MAX) | ANY_JSON,
    "path_last_image": st.sampled_from([PNG, "data:image/png;base64," + PNG]) | ANY_JSON,
    "interpolate": st.sampled_from([1, 2, 3]) | ANY_JSON,
    "nag_alpha": st.floats(-1.0, 2.0) | ANY_JSON,
    "num_videos": st.sampled_from([0, 5, 9, -1, 2.5, "2", None, [2]]),  # never an accepted batch
}
VALID = {"prompt": st.just("a cat walks") | TEXT, "path_input_image": st.just(PNG)}
NEAR_VALID = st.fixed_dictionaries(  # mostly accepted: the follow-up GET/list/cancel get exercised
    {"model": st.just(API_MODEL_ID), "payload": st.fixed_dictionaries(VALID, optional=OPTIONAL)}
)
MUTATED = st.builds(  # any field (or the body's shape) replaced by any JSON, unknown keys added
    lambda model, payload, extra: {**extra, "model": model, "payload": payload},
    st.just(API_MODEL_ID) | ANY_JSON,
    st.fixed_dictionaries({}, optional=FIELDS) | ANY_JSON,
    st.just({}) | st.dictionaries(TEXT, ANY_JSON, max_size=2),
)
BODIES = NEAR_VALID | MUTATED | ANY_JSON


def check_payload_property(client: httpx.Client, body) -> None:
    STATS["payload cases"] += 1
    raw = json.dumps(body).encode()  # ASCII JSON: lone surrogates travel as \ud800 escapes
    r = client.post(f"{BASE}/requests", content=raw, headers={**auth(), "Content-Type": "application/json"})
    STATS["requests"] += 1
    STATS["5xx"] += r.status_code >= 500
    assert r.headers["content-type"] == "application/json", r.text
    if r.status_code != 200:
        assert 400 <= r.status_code < 500, r.text
        error = r.json()["error"]
        assert error["code"] in ("invalid_input", "invalid_json") and error["field"], error
        return
    STATS["accepted"] += 1
    rid = r.json()["request_id"]
    follow_ups = [("GET", f"/requests/{rid}"), ("GET", "/requests"), ("POST", f"/requests/{rid}/cancel")]
    for method, path in follow_ups:
        answer = client.request(method, BASE + path, headers=auth())
        STATS["requests"] += 1
        assert answer.status_code == 200, (path, answer.text)
    assert client.get(f"{BASE}/requests/{rid}", headers=auth()).json()["status"] == "cancelled"


@given(body=BODIES)
@settings(max_examples=FUZZ_EXAMPLES * 5, **QUIET)
def test_any_json_body_answers_2xx_or_a_4xx_naming_a_field(server, body):
    with httpx.Client(base_url=server[0], timeout=30) as client:
        check_payload_property(client, body)


@pytest.mark.slow
@given(body=BODIES)
@settings(max_examples=FUZZ_EXAMPLES_SLOW * 5, **QUIET)
def test_any_json_body_long(server, body):
    with httpx.Client(base_url=server[0], timeout=30) as client:
        check_payload_property(client, body)


# --- property: URLs and huge integers (issue 27) ------------------------------------------------
SCHEMES = st.sampled_from(["https", "http", "HTTPS", "ftp", "file", "javascript", "", "https:"])
USERINFO = st.sampled_from(["", "", "", "user@", "u:p@", "@", ":@", "a@b@", "%40@", "u\\@"])
BROKEN_HOSTS = ["[::1", "::1]", "[", "]", "[[::1]]", "[::1]x", "[zz]", "[v1.x]", "a..b", "-a.b", "é.c", ""]
HOSTS = (
    st.sampled_from([  # addresses no URL may reach, in many spellings (no DNS needed)
        "127.0.0.1", "localhost", "169.254.169.254", "0x7f.1", "2130706433", "10.0.0.1", "[::1]",
        "[::ffff:10.0.0.1]", "[::7f00:1]", "[2002:7f00:1::1]", "[2002:a9fe:a9fe::1]", "[64:ff9b::a9fe:a9fe]",
        "[64:ff9b:1::a00:1]", "[2001:0:4136:e378:8000:63bf:80ff:fffe]", "[fe80::1%25eth0]", "[fc00::1]",
    ])
    | st.sampled_from(BROKEN_HOSTS)
    | st.text(max_size=12)
)  # fmt: skip
PORTS = st.sampled_from(["", ":", ":0", ":443", ":65535", ":65536", ":-1", ":+80", ":8o", ": 80", ":٣"]) | (
    st.integers(0, 10**30).map(lambda n: f":{n}")
)
PATHS = st.sampled_from(["", "/", "/a.png", "/?q=1", "#f", "/a b", "/\x00", "/%00", "/\u2028", "\\x"]) | (
    st.text(max_size=12).map(lambda t: "/" + t)
)
URLS = st.builds(lambda *parts: "{}://{}{}{}{}".format(*parts), SCHEMES, USERINFO, HOSTS, PORTS, PATHS) | (
    st.text(max_size=40)
)
HUGE = st.integers(-(10**400), 10**400) | st.sampled_from([2**1024, -(2**1024), 10**400, 2**63, -(2**63) - 1])
NUMBERS = {name: HUGE for name in ("num_inference_steps", "fps", "guidance_scale", "flow_shift", "seed",
                                   "video_length", "num_videos", "nag_scale", "nag_tau", "nag_alpha",
                                   "interpolate")}  # fmt: skip
URL_BODIES = st.builds(
    lambda image, end, numbers, top: {
        **top,
        "model": API_MODEL_ID,
        "payload": {"prompt": "a cat", **image, **end, **numbers},
    },
    st.just({"path_input_image": PNG}) | URLS.map(lambda url: {"path_input_image": url}),
    st.just({}) | URLS.map(lambda url: {"path_last_image": url}),  # issue 24's end frame: the same parser
    st.fixed_dictionaries({}, optional=NUMBERS),
    st.just({}) | URLS.map(lambda url: {"webhook_url": url}),
)


@pytest.fixture(scope="module")
def url_server(engine, tmp_path_factory):
    """URL inputs and webhooks on (no private allow-list); nothing generates."""
    settings_ = api_settings(
        tmp_path_factory.mktemp("fuzz_urls"), allow_url_inputs=True, webhook_secret="w" * 40
    )
    with serve(settings_, engine, run_worker=False) as running:
        yield running


@given(body=URL_BODIES)
@settings(max_examples=FUZZ_EXAMPLES * 5, **QUIET)
def test_urls_and_huge_integers_answer_2xx_or_a_4xx_naming_a_field(url_server, body):
    STATS["url cases"] += 1
    with httpx.Client(base_url=url_server[0], timeout=30) as client:
        check_payload_property(client, body)


@pytest.mark.slow
@given(body=URL_BODIES)
@settings(max_examples=FUZZ_EXAMPLES_SLOW * 5, **QUIET)
def test_urls_and_huge_integers_long(url_server, body):
    STATS["url cases"] += 1
    with httpx.Client(base_url=url_server[0], timeout=30) as client:
        check_payload_property(client, body)


@pytest.fixture(scope="module", autouse=True)
def fuzz_totals():
    """Prints the totals when the module ends, in either tier (shown with -s)."""
    yield
    print(f"\nfuzz: {dict(STATS)}")


def test_fuzz_summary(server):
    """Runs last in this file: the totals of the runs above."""
    assert STATS["5xx"] == 0
    if STATS["schema cases"]:  # absent when this test is run alone
        assert STATS["requests"] >= 2 * STATS["schema cases"]
