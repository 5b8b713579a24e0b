"""The text encoder loads straight into its storage dtype (model/text_encoder.py): fp8 layers arrive in
fp8 (never a bf16 copy of the model first), the rest in the compute dtype, values equal to
transformers' own load cast the same way, large tensors read in row chunks, the embedding tied."""

from __future__ import annotations

import pytest
import torch
from transformers import UMT5EncoderModel

from wan_demo.model import text_encoder
from wan_demo.model.memory.estimate import FP8_SKIP_PATTERNS
from wan_demo.model.memory.sizes import fp8_castable_names
from wan_demo.model.tiny import save_tiny_pipeline


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> str:
    return save_tiny_pipeline(str(tmp_path_factory.mktemp("te") / "tiny"))


@pytest.fixture(scope="module")
def reference(folder):
    return UMT5EncoderModel.from_pretrained(f"{folder}/text_encoder", dtype=torch.bfloat16).eval()


def test_fp8_layers_arrive_in_fp8_and_equal_the_reference_cast(folder, reference, monkeypatch):
    from accelerate import utils

    arrived: dict[str, torch.dtype] = {}
    original = utils.set_module_tensor_to_device

    def record(module, name, device, value=None, **kw):
        arrived[name] = value.dtype
        return original(module, name, device, value=value, **kw)

    monkeypatch.setattr(utils, "set_module_tensor_to_device", record)
    encoder = text_encoder.load_text_encoder(folder, True, "cpu", torch.bfloat16, local_only=True)
    castable = set(fp8_castable_names(encoder, FP8_SKIP_PATTERNS["text_encoder"]))
    assert castable and arrived  # every tensor went in as it is stored: no bf16 model first
    for name, dtype in arrived.items():
        assert dtype == (torch.float8_e4m3fn if name.rpartition(".")[0] in castable else torch.bfloat16)
    expected = {k: (v.to(torch.float8_e4m3fn) if k.rpartition(".")[0] in castable else v)
                for k, v in reference.state_dict().items()}  # fmt: skip
    got = encoder.state_dict()
    assert set(got) == set(expected)
    for k, v in expected.items():
        assert got[k].dtype == v.dtype and torch.equal(got[k].view(torch.uint8), v.view(torch.uint8)), k
    assert encoder.encoder.embed_tokens.weight is encoder.shared.weight  # tied, loaded once


def test_large_tensors_read_in_chunks_give_the_same_weights(folder, reference, monkeypatch):
    monkeypatch.setattr(text_encoder, "CHUNK_BYTES", 256)  # every 2-D tensor in several row chunks
    encoder = text_encoder.load_text_encoder(folder, False, "cpu", torch.bfloat16, local_only=True)
    for k, v in reference.state_dict().items():
        assert torch.equal(encoder.state_dict()[k], v), k
    ids = torch.tensor([[5, 7, 9, 1]])
    with torch.no_grad():
        assert torch.equal(encoder(ids).last_hidden_state, reference(ids).last_hidden_state)


def test_a_folder_without_weights_names_it(tmp_path):
    (tmp_path / "text_encoder").mkdir()
    with pytest.raises(OSError, match="no safetensors weights"):
        text_encoder.shard_files(str(tmp_path), local_only=True)
