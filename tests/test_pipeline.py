"""Model selection and the REAL loading function, fed a tiny model saved as a diffusers folder."""

import pytest
from conftest import ask

from wan_demo.core.settings import REAL_MODEL_ID, Settings
from wan_demo.generate import generate
from wan_demo.media.video import count_frames
from wan_demo.model.engine import TINY_BANNER, ModelUnavailable, load_engine, wants_tiny
from wan_demo.model.tiny import save_tiny_pipeline


@pytest.mark.parametrize(
    ("model", "device", "tiny"),
    [("auto", "cpu", True), ("auto", "cuda", False), ("tiny", "cuda", True), (REAL_MODEL_ID, "cpu", False)],
)
def test_explicit_setting_wins_else_real_on_cuda(model, device, tiny):
    assert wants_tiny(Settings(model=model), device) is tiny


def test_tiny_engine_banner_says_output_is_noise(engine):
    assert engine.is_tiny and "TINY" in engine.banner and "noise" in TINY_BANNER
    assert engine.memory_plan in engine.banner


def test_real_loader_reads_a_local_diffusers_folder(tmp_path, image):
    folder = save_tiny_pipeline(str(tmp_path / "wan-tiny"))
    settings = Settings(model=folder, device="cpu", steps=2, output_dir=tmp_path / "out")
    engine = load_engine(settings)
    assert not engine.is_tiny and engine.model_name == folder
    # diffusers' recipe: VAE and CLIP image encoder in fp32, the rest in the configured bf16.
    dtypes = {name: str(getattr(engine.pipe, name).dtype) for name in ("vae", "image_encoder", "transformer")}
    assert dtypes == {
        "vae": "torch.float32",
        "image_encoder": "torch.float32",
        "transformer": "torch.bfloat16",
    }
    assert str(engine.pipe.text_encoder.dtype) == "torch.bfloat16"
    # The real path uses the 480*832 budget; a 64x48 input keeps its ratio inside it.
    assert engine.max_area == 480 * 832
    small = engine.__class__(**{**engine.__dict__, "max_area": 64 * 64})
    result = generate(ask(image, "a cat", seed=0), small, settings)
    assert count_frames(result.video_path) == (81, 64, 48)


def test_missing_weights_give_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelUnavailable) as err:
        load_engine(Settings(model=REAL_MODEL_ID, device="cpu", offline=True))
    message = str(err.value)
    assert REAL_MODEL_ID in message and "hf download" in message and "WAN_DEMO_MODEL=tiny" in message
    with pytest.raises(ModelUnavailable, match="folder"):
        load_engine(Settings(model=str(tmp_path), device="cpu"))  # a folder without model_index.json
