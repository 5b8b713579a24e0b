"""GGUF transformer files (the city96/Wan2.1-I2V-14B-480P-gguf layout): read, check, describe.

The file is memory-mapped and every tensor handed to diffusers is a view of that mapping (private,
copy-on-write pages): nothing is copied while loading, so the weights go from disk to their final
place (the GGUF linears keep them; offload pins or moves them from there). A background thread
reads the mapping's pages meanwhile (`prefetch`), so the disk streams while diffusers builds. diffusers' own
`load_gguf_checkpoint` copies every tensor out of the mapping first, which holds the file twice.

Keys are those of the original Wan code (`blocks.0.self_attn.q.weight`, `head.modulation`, ...);
diffusers' `convert_wan_transformer_to_diffusers` renames them. city96's files hold the 5-dim
`patch_embedding.weight` as a native 5-D F32 tensor; other converters store such tensors reshaped
with their shape under `comfy.gguf.orig_shape.<name>`, which is honoured too. Unquantized tensors
may be F32, F16 or BF16 (a converter keeps a bf16 source's dtype); all three become plain tensors.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import sys
import threading
from collections import Counter
from pathlib import Path

import torch

# Quantized types this app accepts (diffusers dequantizes each of them on the fly); the names are
# the GGML tensor types, files name their mixes (Q4_K_M = mostly Q4_K with some Q6_K tensors).
QUANT_TYPES = ("Q8_0", "Q6_K", "Q5_K", "Q5_0", "Q5_1", "Q4_K", "Q4_0", "Q4_1", "Q3_K", "Q2_K")
PLAIN_TYPES = ("F32", "F16", "BF16")  # kept as ordinary torch tensors (norms, biases, embeddings, head)
ORIG_SHAPE = "comfy.gguf.orig_shape."
MADV_POPULATE_READ = 22  # madvise(2), Linux >= 5.14: populate (prefault) page tables, reading the file
PREFETCH_CHUNK = 64 * 2**20  # bytes per madvise call, in file order
PREFETCH_SHARE = 0.8  # of MemAvailable: the most a load reads ahead


class WeightsFileError(RuntimeError):
    """A weights file that cannot be used: names the file and the problem."""

    def __init__(self, path: str | os.PathLike, problem: str):
        super().__init__(f"transformer file {str(path)!r}: {problem}")
        self.path, self.problem = str(path), problem


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Original-layout state dict of a GGUF file; quantized tensors as diffusers' GGUFParameter."""
    import gguf
    from diffusers.quantizers.gguf.utils import GGUFParameter

    reader = _open(path)
    shapes = _orig_shapes(reader)
    out: dict[str, torch.Tensor] = {}
    for t in reader.tensors:
        kind = t.tensor_type.name
        if kind not in QUANT_TYPES + PLAIN_TYPES:
            raise WeightsFileError(
                path, f"tensor {t.name!r} has quant type {kind}, which is not supported "
                f"(supported: {', '.join(QUANT_TYPES)}; plain {', '.join(PLAIN_TYPES)})"
            )  # fmt: skip
        data = torch.from_numpy(t.data)  # a view of the mapping, no copy
        if kind == "BF16":  # the reader hands BF16 rows as bytes: reinterpret them, still no copy
            data = data.view(torch.bfloat16)
        if kind in PLAIN_TYPES:
            out[t.name] = data.reshape(shapes[t.name]) if t.name in shapes else data
        else:
            out[t.name] = GGUFParameter(data, quant_type=gguf.GGMLQuantizationType[kind])
    if not out:
        raise WeightsFileError(path, "holds no tensors")
    prefetch(reader.data, min(t.data_offset for t in reader.tensors))
    return out


def prefetch(mapping, start: int) -> threading.Thread | None:
    """Read the mapped file from byte `start` on into the mapping's pages, in a background
    thread, in file order: the disk streams while diffusers builds the model (pure Python, one core),
    and no weight page faults later. `madvise(MADV_POPULATE_READ)` (Linux >= 5.14) maps each page,
    reading it from disk when it is not cached; older kernels get `MADV_WILLNEED` (read-ahead into the
    page cache). The pages are the file's clean page cache: reclaimable, never swap. At most 80 % of
    the memory available is read ahead (more would evict the file's own first pages before their
    use): the rest of a larger file comes page by page as it is used."""
    size = min(mapping.size - start, int(PREFETCH_SHARE * _available_bytes()))
    if size < PREFETCH_CHUNK or not sys.platform.startswith("linux"):
        return None
    base = mapping.ctypes.data
    thread = threading.Thread(target=_populate, args=(mapping, base, start, size), name="gguf-prefetch")
    thread.daemon = True  # never holds up an exit; the mapping stays referenced until it ends
    thread.start()
    return thread


def _populate(mapping, base: int, start: int, size: int) -> None:
    """madvise the mapping (kept referenced by this call while it runs) chunk by chunk."""
    libc = ctypes.CDLL(None, use_errno=True)  # a ctypes call releases the GIL while the kernel reads
    libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    page = mmap.PAGESIZE
    first = start // page * page
    advice = MADV_POPULATE_READ
    for offset in range(first, start + size, PREFETCH_CHUNK):
        length = min(PREFETCH_CHUNK, start + size - offset)
        if libc.madvise(base + offset, length, advice) != 0:
            if advice == mmap.MADV_WILLNEED:
                return  # not even read-ahead: the pages come with their first use
            advice = mmap.MADV_WILLNEED  # kernel without MADV_POPULATE_READ
            libc.madvise(base + offset, length, advice)


def _available_bytes() -> int:
    """MemAvailable from /proc/meminfo (page cache that can be reclaimed included); 0 elsewhere."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _open(path: str | os.PathLike):
    """GGUFReader on a private copy-on-write mapping; a cut-off file fails here, by name."""
    from gguf import GGUFReader

    if not Path(path).is_file():
        raise WeightsFileError(path, "no such file")
    try:
        reader = GGUFReader(path, "c")  # "c": writable views for torch, pages still shared with the file
    except (ValueError, IndexError, KeyError, OSError) as e:
        raise WeightsFileError(path, f"not a complete GGUF file (truncated or corrupt: {e})") from None
    size = os.path.getsize(path)
    for t in reader.tensors:
        if t.data_offset + t.n_bytes > size:
            raise WeightsFileError(path, f"truncated: tensor {t.name!r} ends past the end of the file")
    return reader


def _orig_shapes(reader) -> dict[str, tuple[int, ...]]:
    shapes = {}
    for name, field in reader.fields.items():
        if name.startswith(ORIG_SHAPE):
            shapes[name.removeprefix(ORIG_SHAPE)] = tuple(int(field.parts[i][0]) for i in field.data)
    return shapes


def logical_shape(tensor: torch.Tensor) -> tuple[int, ...]:
    """The weight's shape as the model sees it (GGUF tensors store bytes per row)."""
    return tuple(getattr(tensor, "quant_shape", tensor.shape))


def check_against(model_state: dict[str, torch.Tensor], checkpoint: dict[str, torch.Tensor], path) -> None:
    """Every model weight present with its shape; nothing unknown. Raises WeightsFileError."""
    missing = sorted(set(model_state) - set(checkpoint))
    unknown = sorted(set(checkpoint) - set(model_state))
    wrong = [
        f"{k} {logical_shape(checkpoint[k])} (model: {tuple(model_state[k].shape)})"
        for k in model_state
        if k in checkpoint and logical_shape(checkpoint[k]) != tuple(model_state[k].shape)
    ]
    problems = [
        f"{len(wrong)} tensors with shapes that do not match the model config: {', '.join(wrong[:3])}"
        if wrong else "",
        f"{len(missing)} weights missing: {', '.join(missing[:3])}" if missing else "",
        f"{len(unknown)} tensors the model does not have: {', '.join(unknown[:3])}" if unknown else "",
    ]  # fmt: skip
    if any(problems):
        hint = " (is it a Wan2.1 I2V 14B transformer file?)"
        raise WeightsFileError(path, "; ".join(p for p in problems if p) + hint)


def describe(module: torch.nn.Module) -> dict:
    """Quant types of a loaded transformer (count of tensors per type) and its weight bytes."""
    kinds: Counter[str] = Counter()
    total = 0
    for p in module.parameters():
        kind = getattr(p, "quant_type", None)
        kinds[kind.name if kind is not None else str(p.dtype).removeprefix("torch.")] += 1
        total += p.numel() * p.element_size()
    return dict(tensor_types=dict(kinds), weight_gb=round(total / 1e9, 3))


def main_type(module: torch.nn.Module) -> str:
    """The quant type holding most of the weight bytes, e.g. "Q4_K"; "" when not quantized."""
    by_bytes: Counter[str] = Counter()
    for p in module.parameters():
        kind = getattr(p, "quant_type", None)
        if kind is not None:
            by_bytes[kind.name] += p.numel()
    return by_bytes.most_common(1)[0][0] if by_bytes else ""
