""" "Copy as code": snippets made from form values with hostile text stay runnable and carry the
values exactly (Python compiles and holds the literals; the curl body survives a real bash)."""

from __future__ import annotations

import ast
import json
import shutil
import subprocess

import pytest

from wan_demo.web.code_snippets import FormValues, base_url, image_name, snippets

NASTY = "say \"hi\" & 'bye'\nline 2\t$(touch pwned) `touch pwned2` \\n 猫 🎬 \\"
FORM = FormValues(NASTY, True, 42, "10", "no 'blur'\n\"text\"", 12, 4.5, "quality")
IMAGE = "my 'cat' $(x).jpg"


def keywords(code: str, call: str) -> dict:
    """Literal keyword arguments of the first call to `call` in `code`."""
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) == call:
            return {k.arg: ast.literal_eval(k.value) for k in node.keywords if k.arg != "image"}
    raise AssertionError(f"no call to {call}")


def test_gradio_client_snippet_compiles_and_carries_every_value():
    code = snippets(FORM, "http://127.0.0.1:7860/", IMAGE, "tiny")[0]
    compile(code, "snippet", "exec")
    assert keywords(code, "predict") == {
        "prompt": NASTY, "prompt_extend": True, "seed": 42, "video_length": "10",
        "negative_prompt": "no 'blur'\n\"text\"", "steps": 12, "guidance": 4.5, "speed_mode": "quality",
        "api_name": "/generate",
    }  # fmt: skip
    assert "handle_file(\"my 'cat' $(x).jpg\")" in code


def test_python_snippet_compiles_and_uses_validate():
    code = snippets(FORM, "http://127.0.0.1:7860/", IMAGE, "Wan-AI/Wan2.1-I2V-14B-480P-Diffusers")[2]
    compile(code, "snippet", "exec")
    assert "validate(" in code and "Settings(model='Wan-AI/Wan2.1-I2V-14B-480P-Diffusers')" in code
    assert keywords(code, "GenerationRequest") == {
        "prompt": NASTY, "video_length_s": 10, "seed": 42, "prompt_extend": True,
        "negative_prompt": "no 'blur'\n\"text\"", "steps": 12, "guidance": 4.5, "speed_mode": "quality",
    }  # fmt: skip
    defaults = FormValues("x", False, -1, "5", "", 0, 0.0, "auto")
    assert keywords(snippets(defaults, "u", "a.jpg", "tiny")[2], "GenerationRequest") == {
        "prompt": "x", "video_length_s": 5, "seed": -1, "prompt_extend": False,
        "negative_prompt": None, "steps": None, "guidance": None, "speed_mode": None,
    }  # fmt: skip


@pytest.mark.skipif(not shutil.which("bash"), reason="needs bash")
def test_curl_snippet_body_parses_after_a_real_shell(tmp_path):
    """bash runs the snippet with curl and base64 replaced by functions that print what they got:
    the -d argument must be JSON holding the exact prompt, and nothing in the prompt may run."""
    script = snippets(FORM, "http://example.test:7860/", IMAGE, "tiny")[1]
    stubs = "curl() { printf '%s\\0' \"$@\"; }\nbase64() { printf 'QUJD'; }\n"
    run = subprocess.run(["bash", "-c", stubs + script], cwd=tmp_path, capture_output=True, timeout=30)
    assert run.returncode == 0, run.stderr
    args = run.stdout.decode().split("\0")
    body = json.loads(args[args.index("-d") + 1])
    assert body["model"] == "Wan-AI_Wan2.1-I2V-14B-480P"
    assert body["payload"] == {
        "prompt": NASTY, "path_input_image": "QUJD", "video_length": 10, "seed": 42, "prompt_extend": True,
        "negative_prompt": "no 'blur'\n\"text\"", "num_inference_steps": 12, "guidance_scale": 4.5,
        "speed_mode": "quality",
    }  # fmt: skip
    assert args[0] == "-sS" and args[1] == "http://example.test:7860/api/v1/apikey/requests"
    assert list(tmp_path.iterdir()) == []  # $(touch pwned) and `touch pwned2` stayed text


def test_issue_24_fields_in_every_snippet(tmp_path):
    """End frame, NAG and interpolation reach the three snippets under each surface's names."""
    form = FormValues.from_widgets(
        "a cat", False, 3, "5", "blur", 0, 0, "fast", "", "end 'frame'.png", 5, 0, 0.5, True
    )
    gradio, curl, python = snippets(form, "http://example.test/", IMAGE, "tiny")
    assert "last_image=handle_file(\"end 'frame'.png\")" in gradio and "interpolate=True" in gradio
    assert "nag_scale=5.0" in gradio and "nag_alpha=0.5" in gradio and "nag_tau" not in gradio
    stubs = "curl() { printf '%s\\0' \"$@\"; }\nbase64() { printf 'Q%s' \"$2\" | wc -c; }\n"
    run = subprocess.run(["bash", "-c", stubs + curl], cwd=tmp_path, capture_output=True, timeout=30)
    args = run.stdout.decode().split("\0")
    payload = json.loads(args[args.index("-d") + 1])["payload"]
    assert (payload["nag_scale"], payload["nag_alpha"], payload["interpolate"]) == (5.0, 0.5, 2)
    assert payload["path_last_image"] != payload["path_input_image"]  # each file's own base64
    assert "interpolate=2" in python and "last_image=Image.open(\"end 'frame'.png\")" in python


def test_snippet_addresses_and_names():
    assert base_url("https://wan.example/", "ignored", "http") == "https://wan.example/"
    assert base_url("", "127.0.0.1:7860", "http") == "http://127.0.0.1:7860/"
    assert base_url("", "x.hf.space", "https") == "https://x.hf.space/"
    assert base_url("", "evil.com/$(id)", "http") == "http://127.0.0.1:7860/"  # odd Host headers ignored
    assert (
        image_name("/tmp/gradio/abc/sunset_sea.jpg") == "sunset_sea.jpg" and image_name(None) == "input.jpg"
    )


def test_a_second_prompt_is_carried_by_all_three_snippets(tmp_path):
    form = FormValues("a cat", False, 1, "10", "", 0, 0.0, "auto", prompt_2=NASTY)
    gradio_code, curl_code, python_code = snippets(form, "http://127.0.0.1:7860/", IMAGE, "tiny")
    assert keywords(gradio_code, "predict")["prompt_2"] == NASTY
    assert keywords(python_code, "GenerationRequest")["prompt_2"] == NASTY
    stubs = "curl() { printf '%s\\0' \"$@\"; }\nbase64() { printf 'QUJD'; }\n"
    run = subprocess.run(["bash", "-c", stubs + curl_code], cwd=tmp_path, capture_output=True, timeout=30)
    args = run.stdout.decode().split("\0")
    assert json.loads(args[args.index("-d") + 1])["payload"]["prompt_2"] == NASTY
    assert FormValues.from_widgets("a", False, 1, "10", "", 0, 0, "auto", None).prompt_2 == ""
