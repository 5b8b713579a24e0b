"""What a GGUF transformer file of city96/Wan2.1-I2V-14B-480P-gguf holds, tensor by tensor: the type of
each tensor (computed from city96's rules) or read from a file's header, and their byte sizes.

The rules follow city96's tools in ComfyUI-GGUF (commit 795e451): `tools/convert.py` (source -> GGUF)
and `tools/lcpp.patch` (llama.cpp quantize for LLM_ARCH_WAN, `img_tensor_get_type`):
- never quantized: names containing one of KEEP, and tensors that are not 2-D;
- F32: 1-D tensors, tensors of at most 1024 weights, `.modulation`, and the never-quantized 2-D
  tensors (time_projection, text/time embeddings, img_emb, head: 241 M weights). convert.py alone
  would give those the source dtype (BF16); F32 is what the published files hold: with it the
  computed sizes of Q8_0 / Q5_0 / Q4_K_M / Q3_K_M (18.14 / 12.27 / 11.34 / 8.59 GB) match the
  published 18.1 / 12.3 / 11.3 / 8.6 GB within 0.4 %; with BF16 they fall 0.48 GB short;
- the 5-D patch embedding: a native 5-D F32 tensor (`fix_5d_tensors.py`), no shape metadata;
- the mixes (MIXES): `.v.weight` (self- and cross-attention values) and `.ffn.2.weight` go one or two
  types up; a row that does not split into 256-weight blocks falls back to F16 (K types).
"""

from __future__ import annotations

import math
import os
import re

KEEP = ("modulation", "patch_embedding", "text_embedding", "time_projection", "time_embedding",
        "img_emb", "head")  # fmt: skip
SMALL = 1024  # weights: at most this many stay F32 (convert.py QUANTIZATION_THRESHOLD)
QK_K = 256  # weights per K-quant super-block
# file type -> (base type, type of `.v.weight`, type of `.ffn.2.weight`) (lcpp.patch img_tensor_get_type)
MIXES = {
    "Q8_0": ("Q8_0", "Q8_0", "Q8_0"),
    "Q6_K": ("Q6_K", "Q6_K", "Q6_K"),
    "Q5_K_M": ("Q5_K", "Q6_K", "Q6_K"),
    "Q5_K_S": ("Q5_K", "Q5_K", "Q5_K"),
    "Q5_1": ("Q5_1", "Q5_1", "Q5_1"),
    "Q5_0": ("Q5_0", "Q5_0", "Q5_1"),
    "Q4_K_M": ("Q4_K", "Q6_K", "Q6_K"),
    "Q4_K_S": ("Q4_K", "Q4_K", "Q5_K"),  # plus FIRST_V
    "Q4_1": ("Q4_1", "Q4_1", "Q4_1"),
    "Q4_0": ("Q4_0", "Q4_0", "Q4_1"),
    "Q3_K_M": ("Q3_K", "Q4_K", "Q4_K"),  # plus FIRST_V
    "Q3_K_S": ("Q3_K", "Q3_K", "Q3_K"),
    "Q2_K": ("Q2_K", "Q3_K", "Q2_K"),
}
FIRST_V = {"Q3_K_M": (2, "Q5_K"), "Q4_K_S": (4, "Q5_K")}  # the first N `.v.weight` (file order) get this
# (weights per block, bytes per block) of each GGML type the files use (gguf-py GGML_QUANT_SIZES)
BLOCKS = {"F32": (1, 4), "F16": (1, 2), "BF16": (1, 2), "Q8_0": (32, 34), "Q5_1": (32, 24),
          "Q5_0": (32, 22), "Q4_1": (32, 20), "Q4_0": (32, 18), "Q6_K": (256, 210), "Q5_K": (256, 176),
          "Q4_K": (256, 144), "Q3_K": (256, 110), "Q2_K": (256, 84)}  # fmt: skip

Shapes = dict[str, tuple[int, ...]]  # original Wan tensor names (file order) -> logical shapes


def tensor_types(shapes: Shapes, ftype: str, plain: str = "F32") -> dict[str, str]:
    """GGML type per tensor as city96's tools write a file of `ftype`. `plain`: the type of the
    never-quantized 2-D tensors (F32 as published; BF16 / F16 as convert.py writes from bf16 / fp16)."""
    base, v_type, ffn2_type = MIXES[ftype]
    first_v, v_seen, out = FIRST_V.get(ftype, (0, "")), 0, {}
    for name, shape in shapes.items():
        if len(shape) != 2 or math.prod(shape) <= SMALL or name.endswith(".modulation"):
            out[name] = "F32"
            continue
        if any(k in name for k in KEEP):
            out[name] = plain
            continue
        kind = base
        if name.endswith(".v.weight"):
            kind = first_v[1] if v_seen < first_v[0] else v_type
            v_seen += 1
        elif name.endswith(".ffn.2.weight"):
            kind = ffn2_type
        out[name] = "F16" if kind.endswith("_K") and shape[-1] % QK_K else kind
    return out


def nbytes(shape: tuple[int, ...], kind: str) -> int:
    per_block, size = BLOCKS[kind]
    return math.prod(shape) // per_block * size


def file_tensors(shapes: Shapes, ftype: str) -> list[tuple[str, tuple[int, ...], str, int]]:
    """(name, shape, type, bytes) per tensor of a city96 file of `ftype` (computed, not read)."""
    types = tensor_types(shapes, ftype)
    return [(n, s, types[n], nbytes(s, types[n])) for n, s in shapes.items()]


def read_header(path: str | os.PathLike) -> list[tuple[str, tuple[int, ...], str, int]]:
    """(name, logical shape, type, bytes) per tensor, from a GGUF file's header (data not read)."""
    from gguf import GGUFReader

    out = []
    for t in GGUFReader(path).tensors:
        shape = tuple(int(d) for d in reversed(t.shape.tolist()))  # GGUF lists dims innermost first
        out.append((t.name, shape, t.tensor_type.name, int(t.n_bytes)))
    return out


def ftype_of(tensors: list[tuple[str, tuple[int, ...], str, int]]) -> str:
    """The quant type holding most bytes (Q4_K for a Q4_K_M file); "" when nothing is quantized."""
    by_type: dict[str, int] = {}
    for _name, _shape, kind, size in tensors:
        if kind not in ("F32", "F16", "BF16"):
            by_type[kind] = by_type.get(kind, 0) + size
    return max(by_type, key=by_type.get) if by_type else ""


# diffusers name -> original Wan name (the inverse of diffusers' convert_wan_transformer_to_diffusers)
TO_ORIGINAL = [
    ("condition_embedder.time_embedder.linear_1", "time_embedding.0"),
    ("condition_embedder.time_embedder.linear_2", "time_embedding.2"),
    ("condition_embedder.text_embedder.linear_1", "text_embedding.0"),
    ("condition_embedder.text_embedder.linear_2", "text_embedding.2"),
    ("condition_embedder.time_proj", "time_projection.1"),
    ("condition_embedder.image_embedder.norm1", "img_emb.proj.0"),
    ("condition_embedder.image_embedder.ff.net.0.proj", "img_emb.proj.1"),
    ("condition_embedder.image_embedder.ff.net.2", "img_emb.proj.3"),
    ("condition_embedder.image_embedder.norm2", "img_emb.proj.4"),
    (".attn1.", ".self_attn."),
    (".attn2.", ".cross_attn."),
    (".to_out.0.", ".o."),
    (".to_q.", ".q."),
    (".to_k.", ".k."),
    (".to_v.", ".v."),
    (".add_k_proj.", ".k_img."),
    (".add_v_proj.", ".v_img."),
    (".norm_added_k.", ".norm_k_img."),
    ("ffn.net.0.proj", "ffn.0"),
    ("ffn.net.2", "ffn.2"),
    (".norm2.", ".norm3."),  # the cross-attention norm: norm2 in diffusers, norm3 in the original
    ("proj_out", "head.head"),
]


def original_key(key: str) -> str:
    if key == "scale_shift_table":
        return "head.modulation"
    key = re.sub(r"^blocks\.(\d+)\.scale_shift_table$", r"blocks.\1.modulation", key)
    for ours, theirs in TO_ORIGINAL:
        key = key.replace(ours, theirs)
    return key
