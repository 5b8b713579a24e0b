"""Local VLM backend run for real on a tiny random-weight Qwen2.5-VL built in-process.

The model is saved with save_pretrained to a temporary folder and loaded back through the real
loading function (AutoModelForImageTextToText + AutoTokenizer + AutoImageProcessor). Its text is
garbage; the tests check the plumbing: image tokens, caching, length cap, timeout and fallback.
"""

from __future__ import annotations

import pytest
import torch
from tokenizers.pre_tokenizers import ByteLevel
from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2Tokenizer
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from wan_demo.core.settings import Settings
from wan_demo.prompt import text as prompt_text
from wan_demo.prompt import vlm as prompt_vlm
from wan_demo.prompt.extend import extend_prompt

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>"]
SPECIALS += ["<|image_pad|>", "<|video_pad|>"]


def build_tiny_vlm(folder) -> None:
    """Byte-level tokenizer (256 bytes + Qwen specials), 2-layer text and vision towers, ~100k params."""
    vocab = {c: i for i, c in enumerate(sorted(ByteLevel.alphabet()))}
    tokenizer = Qwen2Tokenizer(
        vocab=vocab,
        merges=[],
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens=SPECIALS,
    )
    tokenizer.chat_template = prompt_vlm.FALLBACK_TEMPLATE
    ids = dict(zip(SPECIALS, tokenizer.convert_tokens_to_ids(SPECIALS), strict=True))
    text = dict(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
        rope_parameters={"rope_type": "default", "mrope_section": [1, 1, 2], "rope_theta": 10000.0},
        bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"],
    )  # fmt: skip
    vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=32,
                  fullatt_block_indexes=[1], window_size=56)  # fmt: skip
    config = Qwen2_5_VLConfig(
        text_config=text, vision_config=vision, image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )  # fmt: skip
    torch.manual_seed(0)
    Qwen2_5_VLForConditionalGeneration(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    # few pixels: at most 16 merged image tokens, so generation stays ~0.1 s
    Qwen2VLImageProcessorPil(min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 16).save_pretrained(folder)


@pytest.fixture(scope="module")
def vlm_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-qwen2.5-vl")
    build_tiny_vlm(folder)
    yield folder
    prompt_vlm.unload_all()


@pytest.fixture
def local(vlm_folder, monkeypatch) -> Settings:
    monkeypatch.setattr(prompt_vlm, "MAX_NEW_TOKENS", 24)  # garbage text; keep it short
    return Settings(prompt_extender="local", prompt_model=str(vlm_folder), offline=True, prompt_timeout_s=60)


def test_local_vlm_rewrites_and_is_cached(local, image):
    final, info = extend_prompt("a red kite in the sky", image, local)
    assert info["backend"] == "local", info
    assert info["reason"] == "first choice" and info["device"] == "cpu"
    assert 0 < info["new_tokens"] <= 24 and 0 < len(final) <= 24  # byte tokens: <= 1 char each
    assert final != "a red kite in the sky" and info["model"] == local.prompt_model
    vlm = prompt_vlm.load_vlm(local.prompt_model)
    assert vlm is prompt_vlm.load_vlm(local.prompt_model)  # loaded once
    assert type(vlm.model).__name__ == "Qwen2_5_VLForConditionalGeneration"
    assert vlm.weight_bytes == sum(p.numel() * 4 for p in vlm.model.parameters())  # fp32 on CPU
    again, _ = extend_prompt("a red kite in the sky", image, local)
    assert again == final  # greedy decoding: deterministic


def test_image_tokens_match_the_vision_grid(local, image):
    vlm = prompt_vlm.load_vlm(local.prompt_model)
    inputs = prompt_vlm.build_inputs(vlm, "a cat", image)
    per_image = int(inputs["image_grid_thw"][0].prod()) // 4  # merge_size 2 x 2
    image_id = vlm.model.config.image_token_id
    assert int((inputs["input_ids"] == image_id).sum()) == per_image == int(inputs["mm_token_type_ids"].sum())
    prompt_in = vlm.tokenizer.decode(inputs["input_ids"][0])
    assert prompt_text.SYSTEM_PROMPT in prompt_in and "User's idea: a cat" in prompt_in
    assert prompt_in.endswith("<|im_start|>assistant\n")


def test_tokenizer_without_template_uses_fallback(local, image, monkeypatch):
    vlm = prompt_vlm.load_vlm(local.prompt_model)
    monkeypatch.setattr(vlm.tokenizer, "chat_template", None)
    inputs = prompt_vlm.build_inputs(vlm, "a cat", image)
    assert int(inputs["mm_token_type_ids"].sum()) > 0


def test_over_long_output_falls_back(local, image, monkeypatch):
    monkeypatch.setattr(prompt_text, "MAX_OUTPUT_CHARS", 5)  # the tiny model writes up to 24 chars
    final, info = extend_prompt("a red kite", image, local)
    assert info["backend"] == "rules" and info["attempts"][0]["backend"] == "local"
    assert info["attempts"][0]["error"].startswith("output too long")
    assert final.startswith("a red kite.")


def test_timeout_falls_back(local, image):
    final, info = extend_prompt("a red kite", image, local.replace(prompt_timeout_s=0.0))
    assert info["backend"] == "rules"
    assert info["attempts"][0] == {
        "backend": "local",
        "error": "timeout after 0 s (partial output discarded)",
    }


def test_wrong_language_falls_back(local, image):
    final, info = extend_prompt("一只风筝在天上飞", image, local)  # garbage bytes hold no Chinese
    assert info["backend"] == "rules" and "expected Chinese" in info["attempts"][0]["error"]
    assert final.startswith("一只风筝在天上飞。")


def test_auto_needs_cuda_and_reachable_weights(vlm_folder, monkeypatch):
    monkeypatch.setattr(prompt_vlm, "cuda_available", lambda: True)
    assert prompt_vlm.is_available(Settings(prompt_model=str(vlm_folder)))[0]
    ok, why = prompt_vlm.is_available(Settings(prompt_model="nobody/no-such-vlm"))
    assert not ok and "not downloaded" in why  # auto never downloads inside a generation
    monkeypatch.setattr(prompt_vlm, "cuda_available", lambda: False)
    assert not prompt_vlm.is_available(Settings(prompt_model=str(vlm_folder)))[0]


def test_hub_id_loads_from_the_hugging_face_cache(vlm_folder, local, image, tmp_path, monkeypatch):
    """The hub-id path, offline: the tiny model laid out as a cached snapshot of a hub repo."""
    import shutil

    from huggingface_hub import constants

    repo = tmp_path / "hub" / "models--tiny-org--tiny-qwen-vl"
    commit = "0" * 40
    shutil.copytree(vlm_folder, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(prompt_vlm, "cuda_available", lambda: True)
    hub = local.replace(prompt_model="tiny-org/tiny-qwen-vl", prompt_extender="auto")
    assert prompt_vlm.is_available(hub) == (True, "in the Hugging Face cache")
    final, info = extend_prompt("a red kite", image, hub.replace(prompt_extender="local"))
    assert info["backend"] == "local" and info["model"] == "tiny-org/tiny-qwen-vl" and final
    assert prompt_vlm.load_vlm("tiny-org/tiny-qwen-vl").source == "tiny-org/tiny-qwen-vl"
