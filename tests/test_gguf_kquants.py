"""K-quant GGUF files in the byte layout city96 publishes (Q3_K_M, Q4_K_M, Q5_K_M, Q6_K: the files the
planner recommends for 8-24 GB cards), written by bench/gguf_files.py with random codes, through the
app's own loader. Each tensor has the type city96's tools give it, its bytes are the file's, and
diffusers' dequantization (what every forward runs) equals gguf-py's reference dequantizer within
float16 rounding (diffusers dequantizes in float16, gguf-py in float32).

K-quant blocks hold 256 weights per row, so the test transformer is 256 wide (2 heads of 128), 2 blocks.
"""

from __future__ import annotations

import gguf
import numpy as np
import pytest
import torch
from diffusers import WanTransformer3DModel
from diffusers.quantizers.gguf.utils import GGUFParameter, dequantize_gguf_tensor

from bench import gguf_files
from bench.wan_files import original_key
from wan_demo.core.settings import Settings
from wan_demo.model.load import load_transformer_file
from wan_demo.model.tiny import TRANSFORMER_CONFIG

WIDE = {**TRANSFORMER_CONFIG, "num_attention_heads": 2, "attention_head_dim": 128, "ffn_dim": 512,
        "num_layers": 2, "added_kv_proj_dim": 256}  # fmt: skip
# city96's published sizes (GB) of the real 40-block files, as listed on the hub (FIELD-NOTES)
PUBLISHED_GB = {"Q8_0": 18.1, "Q5_0": 12.3, "Q4_K_M": 11.3, "Q3_K_M": 8.6}


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("wide")
    WanTransformer3DModel.from_config(WIDE).save_config(folder / "transformer")
    return folder


@pytest.fixture(scope="module")
def shapes() -> dict[str, tuple[int, ...]]:
    from accelerate import init_empty_weights

    with init_empty_weights():
        model = WanTransformer3DModel.from_config(WIDE)
    return {original_key(k): tuple(v.shape) for k, v in model.state_dict().items()}


def _forward(t) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 36, 2, 8, 8, generator=g).bfloat16()
    text = torch.randn(1, 8, t.config.text_dim, generator=g).bfloat16()
    image = torch.randn(1, 5, t.config.image_dim, generator=g).bfloat16()
    with torch.no_grad():
        return t(x, torch.tensor([500]), text, image, return_dict=False)[0]


@pytest.mark.parametrize("ftype", ["Q3_K_M", "Q4_K_M", "Q5_K_M", "Q6_K"])
def test_kquant_file_loads_with_city96_types_and_dequantizes_like_gguf_py(
    model_folder, shapes, ftype, tmp_path
):
    path = gguf_files.write(tmp_path / f"wide-{ftype}.gguf", shapes, ftype, seed=1)
    expected = gguf_files.tensor_types(shapes, ftype)
    in_file = {r.name: r for r in gguf.GGUFReader(path).tensors}
    assert {n: r.tensor_type.name for n, r in in_file.items()} == expected
    assert in_file["patch_embedding.weight"].data.shape == (256, 36, 1, 2, 2)  # native 5-D F32

    t = load_transformer_file(str(path), str(model_folder), Settings(offline=True))
    quantized = {n: p for n, p in t.named_parameters() if isinstance(p, GGUFParameter)}
    assert len(quantized) == 24  # the 12 linears of each block; embeddings and head stay F32
    for name, p in quantized.items():
        record = in_file[original_key(name)]
        assert p.quant_type == record.tensor_type
        assert np.array_equal(p.as_tensor().numpy(), record.data)  # the file's bytes, untouched
        reference = gguf.quants.dequantize(record.data, record.tensor_type)
        ours = dequantize_gguf_tensor(p).float().numpy()
        np.testing.assert_allclose(ours, reference, rtol=2**-9, atol=2**-24)
    kinds = {p.quant_type.name for p in quantized.values()}
    assert kinds == set(expected[original_key(n)] for n in quantized)
    assert torch.isfinite(_forward(t)).all()


def test_the_mixes_promote_values_and_ffn_down_as_city96_does(shapes):
    q4km = gguf_files.tensor_types(shapes, "Q4_K_M")
    assert q4km["blocks.0.self_attn.v.weight"] == q4km["blocks.1.ffn.2.weight"] == "Q6_K"
    assert q4km["blocks.0.self_attn.q.weight"] == q4km["blocks.0.cross_attn.v_img.weight"] == "Q4_K"
    q3km = gguf_files.tensor_types(shapes, "Q3_K_M")  # the first two value projections in file order
    values = [q3km[n] for n in q3km if n.endswith(".v.weight")]
    assert values == ["Q5_K", "Q5_K", "Q4_K", "Q4_K"] and q3km["blocks.0.ffn.2.weight"] == "Q4_K"
    assert q3km["time_projection.1.weight"] == q3km["head.head.weight"] == "F32"


def test_bf16_plain_tensors_load_as_bfloat16(model_folder, shapes, tmp_path):
    """A converter that keeps a bf16 source's dtype writes BF16 embeddings; diffusers accepts them."""
    path = gguf_files.write(tmp_path / "bf16-plain.gguf", shapes, "Q4_K_M", plain="BF16")
    t = load_transformer_file(str(path), str(model_folder), Settings(offline=True))
    weight = t.condition_embedder.time_proj.weight
    assert weight.dtype == torch.bfloat16 and not isinstance(weight, GGUFParameter)
    assert torch.isfinite(_forward(t)).all()


def test_computed_sizes_of_the_real_files_match_the_published_ones():
    real = gguf_files.real_shapes()
    assert len([n for n in real if n.endswith(".ffn.0.weight")]) == 40
    for ftype, published in PUBLISHED_GB.items():
        computed = gguf_files.file_bytes(real, ftype) / 1e9
        assert abs(computed - published) / published < 0.01, (ftype, computed, published)
