"""docs/loras.md stays true: its Python example runs (tiny model, a library of two LoRAs), its REST
body is a valid submit body with valid LoRAs, its settings table lists every LoRA setting with its
default, and its requantization table matches lora_merge. (Its Gradio API example runs in
test_lora_api.py against a launched app.)"""

from __future__ import annotations

import json
import re
from dataclasses import fields
from pathlib import Path

from bench.lora_files import write_diffusers, write_lightx2v
from wan_demo.core.loras import check_loras
from wan_demo.core.settings import Settings
from wan_demo.model.lora_merge import REQUANT, growth
from wan_demo.model.tiny import build_tiny_pipeline
from wan_demo.rest.schema import SubmitBody

ROOT = Path(__file__).resolve().parents[1]
DOC = (ROOT / "docs" / "loras.md").read_text()


def block(marker: str) -> str:
    found = re.search(rf"<!-- {marker} -->\s*```\w*\n(.*?)```", DOC, re.S)
    assert found, f"docs/loras.md has no code block after <!-- {marker} -->"
    return found.group(1)


def test_python_example_runs(tmp_path, monkeypatch, capsys):
    code = block("loras-python")
    small = 'Settings(model="tiny", steps=2, lora_dir="loras", tiny_max_area=64 * 64)'
    assert 'Settings(model="tiny", steps=2, lora_dir="loras")' in code
    monkeypatch.chdir(tmp_path)
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    (tmp_path / "loras").mkdir()
    transformer = build_tiny_pipeline().transformer
    write_lightx2v(transformer, tmp_path / "loras" / "orbit_shot.safetensors")
    write_diffusers(transformer, tmp_path / "loras" / "zoom_in.safetensors")
    exec(
        compile(code.replace('Settings(model="tiny", steps=2, lora_dir="loras")', small), "loras.md", "exec"),
        {},
    )
    assert capsys.readouterr().out.splitlines() == [
        "orbit_shot.safetensors 0.8 unfused adapter",
        "zoom_in.safetensors 0.5 unfused adapter",
    ]


def test_rest_body_is_a_valid_request():
    body = SubmitBody.model_validate_json(block("loras-rest"))
    loras = check_loras([item.model_dump() for item in body.payload.loras])
    wanted = [("orbit_shot.safetensors", 0.8), ("someone/wan-loras/zoom_in.safetensors", 0.5)]
    assert [(c.source, c.scale) for c in loras] == wanted
    assert json.loads(block("loras-rest"))["payload"]["loras"][0] == {
        "path": "orbit_shot.safetensors",
        "scale": 0.8,
    }


def test_settings_table_is_complete_and_true():
    for f in fields(Settings):
        if f.name.startswith("lora_") and f.name != "lora":
            row = re.search(rf"\| `WAN_DEMO_{f.name.upper()}` \| `([^`]*)` \|", DOC)
            assert row and row.group(1) == str(getattr(Settings(), f.name)), f.name


def test_requantization_table_matches_the_code():
    row = re.search(r"\| GGUF Q6_K / Q5_K / Q4_K / Q3_K / Q2_K \| (.*?) \|\n", DOC).group(1)
    targets = re.search(r"precision: (.*?) \(", row).group(1).split(" / ")
    assert targets == [REQUANT[k] for k in ("Q6_K", "Q5_K", "Q4_K", "Q3_K", "Q2_K")]
    shares = [int(x) for x in re.findall(r"\+(\d+) %", row)]
    assert shares == [round(growth(k) * 100) for k in ("Q6_K", "Q5_K", "Q4_K", "Q3_K", "Q2_K")]
