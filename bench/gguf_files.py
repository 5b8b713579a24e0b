"""GGUF transformer files in the byte layout of city96/Wan2.1-I2V-14B-480P-gguf, at any size.

Which type each tensor gets (city96's rules, with sources) lives in wan_demo/model/gguf_layout.py;
this module writes the bytes. `values="random"` fills quantized tensors with random codes under fixed,
finite scales (zero mean, std ~0.02): the layout and every byte count are those of a real file, the
weights are noise. Written tensor by tensor (`GGUFWriter.write_tensor_data`): memory stays that of one
tensor, so a 40-block file of 8-18 GB is written on a 24 GB machine in about a minute.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from wan_demo.model import gguf_layout

STD = 0.02  # std of the random weights (a typical init scale: keeps 40 blocks finite)


def tensor_types(shapes: dict[str, tuple[int, ...]], ftype: str, plain: str = "F32") -> dict[str, str]:
    return gguf_layout.tensor_types(shapes, ftype, plain)


def nbytes(shape: tuple[int, ...], kind: str) -> int:
    return gguf_layout.nbytes(shape, kind)


def file_bytes(shapes: dict[str, tuple[int, ...]], ftype: str) -> int:
    """Tensor bytes of such a file (the header adds a few hundred KB)."""
    return sum(size for *_rest, size in gguf_layout.file_tensors(shapes, ftype))


def real_shapes() -> dict[str, tuple[int, ...]]:
    """Original-layout names and shapes of the real I2V 14B transformer (meta device, no memory)."""
    from accelerate import init_empty_weights
    from diffusers import WanTransformer3DModel

    from bench.wan_files import original_key
    from wan_demo.model.memory.estimate import TRANSFORMER_CONFIG

    with init_empty_weights():
        model = WanTransformer3DModel(**TRANSFORMER_CONFIG)
    return {original_key(k): tuple(v.shape) for k, v in model.state_dict().items()}


# --- random blocks with fixed, finite scales: value = scale * (code - offset) --------------------
def _f16(x: float) -> np.ndarray:
    return np.array([x], dtype=np.float16).view(np.uint8)


def _k_scales(value: int) -> np.ndarray:
    """Q4_K/Q5_K 12-byte scales with every 6-bit scale and min equal to `value` (< 16)."""
    return np.array([value] * 8 + [value | value << 4] * 4, dtype=np.uint8)


def random_blocks(kind: str, n_blocks: int, rng: np.random.Generator) -> np.ndarray:
    """(n_blocks, type_size) uint8: random codes; scales set so the weights have mean ~0, std ~STD."""
    import gguf

    size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[kind]][1]
    b = np.frombuffer(rng.bytes(n_blocks * size), dtype=np.uint8).reshape(n_blocks, size).copy()
    # code std per type (uniform codes): Q8_0 73.9, 4-bit 4.61, 5-bit 9.23, Q6_K 18.5, Q3_K 2.29, Q2_K 1.12
    if kind == "Q8_0":
        b[:, :2] = _f16(STD / 73.9)
    elif kind in ("Q4_0", "Q5_0"):
        b[:, :2] = _f16(STD / (4.61 if kind == "Q4_0" else 9.23))
    elif kind in ("Q4_1", "Q5_1"):
        d = STD / (4.61 if kind == "Q4_1" else 9.23)
        b[:, :2], b[:, 2:4] = _f16(d), _f16(-d * (7.5 if kind == "Q4_1" else 15.5))
    elif kind in ("Q4_K", "Q5_K"):  # d, dmin, scales[12], ...: value = d*sc*q - dmin*m, sc = m = 1
        d = STD / (4.61 if kind == "Q4_K" else 9.23)
        b[:, :2], b[:, 2:4] = _f16(d), _f16(d * (7.5 if kind == "Q4_K" else 15.5))
        b[:, 4:16] = _k_scales(1)
    elif kind == "Q6_K":  # ql[128], qh[64], scales[16] (int8), d
        b[:, 192:208], b[:, 208:210] = 1, _f16(STD / 18.5)
    elif kind == "Q3_K":  # hmask[32], qs[64], scales[12] (6-bit, offset 32), d
        b[:, 96:104], b[:, 104:108], b[:, 108:110] = 0x11, 0xAA, _f16(STD / 2.29)  # every scale 33
    elif kind == "Q2_K":  # scales[16] (4-bit scale | 4-bit min), qs[64], d, dmin
        d = STD / 1.12
        b[:, :16], b[:, 80:82], b[:, 82:84] = 0x11, _f16(d), _f16(1.5 * d)
    else:
        raise ValueError(f"no random block layout for {kind}")
    return b


def plain_values(name: str, shape: tuple[int, ...], kind: str, rng: np.random.Generator) -> np.ndarray:
    """An unquantized tensor: norm weights 1, everything else N(0, STD), in its file type."""
    if "norm" in name and name.endswith(".weight") and len(shape) == 1:
        data = np.ones(shape, dtype=np.float32)
    else:
        data = (rng.standard_normal(shape, dtype=np.float32) * STD).astype(np.float32)
    if kind == "F32":
        return data
    if kind == "F16":
        return data.astype(np.float16)
    return (data.view(np.uint32) >> 16).astype(np.uint16).view(np.uint8).reshape(*shape[:-1], -1)  # BF16


def encode(name: str, shape, kind: str, rng, weights: np.ndarray | None) -> np.ndarray:
    """The bytes of one tensor: real `weights` quantized by gguf-py when given, else random."""
    import gguf

    qtype = gguf.GGMLQuantizationType[kind]
    if weights is not None:
        data = np.asarray(weights, dtype=np.float32).reshape(shape)
        if kind == "BF16":
            return (data.view(np.uint32) >> 16).astype(np.uint16).view(np.uint8).reshape(*shape[:-1], -1)
        return (
            gguf.quants.quantize(data, qtype)
            if kind not in ("F32", "F16")
            else data.astype(np.float32 if kind == "F32" else np.float16)
        )
    if kind in ("F32", "F16", "BF16"):
        return plain_values(name, shape, kind, rng)
    block = gguf.GGML_QUANT_SIZES[qtype][0]
    n_blocks = int(np.prod(shape)) // block
    return random_blocks(kind, n_blocks, rng).reshape(*shape[:-1], -1)


def write(
    path: Path, shapes: dict[str, tuple[int, ...]], ftype: str, seed: int = 0,
    weights: dict[str, np.ndarray] | None = None, plain: str = "F32",
) -> Path:  # fmt: skip
    """Write a GGUF file of `ftype` in city96's layout, one tensor at a time.

    `weights` (original names -> float arrays) quantizes real values with gguf-py where it can
    (Q8_0, Q5_x, Q4_0/1, F16, BF16, F32); the K-quants and every tensor without weights get random
    codes. `plain`: the type of the never-quantized 2-D tensors (F32 as published; BF16 / F16 as
    convert.py would write them from a bf16 / fp16 source)."""
    import gguf

    types = tensor_types(shapes, ftype, plain)
    if weights is not None and any(t.endswith("_K") for t in types.values()):
        raise ValueError(f"{ftype}: gguf-py cannot quantize K types; write random values instead")
    writer = gguf.GGUFWriter(str(path), arch="wan")
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    for name, shape in shapes.items():
        kind = types[name]
        qtype = gguf.GGMLQuantizationType[kind]
        item = {"F32": np.float32, "F16": np.float16}.get(kind, np.uint8)
        byte_shape = shape if item is not np.uint8 else gguf.quant_shape_to_byte_shape(shape, qtype)
        raw = None if item is not np.uint8 else qtype
        writer.add_tensor_info(name, byte_shape, np.dtype(item), nbytes(shape, kind), raw_dtype=raw)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    rng = np.random.default_rng(seed)
    for name, shape in shapes.items():
        real = weights.get(name) if weights is not None else None
        writer.write_tensor_data(np.ascontiguousarray(encode(name, shape, types[name], rng, real)))
    writer.close()
    return path


def write_files(folder: Path, shapes: dict, ftypes: Iterable[str], seed: int = 0) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return {f: write(folder / f"wan2.1-i2v-14b-480p-{f}.gguf", shapes, f, seed) for f in ftypes}
