"""The LoRA part of the one request type: forms and limits (core/loras.py), what a job stores and
restores, what "restore settings" reads back from untrusted metadata, and "copy as code"."""

from __future__ import annotations

import ast
import json
import shutil
import subprocess

import pytest
from conftest import ask, make_image

from wan_demo.core.request import GenerationRequest, InvalidRequest, LoraChoice, ValidRequest
from wan_demo.core.validate import check_fields, validate
from wan_demo.web import restore
from wan_demo.web.code_snippets import FormValues, snippets

SHA = "ab" * 32


@pytest.mark.parametrize(
    "loras, field, words",
    [
        ("motion", "loras", "must be a list of {path, scale}"),
        ([{"path": "a"}] * 5, "loras", "5 LoRAs given; the limit is 4 per request"),
        ([{"path": "a", "scale": 4.5}], "loras[0]", "scale 4.5 is out of range -4.0..4.0"),
        ([{"path": "a", "scale": "1"}], "loras[0]", "scale must be a number"),
        ([{"path": "a", "weight": 1}], "loras[0]", "unknown key 'weight'"),
        ([{"path": ""}], "loras[0]", "path must be a library name"),
        (["../../etc/passwd"], "loras[0]", "is not a library name, owner/repo/file.safetensors"),
        (["/abs/path.safetensors"], "loras[0]", "is not a library name"),
        (["owner/repo/model.ckpt"], "loras[0]", "only .safetensors files are accepted"),
        (["owner/repo/README.md"], "loras[0]", "a hub file must be a .safetensors file"),
        (["http://example.com/a.safetensors"], "loras[0]", "only https URLs are accepted"),
        (["sha256:abc"], "loras[0]", "sha256: must be followed by 64 lower-case hex digits"),
        (["a", "b", "a"], "loras[2]", "'a' is listed twice"),
        (["x" * 3000], "loras[0]", "path is 3000 characters; the limit is 2048"),
    ],
)  # fmt: skip
def test_bad_loras_are_named_with_the_rule(loras, field, words):
    with pytest.raises(InvalidRequest) as caught:
        check_fields(GenerationRequest(None, "a cat", loras=loras))
    assert caught.value.field == field and words in caught.value.rule


def test_every_accepted_form_and_the_stored_round_trip():
    request = ask(make_image(), "a cat", loras=[
        {"path": "orbit", "scale": -0.5}, ("owner/repo/sub/zoom.safetensors", 2), "https://x.test/a?t=1",
        LoraChoice(f"sha256:{SHA}", 1.0, "mine.safetensors", SHA, "wan"),
    ])  # fmt: skip
    assert [(c.source, c.scale) for c in request.loras] == [
        ("orbit", -0.5), ("owner/repo/sub/zoom.safetensors", 2.0), ("https://x.test/a?t=1", 1.0),
        (f"sha256:{SHA}", 1.0),
    ]  # fmt: skip
    assert request.loras[3].sha256 == SHA  # a resolved choice keeps what was found
    params = json.loads(json.dumps(request.params()))  # as the job store keeps it
    assert ValidRequest.restore(params, make_image()).loras == request.loras
    assert "loras" not in ask(make_image(), "a cat").params()  # no LoRAs: the stored params as before


def meta_with(loras) -> dict:
    return {"prompt": "a cat", "seed": 3, "settings": {"prompt": "a cat", "segments": 1, "loras": loras}}


def test_restore_reads_the_loras_that_ran_and_refuses_hostile_ones():
    ran = [{"name": "orbit.safetensors", "sha256": SHA, "scale": 0.6, "layout": "wan", "source": "orbit",
            "applied": "unfused adapter"}]  # fmt: skip
    assert restore.from_metadata(meta_with(ran)).loras == ((SHA, "orbit.safetensors", 0.6),)
    assert restore.from_metadata(meta_with([])).loras == ()
    for hostile in ([{"sha256": "x", "scale": 1}], [{"sha256": SHA, "scale": 99}], ["a"], [ran[0]] * 5,
                    [{"sha256": SHA, "scale": 1, "name": "\x00"}]):  # fmt: skip
        with pytest.raises(restore.NoSettings, match="the stored loras"):
            restore.from_metadata(meta_with(hostile))


@pytest.mark.skipif(not shutil.which("bash"), reason="needs bash")
def test_copy_as_code_carries_the_loras_in_all_three_snippets(tmp_path):
    loras = ({"path": "orbit.safetensors", "scale": 0.6}, {"path": f"sha256:{SHA}", "scale": -1.0})
    form = FormValues("a cat", False, 1, "5", "", 0, 0.0, "auto", loras=loras)
    gradio_code, curl_code, python_code = snippets(form, "http://127.0.0.1:7860/", "cat.jpg", "tiny")
    call = next(n for n in ast.walk(ast.parse(gradio_code)) if isinstance(n, ast.Call) and
                getattr(n.func, "attr", "") == "predict")  # fmt: skip
    predict = {k.arg: ast.literal_eval(k.value) for k in call.keywords if k.arg != "image"}
    assert predict["loras"] == list(loras) and predict["api_name"] == "/generate_with_loras"
    assert "loras=[{'path': 'orbit.safetensors', 'scale': 0.6}" in python_code
    stubs = "curl() { printf '%s\\0' \"$@\"; }\nbase64() { printf 'QUJD'; }\n"
    run = subprocess.run(["bash", "-c", stubs + curl_code], cwd=tmp_path, capture_output=True, timeout=30)
    args = run.stdout.decode().split("\0")
    assert json.loads(args[args.index("-d") + 1])["payload"]["loras"] == list(loras)
    plain = snippets(FormValues("a cat", False, 1, "5", "", 0, 0.0, "auto"), "u", "c.jpg", "tiny")
    assert "loras" not in "".join(plain) and 'api_name="/generate"' in plain[0]


def test_validate_keeps_the_loras_in_order():
    request = validate(GenerationRequest(make_image(), "x", loras=[("b", 1), ("a", 0.5)]))
    assert [c.source for c in request.loras] == ["b", "a"]


def test_one_file_under_two_names_is_refused(tmp_path):
    from bench.lora_files import write_diffusers
    from wan_demo.core.settings import Settings
    from wan_demo.model.lora_library import LoraLibrary
    from wan_demo.model.tiny import build_tiny_pipeline

    transformer = build_tiny_pipeline().transformer
    (tmp_path / "loras").mkdir()
    write_diffusers(transformer, tmp_path / "loras" / "a.safetensors")
    (tmp_path / "loras" / "b.safetensors").write_bytes((tmp_path / "loras" / "a.safetensors").read_bytes())
    library = LoraLibrary(Settings(lora_dir=tmp_path / "loras", data_dir=tmp_path), dict(transformer.config))
    with pytest.raises(InvalidRequest, match=r"loras\[1\]: 'b.safetensors' is the same file as loras\[0\]"):
        library.resolve_all((LoraChoice("a"), LoraChoice("b", 0.5)))
