"""Community LoRAs through REST (real HTTP, tiny model): a library LoRA runs and is echoed and recorded
(payload, MP4 metadata, sidecar); an https LoRA is fetched once under the URL-input rules (a local
TLS server, allow-listed as test_inputs does) and reused by content; every refusal answers 422 with
its field and message, and stores nothing (no job, no cached file)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from apitools import BASE, api_settings, auth, b64_image, body, serve, wait_status
from conftest import make_image
from test_loras import REFUSALS, other_model_files
from tlstools import tls_server

from bench.lora_files import write_diffusers, write_lightx2v
from wan_demo.media.video import read_mp4_metadata
from wan_demo.model.engine import load_engine
from wan_demo.model.tiny import build_tiny_pipeline
from wan_demo.rest.inputs import lora_fetcher

PNG = b64_image(make_image(96, 64))
REQUESTS = f"{BASE}/requests"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("lora-api")
    library = root / "loras"
    library.mkdir()
    transformer = build_tiny_pipeline().transformer
    write_lightx2v(transformer, library / "motion.safetensors")
    bad = other_model_files(transformer, library)
    settings = api_settings(root, lora_dir=library, allow_url_inputs=True, lora_max_mb=1)
    with serve(settings, load_engine(settings)) as (url, service, worker):
        with httpx.Client(base_url=url, timeout=60) as client:
            yield client, service, root, bad, transformer


def cached(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "data" / "loras").glob("*.safetensors"))


def test_a_library_lora_runs_and_is_echoed_and_recorded(server):
    client, service, _, _, _ = server
    r = client.post(
        REQUESTS, json=body(PNG, loras=[{"path": "motion.safetensors", "scale": 0.8}]), headers=auth()
    )
    assert r.status_code == 200, r.text
    rid = r.json()["request_id"]
    done = wait_status(client, f"{REQUESTS}/{rid}", ("success", "failed"), timeout=300)
    assert done["status"] == "success", done
    (echo,) = done["payload"]["loras"]
    assert (echo["path"], echo["scale"], echo["name"]) == ("motion.safetensors", 0.8, "motion.safetensors")
    job = service.jobs.get(rid, service.keys.owner_of(auth()["Authorization"]))
    sidecar = json.loads(service.jobs.storage.read_bytes(job.metadata_path))
    (ran,) = sidecar["settings"]["loras"]
    assert ran == dict(name="motion.safetensors", sha256=echo["sha256"], scale=0.8, layout="wan",
                       source="motion.safetensors", applied="unfused adapter")  # fmt: skip
    assert read_mp4_metadata(Path(job.video_path))["settings"]["loras"] == [ran]
    info = client.get(f"{BASE}/models/Wan-AI_Wan2.1-I2V-14B-480P", headers=auth()).json()
    assert info["parameters"]["loras"]["constraints"]["max_items"] == 4


def refusal_cases(bad: dict[str, Path]) -> list[tuple[str, object, str, str]]:
    """(case, payload.loras, error field, words of the message)"""
    cases = [
        (what, [{"path": bad[what].name}], "payload.loras[0]", words) for what, words in REFUSALS.items()
    ]
    return cases + [
        ("more than 4", [{"path": f"l{i}"} for i in range(5)], "payload.loras", "5 LoRAs given; the limit"),
        ("weight out of range", [{"path": "motion", "scale": 5}], "payload.loras[0]",
         "scale 5.0 is out of range"),
        ("URL the guard refuses", [{"path": "https://127.0.0.1/x.safetensors"}], "payload.loras[0]",
         "host '127.0.0.1' is not a public address; URL refused"),
        ("plain http", [{"path": "http://example.com/x.safetensors"}], "payload.loras[0]", "only https URLs"),
        ("not in the library", [{"path": "orbit"}], "payload.loras[0]", "'orbit' is not in the LoRA library"),
        ("a pickle by name", [{"path": "x/y/lora.ckpt"}], "payload.loras[0]", "only .safetensors files"),
        ("listed twice", ["motion", "motion"], "payload.loras[1]", "is listed twice"),
    ]  # fmt: skip


def test_every_refusal_names_the_file_and_the_reason_and_stores_nothing(server):
    client, service, root, bad, _ = server
    before = client.get(REQUESTS, headers=auth()).json()["total"]
    for case, loras, field, words in refusal_cases(bad):
        loras = [item if isinstance(item, dict) else {"path": item} for item in loras]
        r = client.post(REQUESTS, json=body(PNG, loras=loras), headers=auth())
        error = r.json()["error"]
        assert r.status_code == 422 and error["code"] == "invalid_input", (case, r.text)
        assert error["field"] == field and words in error["message"], (case, error)
        if field == "payload.loras[0]" and case in REFUSALS:
            assert f"'{bad[case].name}'" in error["message"], case  # the file is named
    assert client.get(REQUESTS, headers=auth()).json()["total"] == before  # no job was queued
    assert cached(root) == []  # and no refused file was kept


def test_an_https_lora_is_fetched_once_under_the_url_rules(server, tmp_path):
    client, service, root, bad, transformer = server
    good = write_diffusers(transformer, tmp_path / "orbit.safetensors", seed=9).path.read_bytes()
    routes = {"/orbit.safetensors": (200, good), "/big.safetensors": (200, b"\0" * (2 * 2**20)),
              "/pickled.safetensors": (200, bad["pickle"].read_bytes())}  # fmt: skip
    real = service.fetch_lora
    with tls_server("loras.test", tmp_path, routes, {"/moved": "https://127.0.0.1/secret"}) as (
        port,
        ctx,
        hits,
    ):
        guard = dict(resolver=lambda host, p: ["127.0.0.1"], allow=lambda ip: True, context=ctx)
        service.fetch_lora = lora_fetcher(service.settings, **guard)  # the guard, aimed at the test server
        url = f"https://loras.test:{port}"
        first = client.post(
            REQUESTS, json=body(PNG, loras=[{"path": f"{url}/orbit.safetensors"}]), headers=auth()
        )
        again = client.post(
            REQUESTS, json=body(PNG, loras=[{"path": f"{url}/orbit.safetensors"}]), headers=auth()
        )
        assert first.status_code == again.status_code == 200, first.text
        assert hits["/orbit.safetensors"] == 1  # fetched once at submit, then reused by content
        refused = [("/moved", "redirects are not followed"), ("/big.safetensors", "the limit is 1 MB"),
                   ("/pickled.safetensors", "is a pickle checkpoint")]  # fmt: skip
        for path, words in refused:
            r = client.post(REQUESTS, json=body(PNG, loras=[{"path": f"{url}{path}"}]), headers=auth())
            assert r.status_code == 422 and words in r.json()["error"]["message"], (path, r.text)
    service.fetch_lora = real
    for response in (first, again):
        done = wait_status(
            client, f"{REQUESTS}/{response.json()['request_id']}", ("success", "failed"), timeout=300
        )
        assert done["status"] == "success", done
        assert done["payload"]["loras"][0]["name"] == "orbit.safetensors"
    assert len(cached(root)) == 1  # only the good file is kept


def test_gradio_api_generate_with_loras(tmp_path, monkeypatch):
    """/generate_with_loras: /generate's parameters, then the list. The example of docs/loras.md runs
    as written; a bad entry is named before anything queues (the validator), or when its file is
    looked for."""
    import re

    from gradio_client import Client, handle_file
    from gradio_client.exceptions import ValidationError
    from ui_server import running_app

    root = Path(__file__).resolve().parents[1]
    snippet = re.search(
        r"<!-- loras-gradio -->\s*```\w*\n(.*?)```", (root / "docs" / "loras.md").read_text(), re.S
    )
    library = tmp_path / "loras"
    library.mkdir()
    write_lightx2v(build_tiny_pipeline().transformer, library / "orbit_shot.safetensors")
    picture = tmp_path / "input.png"
    make_image(96, 64).save(picture)
    with running_app(tmp_path, lora_dir=library) as app:
        client = Client(app.url, verbose=False)
        endpoint = client.view_api(print_info=False, return_format="dict")["named_endpoints"][
            "/generate_with_loras"
        ]
        assert [p["parameter_name"] for p in endpoint["parameters"]][-1] == "loras"
        monkeypatch.chdir(root)  # the example reads examples/cat.jpg
        namespace: dict = {}
        exec(snippet.group(1).replace("http://127.0.0.1:7860/", app.url), namespace)  # noqa: S102
        (ran,) = read_mp4_metadata(Path(namespace["video"]))["settings"]["loras"]
        assert (ran["name"], ran["scale"], ran["applied"]) == (
            "orbit_shot.safetensors",
            0.8,
            "unfused adapter",
        )
        with pytest.raises(ValidationError, match=r"loras\[0\]: scale 9 is out of range"):
            client.predict(handle_file(str(picture)), "a cat", loras=[{"path": "orbit_shot", "scale": 9}],
                           api_name="/generate_with_loras")  # fmt: skip
        with pytest.raises(Exception, match=r"loras\[0\]: 'nope' is not in the LoRA library"):
            client.predict(handle_file(str(picture)), "a cat", loras=[{"path": "nope"}],
                           api_name="/generate_with_loras")  # fmt: skip
