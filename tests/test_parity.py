"""Reference parity: generate() gives the frames a plain diffusers WanImageToVideoPipeline call gives.

Our side: load_engine(Settings(model=<tiny folder>)) + generate(), frames captured where generate()
hands them to the MP4 encoder. Reference side: tests/parity_reference.py (diffusers only, written
from the documentation). Both load the same random-weight tiny folder through from_pretrained with
the documented dtypes (transformer + text encoder bf16, VAE + CLIP fp32), so where the computation
is the same the frames must be bit-identical; where a layer changes the arithmetic (fp8 storage,
fp8 + LoRA) the tolerance and its reason sit next to the assertion.

Tiny shapes: a 96x64 input fitted into a 64*64 pixel budget (-> 64x48), 81 frames per segment.
The size rule itself is checked at the real 480*832 budget against the examples in docs/architecture.md.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import parity_reference as ref
import pytest
import torch
from conftest import make_image
from PIL import Image

from wan_demo.core.plan import DEFAULT_NEGATIVE_PROMPT, fit_size
from wan_demo.core.request import GenerationRequest, GenerationResult
from wan_demo.core.settings import MAX_AREA, Settings
from wan_demo.core.validate import validate
from wan_demo.generate import generate
from wan_demo.media.colour import match_colours
from wan_demo.media.video import write_outputs
from wan_demo.model.engine import Engine, load_engine
from wan_demo.model.tiny import save_tiny_pipeline

PARITY_AREA = 64 * 64  # tiny pixel budget: 96x64 -> 64x48 (crops, so the resize filter matters)
IMAGE = make_image(96, 64, seed=3)
PROMPT = "a cat walking in the light"
SEED = 1234


# --- our side ----------------------------------------------------------------------------------
@dataclass
class Ours:
    frames: np.ndarray  # (F, H, W, 3) float32 in [0, 1]: exactly what the MP4 encoder received
    starts: list[Image.Image]  # the conditioning image handed to the pipeline, per segment
    result: GenerationResult
    outs: list[np.ndarray]  # what the pipeline returned, per segment (before the seam colour match)


def run_ours(engine: Engine, settings: Settings, **request) -> Ours:
    """generate() with two seams found through the functions that use them (so they follow a
    move): run_segment in generate's module is wrapped to record each segment's start image,
    write_mp4 in the output writer's module captures the float frames instead of encoding them
    (the encode is lossy and tested in test_video.py)."""
    module, writer = sys.modules[generate.__module__], sys.modules[write_outputs.__module__]
    real_segment, captured, starts, outs = module.run_segment, {}, [], []

    def segment(engine, *, image, **kwargs):
        starts.append(image.copy())
        outs.append(real_segment(engine, image=image, **kwargs))
        return outs[-1]

    def encode(frames, path, fps, metadata):
        captured["frames"] = np.stack(frames)
        return path

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(module, "run_segment", segment)
        patch.setattr(writer, "write_mp4", encode)
        request = validate(GenerationRequest(image=IMAGE, prompt=PROMPT, seed=SEED, **request))
        result = generate(request, engine, settings)
    return Ours(captured["frames"], starts, result, outs)


def used(ours: Ours) -> dict:
    """The sampling settings generate() reports it used (shown when frames differ)."""
    return {k: ours.result.settings[k] for k in ("speed_mode", "steps", "guidance", "shift")}


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory) -> Path:
    return Path(save_tiny_pipeline(str(tmp_path_factory.mktemp("parity") / "tiny")))


@pytest.fixture(scope="module")
def lora(tiny_folder, tmp_path_factory) -> Path:
    return ref.write_lora(tiny_folder, tmp_path_factory.mktemp("parity-lora"))


@pytest.fixture(scope="module")
def engine_for(tiny_folder, tmp_path_factory):
    """Settings changes -> (a fresh engine on the tiny folder, its settings)."""
    out = tmp_path_factory.mktemp("parity-out")

    def make(**changes) -> tuple[Engine, Settings]:
        settings = Settings(
            model=str(tiny_folder), device="cpu", output_dir=out, prompt_extender="off", **changes
        )
        engine = load_engine(settings)
        # Test-only: a folder model gets the real 480*832 budget (~2 min per run on CPU). Same rule,
        # smaller budget; test_size_rule_matches_docs checks the rule at 480*832.
        engine.max_area = PARITY_AREA
        return engine, settings

    return make


@pytest.fixture(scope="module")
def quality(engine_for):
    """Our run with default settings (no LoRA: quality, 40 steps, guidance 5, shift 3, cache off)."""
    engine, settings = engine_for()
    return engine, settings, run_ours(engine, settings)


@pytest.fixture(scope="module")
def quality_reference(tiny_folder):
    """Plain diffusers at the documented quality settings; also the generator state after it."""
    pipe = ref.load(tiny_folder, ref.QUALITY)
    generator = ref.generator(SEED)
    image = ref.resize(IMAGE, PARITY_AREA)
    frames = ref.run(pipe, image, PROMPT, ref.documented_negative_prompt(), ref.QUALITY, generator)
    return pipe, frames, generator.get_state()


# --- the docs are what is tested ---------------------------------------------------------------
# input size -> output size at 480P by the official rule; the docs' examples are marked documented
SIZE_TABLE = [
    ((832, 480), (832, 480), "832x480"),
    ((1024, 1024), (624, 624), "1:1"),
    ((1024, 768), (720, 544), "4:3"),
    ((1920, 1080), (832, 464), "1920x1080"),
    ((480, 832), (480, 832), None),
    ((768, 1024), (544, 720), None),  # 3:4
    ((1080, 1920), (464, 832), None),  # 9:16
    ((3000, 2000), (768, 512), None),  # 3:2
    ((1600, 800), (880, 432), None),  # 2:1
    ((1600, 400), (1264, 304), None),  # 4:1, the widest input accepted
    ((400, 1600), (304, 1264), None),  # 1:4
]


def _docs() -> str:
    """docs/*.md, whitespace-normalised (wrapping is free), the page of the size rule first."""
    pages = [ref.FLOW_PAGE, *sorted(p for p in ref.DOCS.glob("*.md") if p != ref.FLOW_PAGE)]
    return " ".join(" ".join(p.read_text().split()) for p in pages)


def test_documented_size_examples_are_the_tested_ones():
    size_bullet = re.search(r"\*\*Size\*\*(.*?)- \*\*", _docs()).group(1)
    documented = re.findall(r"(\d+x\d+|\d+:\d+) -> (\d+)x(\d+)", size_bullet)
    table = [(label, str(w), str(h)) for _, (w, h), label in SIZE_TABLE if label]
    assert sorted(documented) == sorted(table)
    assert "inside the 480x832 pixel budget at multiples of 16" in size_bullet
    assert "scaled with Lanczos to cover that size and centre-cropped" in size_bullet  # = ref.resize
    assert MAX_AREA == ref.MAX_AREA_480P


@pytest.mark.parametrize(("size", "expected", "_label"), SIZE_TABLE)
def test_size_rule_matches_docs(size, expected, _label):
    assert ref.fit_size(*size, ref.MAX_AREA_480P) == expected  # the rule as written out
    assert fit_size(*size, MAX_AREA) == expected  # ours


def test_documented_defaults_are_the_tested_ones():
    docs = _docs()
    assert DEFAULT_NEGATIVE_PROMPT == ref.documented_negative_prompt()
    q, f = ref.QUALITY, ref.FAST
    assert f"official {q.steps} steps, guidance {q.guidance}, shift {q.shift:g}" in docs
    assert f"{f.steps} steps, guidance {f.guidance}, shift {f.shift:g} = {f.steps} forwards" in docs
    assert f"`WAN_DEMO_CACHE_THRESHOLD`, default {ref.FBCACHE_THRESHOLD}" in docs
    dtype = f"run in `WAN_DEMO_DTYPE` (default `{Settings().dtype}`);"
    assert f"{dtype} the VAE and the CLIP image encoder stay fp32" in docs
    assert ref.DTYPES["default"] == getattr(torch, Settings().dtype)


# --- speed modes: bit-identical to plain diffusers ---------------------------------------------
def test_quality_matches_reference(quality, quality_reference):
    _, _, ours = quality
    _, frames, _ = quality_reference
    # the image the pipeline got: the size rule + Lanczos centre crop, pixel for pixel
    np.testing.assert_array_equal(np.asarray(ours.starts[0]), np.asarray(ref.resize(IMAGE, PARITY_AREA)))
    np.testing.assert_array_equal(ours.frames, frames, err_msg=used(ours))
    assert (ours.result.width, ours.result.height) == (64, 48)
    assert used(ours) == {"speed_mode": "quality", **vars(ref.QUALITY)}


def test_quality_with_step_cache_matches_reference(engine_for, tiny_folder, quality_reference):
    engine, settings = engine_for(speed_mode="quality", cache="fbcache")
    ours = run_ours(engine, settings)
    pipe = ref.load(tiny_folder, ref.QUALITY, cache=True)
    image = ref.resize(IMAGE, PARITY_AREA)
    frames = ref.run(pipe, image, PROMPT, ref.documented_negative_prompt(), ref.QUALITY, ref.generator(SEED))
    np.testing.assert_array_equal(ours.frames, frames, err_msg=used(ours))
    assert not np.array_equal(frames, quality_reference[1])  # the cache did skip computations


def test_quality_with_magcache_matches_reference(engine_for, tiny_folder, quality_reference):
    """Our cache=magcache path == diffusers' MagCache hook applied by hand with the published
    ratios and the authors' defaults (docs/speed.md), bit for bit; and it did skip steps."""
    engine, settings = engine_for(speed_mode="quality", cache="magcache")
    ours = run_ours(engine, settings)
    pipe = ref.load(tiny_folder, ref.QUALITY, cache="magcache")
    image = ref.resize(IMAGE, PARITY_AREA)
    frames = ref.run(pipe, image, PROMPT, ref.documented_negative_prompt(), ref.QUALITY, ref.generator(SEED))
    np.testing.assert_array_equal(ours.frames, frames, err_msg=used(ours))
    assert not np.array_equal(frames, quality_reference[1])  # the cache did skip computations
    assert ours.result.settings["speed"]["cache"] == "magcache"


def test_docs_state_the_magcache_defaults():
    speed_doc = " ".join((ref.DOCS / "speed.md").read_text().split())
    m = ref.MAGCACHE
    stated = f"threshold {m['threshold']}, K {m['max_skip_steps']}, retention {m['retention_ratio']}"
    assert stated in speed_doc
    assert (Settings().magcache_threshold, Settings().magcache_max_skip, Settings().magcache_retention) == (
        m["threshold"], m["max_skip_steps"], m["retention_ratio"],
    )  # fmt: skip


def test_fast_with_lora_matches_reference(engine_for, tiny_folder, lora):
    engine, settings = engine_for(lora=str(lora))  # auto: fast, the LoRA adapter on at start-up
    ours = run_ours(engine, settings)
    pipe = ref.load(tiny_folder, ref.FAST, lora=lora)
    image = ref.resize(IMAGE, PARITY_AREA)
    frames = ref.run(pipe, image, PROMPT, ref.documented_negative_prompt(), ref.FAST, ref.generator(SEED))
    np.testing.assert_array_equal(ours.frames, frames, err_msg=used(ours))
    assert used(ours) == {"speed_mode": "fast", **vars(ref.FAST)}


def test_quality_on_a_server_with_the_lora(engine_for, lora, quality_reference):
    """Quality on a server whose fast LoRA is loaded (adapter on at start-up, off for this request):
    bit-identical to plain diffusers without any LoRA, and no mode switch ever rewrites a weight.

    (When the LoRA was fused, unfusing left ~1/4 of the targeted bf16 weights rounded: mean frame
    diff 0.004, max 0.2 on this model. The app now keeps the LoRA as an unfused adapter.)"""
    engine, settings = engine_for(lora=str(lora))
    before = {k: v.clone() for k, v in engine.pipe.transformer.state_dict().items()}
    ours = run_ours(engine, settings, speed_mode="quality")
    np.testing.assert_array_equal(ours.frames, quality_reference[1], err_msg=used(ours))
    for _ in range(2):
        run_ours(engine, settings, speed_mode="fast", steps=1)
        again = run_ours(engine, settings, speed_mode="quality", steps=1)
    assert again.result.settings["speed_mode"] == "quality"
    for name, value in engine.pipe.transformer.state_dict().items():
        torch.testing.assert_close(value, before[name], rtol=0, atol=0, msg=name)


def test_fp8_plan_with_the_fast_lora(engine_for, lora):
    """fp8 storage + the fast LoRA (fusing into fp8 crashed: torch has no fp8 matmul for the delta).
    The adapter runs in the compute dtype beside the fp8-stored base layer. Tolerance as for fp8
    storage below: mean |diff| to the bf16 fast run <= 0.02, and it must differ (fp8 is on)."""
    engine, settings = engine_for(lora=str(lora), memory_mode="fp8_resident")
    assert engine.pipe.transformer.blocks[0].ffn.net[2].base_layer.weight.dtype == torch.float8_e4m3fn
    fp8 = run_ours(engine, settings)
    assert fp8.result.settings["speed_mode"] == "fast"
    bf16 = run_ours(*engine_for(lora=str(lora)))
    diff = np.abs(fp8.frames - bf16.frames)
    assert 0 < diff.mean() <= 0.02, (diff.mean(), diff.max())


# --- memory plans: the same frames as everything resident ---------------------------------------
PLANS_STEPS = 4  # quality (CFG on: both text encodings run) at 4 steps; placement is step-independent
PLACEMENTS = ["resident_te_cpu", "model_offload", "group_block", "group_leaf"]  # streams off on CPU
FP8_PLANS = ["fp8_resident_te_cpu", "fp8_model_offload", "fp8_group_block", "fp8_group_block_te_gpu",
             "fp8_group_leaf"]  # fmt: skip
# "sequential" does not run on CPU (enable_sequential_cpu_offload fails inside accelerate)


@pytest.fixture(scope="module")
def plan_runs(engine_for):
    """Frames per memory plan, resident and fp8_resident first (the baselines)."""
    runs = {}

    def frames(plan: str) -> np.ndarray:
        if plan not in runs:
            engine, settings = engine_for(speed_mode="quality", steps=PLANS_STEPS, memory_mode=plan)
            assert engine.details["memory"]["strategy"] == plan
            if plan.startswith("fp8"):
                assert engine.pipe.transformer.blocks[0].ffn.net[2].weight.dtype == torch.float8_e4m3fn
            runs[plan] = run_ours(engine, settings).frames
        return runs[plan]

    return frames


def test_resident_plan_matches_reference(plan_runs, tiny_folder):
    mode = ref.Mode(PLANS_STEPS, ref.QUALITY.guidance, ref.QUALITY.shift)
    pipe = ref.load(tiny_folder, mode)
    frames = ref.run(pipe, ref.resize(IMAGE, PARITY_AREA), PROMPT, ref.documented_negative_prompt(), mode,
                     ref.generator(SEED))  # fmt: skip
    np.testing.assert_array_equal(plan_runs("resident"), frames)


@pytest.mark.parametrize("plan", PLACEMENTS)
def test_placement_plans_give_the_resident_frames(plan_runs, plan):
    np.testing.assert_array_equal(plan_runs(plan), plan_runs("resident"))  # placement moves, never rounds


def test_fp8_storage_stays_close_to_resident(plan_runs):
    """fp8 (e4m3: 3 mantissa bits, up to 6 % error per stored weight) in the transformer and text
    encoder linears. Measured on the tiny model at 4 steps: mean |diff| 0.007, max 0.21. Tolerance:
    mean |diff| <= 0.02 (5/255); and the run must differ (fp8 storage is really on)."""
    fp8, resident = plan_runs("fp8_resident"), plan_runs("resident")
    diff = np.abs(fp8 - resident)
    assert 0 < diff.mean() <= 0.02, (diff.mean(), diff.max())


@pytest.mark.parametrize("plan", FP8_PLANS)
def test_fp8_placement_plans_give_the_fp8_resident_frames(plan_runs, plan):
    np.testing.assert_array_equal(plan_runs(plan), plan_runs("fp8_resident"))


# --- segment chaining ---------------------------------------------------------------------------
def test_ten_second_clip_chains_on_the_last_decoded_frame(quality, quality_reference):
    engine, settings, five = quality
    ten = run_ours(engine, settings, video_length_s=10)
    assert ten.frames.shape == (161, 48, 64, 3) and len(ten.starts) == 2
    np.testing.assert_array_equal(ten.frames[:81], five.frames)  # same seed: segment 1 is the 5 s clip
    # segment 2 starts from the last frame of segment 1 as the video shows it (8-bit pixels)
    np.testing.assert_array_equal(np.asarray(ten.starts[1]), ref.to_pixels(ten.frames[80]))
    # and matches plain diffusers chained by hand: same pipeline, the generator carried on
    pipe, first, state = quality_reference
    generator = torch.Generator("cpu")
    generator.set_state(state)
    start = Image.fromarray(ref.to_pixels(first[-1]))
    second = ref.run(pipe, start, PROMPT, ref.documented_negative_prompt(), ref.QUALITY, generator)
    np.testing.assert_array_equal(ten.outs[1], second)
    # its first frame repeats the start and is dropped; the rest is colour-matched to the 8 frames
    # before the seam (docs "Seam colour match", tested on its own in test_colour.py)
    np.testing.assert_array_equal(
        ten.frames[81:], np.stack(match_colours(second[1:], list(ten.frames[73:81])))
    )


# --- issue 24: end frame, NAG -------------------------------------------------------------------
END_IMAGE = make_image(96, 64, seed=8)


def test_plain_diffusers_last_image_fails_on_the_i2v_transformer(tiny_folder):
    """Why the end frame needs the CLIP-token recipe: diffusers' own pair embedding is the FLF2V
    model's (position embedding); on this transformer the call raises."""
    pipe = ref.load(tiny_folder, ref.Mode(1, 1.0, 3.0))
    assert pipe.transformer.condition_embedder.image_embedder.pos_embed is None
    image = ref.resize(IMAGE, PARITY_AREA)
    with pytest.raises(RuntimeError, match="Sizes of tensors must match"):
        ref.run(
            pipe,
            image,
            PROMPT,
            "",
            ref.Mode(1, 1.0, 3.0),
            ref.generator(SEED),
            ref.resize(END_IMAGE, PARITY_AREA),
        )


def test_end_frame_matches_reference(quality, tiny_folder, quality_reference):
    engine, settings, _ = quality
    ours = run_ours(engine, settings, last_image=END_IMAGE)
    pipe = ref.load(tiny_folder, ref.QUALITY)
    ref.end_frame_clip_tokens(pipe)
    image, end = ref.resize(IMAGE, PARITY_AREA), ref.resize(END_IMAGE, PARITY_AREA)
    negative = ref.documented_negative_prompt()
    frames = ref.run(pipe, image, PROMPT, negative, ref.QUALITY, ref.generator(SEED), end)
    np.testing.assert_array_equal(ours.frames, frames, err_msg=used(ours))
    assert not np.array_equal(frames, quality_reference[1])  # the end frame did condition the clip
    assert ours.result.settings["end_frame"] is True


def test_ten_second_clip_ends_on_the_end_frame_in_its_last_segment(quality):
    """Segment 1 of a 10 s clip is the plain 5 s clip; only the last segment gets last_image."""
    engine, settings, five = quality
    ten = run_ours(engine, settings, video_length_s=10, last_image=END_IMAGE)
    np.testing.assert_array_equal(ten.frames[:81], five.frames)
    assert ten.result.lineage["segments"][1]["ends_on"] and not ten.result.lineage["segments"][0]["ends_on"]


def test_nag_off_is_todays_fast_run_and_leaves_every_processor(engine_for, lora, tiny_folder):
    """Fast mode without a negative prompt: bit-identical to plain diffusers (no NAG code runs);
    with one, NAG changes the frames and puts every original processor back afterwards."""
    engine, settings = engine_for(lora=str(lora))
    processors = [b.attn2.processor for b in engine.pipe.transformer.blocks]
    off = run_ours(engine, settings)
    pipe = ref.load(tiny_folder, ref.FAST, lora=lora)
    image = ref.resize(IMAGE, PARITY_AREA)
    frames = ref.run(pipe, image, PROMPT, ref.documented_negative_prompt(), ref.FAST, ref.generator(SEED))
    np.testing.assert_array_equal(off.frames, frames, err_msg=used(off))
    on = run_ours(engine, settings, negative_prompt="blurry, static")
    assert on.result.settings["nag"] == {"scale": 11.0, "tau": 2.5, "alpha": 0.25}
    assert off.result.settings["nag"] is None and not np.array_equal(on.frames, off.frames)
    assert [b.attn2.processor for b in engine.pipe.transformer.blocks] == processors
    again = run_ours(engine, settings)
    np.testing.assert_array_equal(again.frames, off.frames)  # nothing left behind
