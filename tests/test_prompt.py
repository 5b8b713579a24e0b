"""Prompt extension: rule-based extender (English, Chinese), output checks, backend order, never-fail."""

from __future__ import annotations

import pytest
from conftest import ask
from PIL import Image

from wan_demo.core.plan import DEFAULT_NEGATIVE_PROMPT
from wan_demo.core.settings import Settings
from wan_demo.prompt import extend as prompt
from wan_demo.prompt import rules as prompt_rules
from wan_demo.prompt.extend import backends, extend_prompt
from wan_demo.prompt.rules import extend_with_rules, image_traits
from wan_demo.prompt.text import MAX_OUTPUT_CHARS, BackendFailed, check_output, clean_output, language_of


def test_rules_english_keeps_prompt_and_adds_motion_and_camera(image):
    text = extend_with_rules("A woman walks on the beach at sunset", image)
    assert text.startswith("A woman walks on the beach at sunset.")
    assert "breathing" in text and "waves" in text  # person + water motions
    assert "camera" in text.lower()
    assert 50 <= len(text.split()) <= 120
    assert text == extend_with_rules("A woman walks on the beach at sunset", image)  # deterministic


def test_rules_chinese_answers_in_chinese(image):
    text = extend_with_rules("一只猫坐在窗台上，看着窗外的雨", image)
    assert text.startswith("一只猫坐在窗台上，看着窗外的雨。")
    assert "耳朵" in text and "雨" in text and "镜头" in text
    assert language_of(text) == "zh" and 80 <= len(text) <= 300


def test_rules_keep_quoted_text_and_user_camera(image):
    text = extend_with_rules('Slow zoom on a neon sign that reads "OPEN 24H"', image)
    assert '"OPEN 24H"' in text
    assert "moves as described" in text  # the user's camera wins over an invented one


def test_rules_whole_word_keywords(image):
    text = extend_with_rules("a human-sized mango", image)
    assert "subject moves naturally" not in text  # "man" is not inside "human"


def test_image_traits_see_shape_light_and_colour():
    dark_blue_portrait = Image.new("RGB", (60, 100), (20, 40, 160))
    traits = image_traits(dark_blue_portrait)
    assert traits == {"frame": "portrait", "light": "dim", "saturation": pytest.approx(0.875, abs=0.01),
                      "colours": ["blue"]}  # fmt: skip
    bright = Image.new("RGB", (100, 50), (250, 250, 245))
    traits = image_traits(bright)
    assert traits["frame"] == "landscape" and traits["light"] == "bright" and traits["colours"] == ["white"]
    text = extend_with_rules("a sheet of paper", bright)
    assert "bright, high-key lighting" in text and "dominant white tones" in text
    assert "pans slowly" in text or "pushes in" in text  # landscape camera moves


def test_clean_output_strips_chat_and_fences():
    assert clean_output('Sure! Here is the extended prompt:\n"A cat yawns."') == "A cat yawns."
    assert clean_output("```\n**Prompt:** A dog\nruns.\n```") == "A dog runs."
    assert clean_output("好的，以下是扩写后的提示词：一只猫打哈欠。") == "一只猫打哈欠。"
    assert clean_output("A cat yawns. Let me know if you want changes!") == "A cat yawns."
    assert clean_output("Sure-footed goats climb.") == "Sure-footed goats climb."


def test_check_output_rules():
    assert check_output("a cat", "A cat yawns.") == "A cat yawns."
    with pytest.raises(BackendFailed, match="empty"):
        check_output("a cat", "")
    with pytest.raises(BackendFailed, match="too long"):
        check_output("a cat", "word " * (MAX_OUTPUT_CHARS // 4))
    with pytest.raises(BackendFailed, match="quoted text"):
        check_output('a sign saying "HELLO"', "A sign saying hello.")
    with pytest.raises(BackendFailed, match="expected Chinese"):
        check_output("一只猫", "A cat.")
    with pytest.raises(BackendFailed, match="expected English"):
        check_output("a cat", "一只猫在窗台上打哈欠。")


def test_plan_orders_backends(monkeypatch):
    monkeypatch.setattr(prompt.prompt_vlm, "cuda_available", lambda: False)
    order, skipped = backends(Settings())
    assert order == ["rules"] and [s["backend"] for s in skipped] == ["openai", "local"]
    order, _ = backends(Settings(openai_base_url="http://127.0.0.1:9/v1", openai_model="m"))
    assert order == ["openai", "rules"]
    assert backends(Settings(prompt_extender="local"))[0] == ["local", "rules"]
    assert backends(Settings(prompt_extender="off"))[0] == []


def test_toggle_changes_final_prompt_with_offline_fallback(image, monkeypatch):
    monkeypatch.setattr(prompt.prompt_vlm, "cuda_available", lambda: False)
    final, info = extend_prompt("a red kite in the sky", image, Settings())  # auto on a CPU machine
    assert final != "a red kite in the sky" and final.startswith("a red kite in the sky.")
    assert info["backend"] == "rules" and "fallback" in info["note"]
    assert info["reason"].startswith("auto: skipped openai: openai_base_url / openai_model not set; local: ")
    final, info = extend_prompt("a red kite", image, Settings(prompt_extender="off"))
    assert final == "a red kite" and info["backend"] == "off"


def test_never_fails_even_when_every_backend_raises(image, monkeypatch):
    def boom(*_args):
        raise RuntimeError("simulated bug in planning")

    monkeypatch.setitem(prompt.RUNNERS, "rules", lambda *_a: (_ for _ in ()).throw(RuntimeError("broken")))
    final, info = extend_prompt("a cat", image, Settings(prompt_extender="rules"))
    assert final == "a cat" and info["backend"] == "none"
    assert info["attempts"] == [{"backend": "rules", "error": "RuntimeError: broken"}]
    monkeypatch.setattr(prompt, "backends", boom)
    monkeypatch.setitem(prompt.RUNNERS, "rules", prompt._run_rules)
    final, info = extend_prompt("a cat", image, Settings())
    assert info["backend"] == "rules" and info["skipped"][0]["backend"] == "plan"


def test_local_backend_falls_back_to_rules_when_model_missing(image, tmp_path):
    settings = Settings(prompt_extender="local", prompt_model=str(tmp_path / "no-such-model"), offline=True)
    final, info = extend_prompt("a cat", image, settings)
    assert info["backend"] == "rules" and info["attempts"][0]["backend"] == "local"
    assert final.startswith("a cat.")


def test_generate_records_extended_prompt(engine, settings, image):
    from wan_demo.generate import generate

    result = generate(ask(image, "a boat on a lake", prompt_extend=True, seed=1), engine, settings)
    assert result.final_prompt.startswith("a boat on a lake.") and result.prompt_info["backend"] == "rules"
    assert DEFAULT_NEGATIVE_PROMPT and len(result.final_prompt) <= MAX_OUTPUT_CHARS


def test_rules_never_raise_on_odd_images():
    for img in (
        Image.new("L", (1, 1)),
        Image.new("RGBA", (3, 700), (0, 0, 0, 0)),
        Image.effect_noise((5, 5), 64),
    ):
        assert prompt_rules.extend_with_rules("", img)
