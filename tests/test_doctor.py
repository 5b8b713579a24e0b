"""`python app.py --doctor` on this CPU-only machine: with no GPU it says the tiny model runs (exit 0);
with --vram-gb/--ram-gb it plans for such a card and names what to download (exit 1 until the
weights are on disk). No model is loaded: the plan comes from the real configs on the meta device."""

from __future__ import annotations

import pytest

from wan_demo.core.settings import Settings
from wan_demo.model import doctor
from wan_demo.model.tiny import save_tiny_pipeline


def run(settings: Settings, capsys) -> tuple[int, str]:
    code = doctor.run(settings)
    return code, capsys.readouterr().out


def test_a_cpu_machine_runs_the_tiny_model(capsys):
    code, out = run(Settings(), capsys)
    assert code == 0 and "TINY model" in out and "CPU build" in out or "torch" in out
    assert "host RAM" in out and "GB free in" in out and "hf download" not in out


def test_a_12_gb_card_with_32_gb_gets_a_plan_and_the_download_commands(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))  # nothing downloaded here
    code, out = run(Settings(vram_gb=12, ram_gb=32), capsys)
    assert code == 1 and "Cannot start yet: " in out and "missing weights" in out
    assert "Recommended for 12 GB VRAM + 32 GB RAM: the Q" in out
    assert "plan" in out and "host RAM by phase" in out and "load " in out and "denoise " in out
    assert 'hf download Wan-AI/Wan2.1-I2V-14B-480P-Diffusers --exclude "transformer/*"' in out
    assert "hf download city96/Wan2.1-I2V-14B-480P-gguf wan2.1-i2v-14b-480p-Q" in out
    assert "WAN_DEMO_TRANSFORMER_FILE=./gguf/wan2.1-i2v-14b-480p-Q" in out and "python app.py" in out


def test_a_card_too_small_is_refused_with_the_reason(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    code, out = run(Settings(vram_gb=4, ram_gb=8), capsys)
    assert code == 1 and "does not fit" in out


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> str:
    return save_tiny_pipeline(str(tmp_path_factory.mktemp("doctor") / "model"))


def test_weights_on_disk_need_no_download(folder, capsys, tmp_path):
    from diffusers import WanTransformer3DModel

    from bench.wan_files import write_gguf

    gguf = tmp_path / "wan2.1-i2v-14b-480p-Q8_0.gguf"
    write_gguf(WanTransformer3DModel.from_pretrained(folder, subfolder="transformer"), gguf, "Q8_0")
    code, out = run(Settings(model=folder, vram_gb=24, ram_gb=64, transformer_file=str(gguf)), capsys)
    assert "all components present" in out and "hf download" not in out
    assert code == 0 and "Ready" in out


def test_a_broken_transformer_file_is_named(folder, capsys, tmp_path):
    gguf = tmp_path / "wan2.1-i2v-14b-480p-Q4_K_M.gguf"
    gguf.write_bytes(b"GGUF\x03\x00")
    code, out = run(Settings(model=folder, vram_gb=24, ram_gb=64, transformer_file=str(gguf)), capsys)
    assert code == 1 and "not a complete GGUF file" in out


def test_a_folder_without_its_text_encoder_names_it(folder, capsys, tmp_path):
    import shutil

    partial = tmp_path / "partial"
    shutil.copytree(folder, partial)
    shutil.rmtree(partial / "text_encoder")
    code, out = run(Settings(model=str(partial), vram_gb=24, ram_gb=64), capsys)
    assert code == 1 and "missing text_encoder" in out and f"--local-dir {partial}" in out
