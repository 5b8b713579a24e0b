"""The Gradio API end to end: a launched app (tiny model) on 127.0.0.1, called with gradio_client
and curl exactly as README and docs/web-ui.md show, plus the API listing, validation, MCP and Cancel."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import time
from pathlib import Path

import httpx
import imageio_ffmpeg
import numpy as np
import pytest
from apitools import KEY_A, auth, b64_image, body, wait_status
from conftest import make_image
from doctools import marked
from gradio_client import Client, handle_file
from gradio_client.exceptions import ValidationError
from PIL import Image
from ui_server import running_app

from wan_demo.core.settings import SEED_MAX
from wan_demo.jobs.store.base import SQLITE_FILE
from wan_demo.media.video import count_frames, read_mp4_metadata, write_mp4
from wan_demo.web.owners import has_history

ROOT = Path(__file__).resolve().parent.parent
README_URL = "http://127.0.0.1:7860/"  # the address the docs' snippets use; tests swap in theirs
IN_README = ("gradio-client-example",)  # README shows this one too, identically
SETTINGS = [
    "prompt", "prompt_extend", "seed", "video_length", "negative_prompt", "steps", "guidance", "speed_mode",
    "prompt_2", "last_image", "nag_scale", "nag_tau", "nag_alpha", "interpolate",  # issue 24: appended
]  # fmt: skip
PARAMETERS = ["image", *SETTINGS]
RETURNS = ["Video", "Thumbnail", "Final prompt", "Seed used"]


def docs_snippet(marker: str) -> str:
    """The block after `<!-- marker -->` in docs/web-ui.md (and README, which shows the first one)."""
    return marked(marker, *(["README.md"] if marker in IN_README else []), "docs/web-ui.md")


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    with running_app(tmp_path_factory.mktemp("gradio_api"), api_keys=KEY_A) as running:
        yield running


@pytest.fixture(scope="module")
def client(app):
    return Client(app.url, verbose=False)


@pytest.fixture(scope="module")
def picture(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("inputs") / "input.png"
    make_image(96, 64).save(path)
    return str(path)


def mp4_count(app) -> int:
    return len(list((Path(app.settings.output_dir) / "ui").glob("*.mp4")))


def test_api_lists_exactly_the_generate_extend_and_lora_endpoints(client):
    info = client.view_api(print_info=False, return_format="dict")
    assert list(info["named_endpoints"]) == ["/generate", "/extend", "/generate_with_loras"]
    assert info["unnamed_endpoints"] == {}
    endpoint = info["named_endpoints"]["/generate"]
    assert [p["parameter_name"] for p in endpoint["parameters"]] == PARAMETERS
    assert [r["label"] for r in endpoint["returns"]] == RETURNS
    length = endpoint["parameters"][4]
    assert length["type"]["enum"] == ["5", "10"] and length["parameter_default"] == "5"
    assert "image-to-video" in endpoint["description"]
    extend = info["named_endpoints"]["/extend"]
    assert [p["parameter_name"] for p in extend["parameters"]] == ["video", *SETTINGS]
    assert [r["label"] for r in extend["returns"]] == RETURNS and "Continue a video" in extend["description"]
    with_loras = info["named_endpoints"]["/generate_with_loras"]  # /generate's, then the LoRAs
    assert [p["parameter_name"] for p in with_loras["parameters"]] == [*PARAMETERS, "loras"]


def test_generate_returns_a_5s_mp4_and_echoes_the_seed(client, picture, app):
    video, thumbnail, final_prompt, seed_used = client.predict(
        handle_file(picture), "a cat walks", False, 1234, "5", api_name="/generate"
    )
    frames, width, height = count_frames(Path(video))
    assert (frames, width * height <= app.settings.tiny_max_area) == (81, True)
    assert Path(thumbnail).read_bytes()[:2] == b"\xff\xd8"  # JPEG
    assert (final_prompt, seed_used) == ("a cat walks", 1234)


def test_random_seed_is_reported(client, picture):
    *_, seed_used = client.predict(handle_file(picture), "waves", seed=-1, api_name="/generate")
    assert 0 <= seed_used <= SEED_MAX


@pytest.mark.parametrize(
    "changes, field, words",
    [
        ({"image": None}, "image", "is required"),
        ({"prompt": "   "}, "prompt", "must not be empty"),
        ({"seed": SEED_MAX + 1}, "seed", "out of range"),
    ],
)
def test_bad_input_is_named_on_its_field(client, picture, changes, field, words):
    args = {"image": handle_file(picture), "prompt": "a cat", "seed": 1, **changes}
    with pytest.raises(ValidationError) as caught:
        client.predict(**args, api_name="/generate")
    assert f"- {field}:" in str(caught.value) and words in str(caught.value)


def test_unsupported_file_gets_a_clear_message(client, tmp_path):
    gif = tmp_path / "anim.gif"
    make_image(64, 64).save(gif, format="GIF")
    with pytest.raises(ValidationError, match="GIF is not allowed; use JPEG, PNG or WEBP"):
        client.predict(handle_file(str(gif)), "a cat", api_name="/generate")


def test_non_image_upload_names_the_rule_not_server_internals(client, app, tmp_path):
    """Gradio's own 400 quoted its temp path, the validator's name and the component list."""
    text = tmp_path / "notes.txt"
    text.write_text("not a picture")
    with pytest.raises(httpx.HTTPStatusError) as caught:  # gradio_client: the 400 of queue/join
        client.predict(handle_file(str(text)), "a cat", api_name="/generate")
    shown = caught.value.response.text
    assert "not a readable JPEG, PNG or WEBP image" in shown, shown
    url = app.url.rstrip("/")
    uploaded = httpx.post(f"{url}/gradio_api/upload", files={"files": ("x.png", b"\x89PNG broken")}).json()[0]
    image = {"path": uploaded, "meta": {"_type": "gradio.FileData"}}
    data = [image, "a cat", False, 1, "5", "", 0, 0, "auto", "", None, 0, 0, 0, False]  # all 15 parameters
    raw = httpx.post(f"{url}/gradio_api/call/generate", json={"data": data}, timeout=30)
    assert raw.status_code == 400 and "not a readable JPEG, PNG or WEBP image" in raw.text
    for leak in (uploaded, "/tmp", "check_inputs", "Original error", "index 0", "UnidentifiedImageError"):
        assert leak not in raw.text and leak not in shown, leak


def gradio_file_urls(url: str, target: Path, ui_dir: Path) -> list[str]:
    """Every way Gradio 6.31 serves files (gradio/routes.py: file=, file/, static, assets, svelte,
    proxy=, and file= of an http URL), aimed at one REST output, plain and through traversal."""
    rest_url = f"{url}/api/v1/apikey/requests/x/video"
    up = "/".join([".."] * len(target.parts))
    return [
        f"{url}/gradio_api/file={target}",
        f"{url}/gradio_api/file/{target}",
        f"{url}/file={target}",
        f"{url}/file/{target}",
        f"{url}/gradio_api/file={ui_dir}/../rest/{target.name}",
        f"{url}/gradio_api/file={ui_dir}/%2e%2e/rest/{target.name}",
        f"{url}/gradio_api/file={str(target).replace('/', '%2F')}",
        f"{url}/static/{up}{target}".replace("..", "%2e%2e"),
        f"{url}/assets/{up}{target}".replace("..", "%2e%2e"),
        f"{url}/svelte/{up}{target}".replace("..", "%2e%2e"),
        f"{url}/gradio_api/proxy={rest_url}",
        f"{url}/gradio_api/file={rest_url}",
    ]


def test_rest_outputs_are_reachable_only_through_the_rest_routes(client, app, picture):
    url = app.url.rstrip("/")
    with httpx.Client(base_url=url, timeout=60) as http:
        answer = http.post("/api/v1/apikey/requests", json=body(b64_image(make_image())), headers=auth())
        rid = answer.json()
        assert answer.status_code == 200, answer.text
        done = wait_status(http, f"/api/v1/apikey/requests/{rid['request_id']}", ("success", "failed"))
        assert done["status"] == "success", done
        video = http.get(done["outcome"]["video_url"], headers=auth())
        assert video.status_code == 200 and video.content[4:8] == b"ftyp"  # the REST route serves it
    output_dir = Path(app.settings.output_dir).resolve()
    rest_files = sorted((output_dir / "rest").glob("*"))
    assert {p.suffix for p in rest_files} >= {".mp4", ".jpg", ".json"}  # the sidecar holds the prompt
    for target in rest_files:
        for link in gradio_file_urls(url, target, output_dir / "ui"):
            for method in ("GET", "HEAD") if "file=" in link else ("GET",):
                r = httpx.request(method, link, timeout=30)
                assert r.status_code in (400, 403, 404, 405), (method, link, r.status_code)
                assert b"ftyp" not in r.content[:16] and b"final_prompt" not in r.content, link
    # not vacuous: a UI result is served by the same route
    ui_video, *_ = client.predict(handle_file(picture), "ui", seed=1, api_name="/generate")
    ui_file = next((output_dir / "ui").glob("*.mp4"))
    assert httpx.get(f"{url}/gradio_api/file={ui_file}", timeout=30).status_code == 200 and ui_video


def test_docs_gradio_client_example_runs(app, monkeypatch, capsys):
    code = docs_snippet("gradio-client-example")
    monkeypatch.chdir(ROOT)
    exec(code.replace(README_URL, app.url), {})
    printed = capsys.readouterr().out
    assert ".mp4" in printed and printed.rstrip().endswith(" 42")


def test_docs_preview_and_extend_example_runs(app, monkeypatch, capsys):
    code = docs_snippet("gradio-extend-example")
    monkeypatch.chdir(ROOT)
    namespace: dict = {}
    exec(code.replace(README_URL, app.url), namespace)
    assert capsys.readouterr().out.rstrip().endswith("The cat lies down and closes its eyes 2")
    assert count_frames(Path(namespace["longer"]))[0] == 161


def test_docs_curl_example_runs(app):
    script = docs_snippet("curl-example").replace(README_URL.rstrip("/"), app.url.rstrip("/"))
    out = subprocess.run(["bash", "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert "event: complete" in out.stdout, out.stdout + out.stderr
    data = json.loads(out.stdout.split("event: complete\ndata: ", 1)[1].splitlines()[0])
    assert data[0]["path"].endswith(".mp4") and data[3] == 42


def test_docs_curl_example_with_only_the_first_ten_values_runs(app):
    """The same call as a raw-HTTP client written for the 10 parameters up to prompt_2 sends it: the
    server appends the defaults of the other five (web/api_compat.py) and the call completes."""
    full = docs_snippet("curl-example").replace(README_URL.rstrip("/"), app.url.rstrip("/"))
    script = re.sub(r'"auto", "",\s*null, 0, 0, 0, false\]', '"auto", ""]', full)
    assert script != full, "the docs' curl example no longer ends its data list as expected"
    out = subprocess.run(["bash", "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert "event: complete" in out.stdout, out.stdout + out.stderr
    data = json.loads(out.stdout.split("event: complete\ndata: ", 1)[1].splitlines()[0])
    assert data[0]["path"].endswith(".mp4") and data[3] == 42


def test_mcp_lists_generate_extend_and_the_lora_endpoint_as_tools(app):
    schema = httpx.get(app.url + "gradio_api/mcp/schema", timeout=10).json()
    tools = {tool["name"]: tool for tool in schema}
    assert list(tools) == ["generate", "extend", "generate_with_loras"]
    assert "video_length" in tools["generate"]["inputSchema"]["properties"]
    assert "video" in tools["extend"]["inputSchema"]["properties"]


def test_cancel_stops_the_running_job_and_the_next_one_completes(client, picture, app):
    before = mp4_count(app)
    # 2 segments x 100 steps: long enough on CPU that Cancel lands mid-run.
    long_job = client.submit(handle_file(picture), "slow", False, 1, "10", None, 100, api_name="/generate")
    deadline = time.monotonic() + 60
    while not app.worker.busy and time.monotonic() < deadline:
        time.sleep(0.02)
    assert app.worker.busy, "the long job never started"
    long_job.cancel()
    *_, seed_used = client.predict(handle_file(picture), "next", seed=5, api_name="/generate")
    assert seed_used == 5
    # The worker runs one task at a time, so the cancelled one has ended: it wrote no video.
    assert mp4_count(app) == before + 1


def decode(path: str) -> np.ndarray:
    reader = imageio_ffmpeg.read_frames(path)
    width, height = next(reader)["size"]
    return np.stack([np.frombuffer(f, np.uint8).reshape(height, width, 3) for f in reader])


def test_generate_streams_the_preview_then_extend_continues_the_result(client, picture, app):
    """While it runs, the thumbnail slot carries live previews (animated WEBP); the final outputs are
    unchanged. /extend then continues that video: its 81 frames unchanged, then 80 new ones."""
    job = client.submit(handle_file(picture), "a cat walks", False, 9, "5", None, 30, api_name="/generate")
    outputs = list(job)
    video, thumbnail, final_prompt, seed_used = outputs[-1]
    previews = [out[1] for out in outputs[:-1] if isinstance(out[1], str)]
    assert previews, "no live preview reached the client"
    with Image.open(previews[-1]) as shown:
        assert shown.format == "WEBP" and shown.n_frames == 21
    assert Path(thumbnail).read_bytes()[:2] == b"\xff\xd8" and (final_prompt, seed_used) == ("a cat walks", 9)
    longer, _, prompt, seed = client.predict(handle_file(video), "the cat sits", seed=10, api_name="/extend")
    assert (prompt, seed) == ("the cat sits", 10)
    joined = decode(longer)
    assert joined.shape[0] == 161
    np.testing.assert_array_equal(joined[:81], decode(video))


def test_extend_refuses_what_is_not_a_video(client, picture):
    with pytest.raises(ValidationError, match="video: is not a readable video"):
        client.predict(handle_file(picture), "next", api_name="/extend")


def test_api_jobs_share_an_owner_and_extend_takes_only_the_bytes_it_is_sent(client, picture, app):
    """The Gradio API has no browser identity: its jobs share one owner (one lane in the fair queue),
    listed in no history.
    /extend takes no job id, only a video: one of our results is recognised by its exact bytes (so a
    caller can continue only a video it holds); a file claiming a result's id is just an upload."""
    video, *_ = client.predict(handle_file(picture), "a cat walks", seed=3, api_name="/generate")
    forged = Path(picture).with_name("forged.mp4")
    frames = decode(video)[::-1].copy()  # other pixels, same size, the real result's metadata
    write_mp4(list(frames), forged, 16, read_mp4_metadata(Path(video)))
    ours, _, _, _ = client.predict(handle_file(video), "on", seed=4, api_name="/extend")
    other, _, _, _ = client.predict(handle_file(str(forged)), "on", seed=4, api_name="/extend")
    assert read_mp4_metadata(Path(ours))["lineage"]["parent"]["source"] == "result"
    assert read_mp4_metadata(Path(other))["lineage"]["parent"]["source"] == "upload"
    with sqlite3.connect(f"file:{Path(app.settings.data_dir) / SQLITE_FILE}?mode=ro", uri=True) as db:
        owners = [row[0] for row in db.execute("SELECT owner FROM requests WHERE owner LIKE 'ui%'")]
    assert len(owners) >= 3 and set(owners) == {"ui:api"} and not has_history("ui:api")


def test_the_ten_values_of_before_issue_24_are_padded_with_the_new_defaults():
    """web/api_compat.py: raw-HTTP callers that send the old 10 /generate values keep working
    (docs/web-ui.md says so beside its 15-value curl example); any other body passes unchanged."""
    from wan_demo.web.api_compat import padded

    old = json.dumps({"data": list(range(10)), "session_hash": "s"}).encode()
    assert json.loads(padded(old)) == {"data": [*range(10), None, 0, 0, 0, False], "session_hash": "s"}
    for other in (json.dumps({"data": list(range(15))}).encode(), b"not json", b'{"data": 3}'):
        assert padded(other) == other
