"""Community LoRAs: generate() gives the frames of the reference recipe driven directly through
diffusers (tests/parity_reference.py: `load_lora_weights` per file + `set_adapters(names, weights)`),
bit for bit: alone in quality mode, stacked with the fast LoRA in fast mode, on GGUF weights and
under fp8 storage. Our side loads the files through the app (library -> checks -> warm adapters).

Tiny shapes as in test_parity (a 96x64 picture fitted into 64*64 px, 81 frames); quality runs use
2 steps (4 transformer forwards: CFG on) and an explicit negative prompt, so no README text enters.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import parity_reference as ref
import pytest
import torch
from conftest import make_image
from diffusers import WanTransformer3DModel
from test_parity import IMAGE, PARITY_AREA, PROMPT, SEED, run_ours, used

from bench.lora_files import write_diffusers, write_lightx2v, write_musubi, write_peft, write_wan
from bench.wan_files import write_gguf
from wan_demo.core.settings import Settings
from wan_demo.model.engine import load_engine
from wan_demo.model.nag import nag_processors
from wan_demo.model.tiny import save_tiny_pipeline

QUALITY = ref.Mode(steps=2, guidance=5.0, shift=3.0)
NEGATIVE = "blurry, static"


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """Two tiny folders (24 wide; 64 wide for GGUF: city96's layout quantizes tensors of more than
    1024 weights), a GGUF Q8_0 file, a fast LoRA and a library of LoRAs for each width."""
    root = tmp_path_factory.mktemp("lora-parity")
    out = {"tiny": Path(save_tiny_pipeline(str(root / "tiny"))),
           "tiny64": Path(save_tiny_pipeline(str(root / "tiny64"), head_dim=32))}  # fmt: skip
    for name in ("tiny", "tiny64"):
        transformer = WanTransformer3DModel.from_pretrained(out[name], subfolder="transformer")
        library = root / f"loras-{name}"
        library.mkdir()
        write_wan(transformer, library / "wan.safetensors", seed=11)
        write_musubi(transformer, library / "musubi.safetensors", seed=12, alpha=2.0)
        write_diffusers(transformer, library / "diffusers.safetensors", seed=13)
        write_lightx2v(transformer, library / "lightx2v.safetensors", seed=14)
        out[f"loras-{name}"] = library
    fast = WanTransformer3DModel.from_pretrained(out["tiny"], subfolder="transformer")
    out["fast"] = write_peft(fast, root, ["to_q", "to_k", "to_v", "to_out.0", "ffn.net.0.proj", "ffn.net.2"])
    tiny64 = WanTransformer3DModel.from_pretrained(out["tiny64"], subfolder="transformer")
    out["Q8_0"] = write_gguf(tiny64, root / "tiny64-Q8_0.gguf", "Q8_0")
    out["root"] = root
    return out


def ours(files, folder: str = "tiny", **changes):
    settings = Settings(
        model=str(files[folder]), device="cpu", output_dir=files["root"] / "out", prompt_extender="off",
        lora_dir=files[f"loras-{folder}"], data_dir=files["root"] / "data", **changes,
    )  # fmt: skip
    engine = load_engine(settings)
    engine.max_area = PARITY_AREA  # as test_parity: the same size rule, a smaller budget
    return engine, settings


def reference(pipe, files, folder: str, loras: list[tuple[str, float]], mode: ref.Mode, fast: bool = False):
    ref.add_loras(
        pipe, [(files[f"loras-{folder}"] / n, s) for n, s in loras], fast=files["fast"] if fast else None
    )
    image = ref.resize(IMAGE, PARITY_AREA)
    return ref.run(pipe, image, PROMPT, NEGATIVE if mode.guidance > 1 else "", mode, ref.generator(SEED))


def quality_request(loras: list[tuple[str, float]]) -> dict:
    return dict(speed_mode="quality", steps=QUALITY.steps, negative_prompt=NEGATIVE,
                loras=[{"path": n, "scale": s} for n, s in loras])  # fmt: skip


def test_a_community_lora_in_quality_mode(files):
    loras = [("wan.safetensors", 0.8)]
    run = run_ours(*ours(files), **quality_request(loras))
    frames = reference(ref.load(files["tiny"], QUALITY), files, "tiny", loras, QUALITY)
    np.testing.assert_array_equal(run.frames, frames, err_msg=used(run))
    (ran,) = run.result.settings["loras"]
    assert (ran["name"], ran["scale"], ran["layout"], ran["applied"]) == ("wan.safetensors", 0.8, "wan",
                                                                          "unfused adapter")  # fmt: skip
    assert ran["sha256"] and ran["source"] == "wan.safetensors"


def test_two_loras_stacked_with_the_fast_lora(files):
    loras = [("musubi.safetensors", 0.7), ("diffusers.safetensors", -0.4)]
    engine, settings = ours(files, lora=str(files["fast"]))
    run = run_ours(engine, settings, speed_mode="fast", loras=[{"path": n, "scale": s} for n, s in loras])
    assert used(run) == {"speed_mode": "fast", **vars(ref.FAST)}
    frames = reference(ref.load(files["tiny"], ref.FAST), files, "tiny", loras, ref.FAST, fast=True)
    np.testing.assert_array_equal(run.frames, frames, err_msg=used(run))
    plain = run_ours(engine, settings, speed_mode="fast")  # the same engine, the LoRAs off again
    fast_only = ref.load(files["tiny"], ref.FAST, lora=files["fast"])
    image = ref.resize(IMAGE, PARITY_AREA)
    np.testing.assert_array_equal(
        plain.frames, ref.run(fast_only, image, PROMPT, "", ref.FAST, ref.generator(SEED))
    )


def test_on_gguf_weights(files):
    loras = [("lightx2v.safetensors", 1.0), ("wan.safetensors", 0.5)]
    run = run_ours(*ours(files, "tiny64", transformer_file=str(files["Q8_0"])), **quality_request(loras))
    pipe = ref.load_gguf(files["tiny64"], files["Q8_0"], QUALITY)
    np.testing.assert_array_equal(run.frames, reference(pipe, files, "tiny64", loras, QUALITY))


def test_under_fp8_storage(files):
    loras = [("wan.safetensors", 0.8)]
    engine, settings = ours(files, memory_mode="fp8_resident")
    run = run_ours(engine, settings, **quality_request(loras))
    pipe = ref.load(files["tiny"], QUALITY)
    ref.store_fp8(pipe)
    np.testing.assert_array_equal(run.frames, reference(pipe, files, "tiny", loras, QUALITY))


# --- with issue 24's end frame and NAG ---------------------------------------------------------
END_IMAGE = make_image(96, 64, seed=8)  # test_parity's end frame


def test_with_an_end_frame(files):
    """A LoRA and the end frame together: the reference's end-frame recipe plus its LoRA recipe."""
    loras = [("musubi.safetensors", 0.9)]
    run = run_ours(*ours(files), last_image=END_IMAGE, **quality_request(loras))
    pipe = ref.load(files["tiny"], QUALITY)
    ref.end_frame_clip_tokens(pipe)
    ref.add_loras(pipe, [(files["loras-tiny"] / n, s) for n, s in loras])
    image, end = ref.resize(IMAGE, PARITY_AREA), ref.resize(END_IMAGE, PARITY_AREA)
    frames = ref.run(pipe, image, PROMPT, NEGATIVE, QUALITY, ref.generator(SEED), end)
    np.testing.assert_array_equal(run.frames, frames, err_msg=used(run))
    assert run.result.settings["end_frame"] is True and run.result.settings["loras"][0]["scale"] == 0.9


def test_with_nag_in_fast_mode(files):
    """Fast LoRA + a community LoRA + NAG (a negative prompt in fast mode): the reference's adapters,
    with NAG's processors (model/nag.py, tested on its own in test_nag.py) around the same call."""
    loras = [("wan.safetensors", 0.6)]
    engine, settings = ours(files, lora=str(files["fast"]))
    run = run_ours(engine, settings, speed_mode="fast", negative_prompt=NEGATIVE,
                   loras=[{"path": n, "scale": s} for n, s in loras])  # fmt: skip
    nag = run.result.settings["nag"]
    pipe = ref.load(files["tiny"], ref.FAST)
    ref.add_loras(pipe, [(files["loras-tiny"] / n, s) for n, s in loras], fast=files["fast"])
    with torch.no_grad():  # as the app's prompt cache: with grad on, CPU bf16 kernels round differently
        negative, _ = pipe.encode_prompt(NEGATIVE, do_classifier_free_guidance=False, max_sequence_length=512)
    image = ref.resize(IMAGE, PARITY_AREA)
    with torch.no_grad(), nag_processors(pipe.transformer, negative, nag["scale"], nag["tau"], nag["alpha"]):
        frames = ref.run(pipe, image, PROMPT, "", ref.FAST, ref.generator(SEED))
    np.testing.assert_array_equal(run.frames, frames, err_msg=used(run))
