"""Read and check one community LoRA file: safetensors only, its trainer layout, its fit to the model.

Nothing here applies a LoRA (model/loras.py does). The checks run on the file's header and on the
diffusers conversion of tensors that exist only on the meta device (the few `.alpha` scalars and the
small dropped deltas are read), so checking a 700 MB file costs milliseconds and no memory.

Layouts (all converted by diffusers' own `WanLoraLoaderMixin.lora_state_dict`, as
`load_lora_weights` does): "wan" (`diffusion_model.blocks.N.self_attn.q.lora_down.weight`, also
lora_A/lora_B names, `.alpha` or none, `.diff_b`, `.diff`; ComfyUI's `model.diffusion_model.` prefix
and bare `blocks.N...` names are given the prefix), "musubi" (musubi-tuner / kohya `lora_unet_*`; a
missing `.alpha` means alpha = rank, kohya's rule; a file without every projection in every block is
renamed to the wan layout, whose converter takes partial files) and "diffusers" (diffusers / peft /
ai-toolkit `transformer.blocks.N.attn1.to_q.lora_A.weight`; bare names get the prefix). Like
diffusers, norm `.diff` and modulation `diff_m` deltas are dropped: published files carry zeros.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from wan_demo.model.lora_verdict import LoraFileError, LoraInfo

MAX_HEADER_BYTES = 100 * 2**20  # safetensors' own limit
DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
          "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2}  # fmt: skip
PICKLE = "is a pickle checkpoint (torch.save); only .safetensors files are accepted (pickle can run code)"
DROPPED = re.compile(r"(norm[^.]*\.diff(_b)?|\.diff_m)$")  # deltas diffusers drops (published: zeros)
MUSUBI = re.compile(r"^lora_unet_blocks_(\d+)_(self_attn|cross_attn)_(q|k|v|o|k_img|v_img)\.|"
                    r"^lora_unet_blocks_(\d+)_ffn_(0|2)\.")  # fmt: skip


def read_header(path: Path) -> tuple[dict[str, tuple[torch.dtype, tuple[int, ...], int, int]], dict]:
    """{name: (dtype, shape, begin, end)} and the `__metadata__` of a safetensors file, checked against
    the file's size (a cut-off file is refused here, before anything reads its tensors)."""
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(9)  # u64 header length, then the JSON header's "{"
        length = int.from_bytes(head[:8], "little")
        if head[8:9] != b"{":
            pickled = head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")
            raise LoraFileError(
                PICKLE if pickled or head[:4] == b"PK\x03\x04" else "is not a safetensors file"
            )
        if length > min(MAX_HEADER_BYTES, size - 8):
            raise LoraFileError("is not a complete safetensors file (truncated or corrupt header)")
        f.seek(8)
        try:
            header = json.loads(f.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise LoraFileError("is not a safetensors file (its header is not JSON)") from None
    if not isinstance(header, dict):
        raise LoraFileError("is not a safetensors file (its header is not a JSON object)")
    metadata = header.pop("__metadata__", None) or {}
    data_bytes, tensors = size - 8 - length, {}
    for name, entry in header.items():
        try:
            dtype, shape, (begin, end) = DTYPES[entry["dtype"]], tuple(entry["shape"]), entry["data_offsets"]
            expected = dtype.itemsize * int(torch.Size(shape).numel())
        except (KeyError, TypeError, ValueError):
            raise LoraFileError(
                f"tensor {name[:80]!r} has an unsupported type or a malformed entry"
            ) from None
        if end - begin != expected or not 0 <= begin <= end:
            raise LoraFileError(f"tensor {name[:80]!r} has a size that does not match its shape (corrupt)")
        if end > data_bytes:
            raise LoraFileError(f"is truncated: tensor {name[:80]!r} ends past the end of the file")
        tensors[name] = (dtype, shape, begin, end)
    if not tensors:
        raise LoraFileError("holds no tensors")
    return tensors, metadata if isinstance(metadata, dict) else {}


def normalise(keys: list[str]) -> tuple[str, dict[str, str]]:
    """(layout, {key in the file: key diffusers' converter understands})."""
    if all(k.startswith("lora_unet_") for k in keys):
        return "musubi", {k: k for k in keys}
    renamed = {k: k.removeprefix("model.") for k in keys}
    if all(k.startswith("diffusion_model.") for k in renamed.values()):
        return "wan", renamed
    if all(k.startswith("transformer.") for k in keys):
        return "diffusers", {k: k for k in keys}
    if all(k.startswith("blocks.") or k.startswith(ORIGINAL_ROOTS) for k in keys):
        if any(".self_attn." in k or ".cross_attn." in k or ".ffn." in k for k in keys):
            return "wan", {k: "diffusion_model." + k for k in keys}
        return "diffusers", {k: "transformer." + k for k in keys}
    sample = next((k for k in keys if not k.startswith(("diffusion_model.", "transformer."))), keys[0])
    raise LoraFileError(f"has keys no Wan LoRA layout uses (e.g. {sample[:80]!r}): a LoRA for another model?")


ORIGINAL_ROOTS = ("head.", "time_projection.", "text_embedding.", "time_embedding.", "img_emb.")


def convert(state: dict[str, torch.Tensor], layout: str) -> dict[str, torch.Tensor]:
    """The diffusers/peft state dict (`transformer.<module>.lora_A.weight` ...) of a normalised file,
    through diffusers' own conversion (what load_lora_weights runs)."""
    from diffusers import WanImageToVideoPipeline

    if any("dora_scale" in k for k in state):
        raise LoraFileError("is a DoRA file (dora_scale keys): diffusers cannot apply DoRA to Wan")
    if layout == "musubi":
        state = _musubi_alphas(state)
        try:
            return WanImageToVideoPipeline.lora_state_dict(dict(state))
        except (KeyError, ValueError):  # not every projection in every block: the wan converter takes it
            state = _musubi_as_wan(state)
    try:
        return WanImageToVideoPipeline.lora_state_dict(dict(state))
    except (KeyError, ValueError, IndexError, RuntimeError) as e:
        why = f"{type(e).__name__}: {str(e)[:160]}"
        raise LoraFileError(f"diffusers' Wan LoRA conversion refused it ({why})") from None


def _musubi_alphas(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """kohya's rule: a module without `.alpha` has alpha = rank (scale 1); diffusers needs the key."""
    out = dict(state)
    for key, value in state.items():
        if key.endswith(".lora_down.weight"):
            alpha = key.removesuffix(".lora_down.weight") + ".alpha"
            out.setdefault(alpha, torch.tensor(float(value.shape[0])))
    return out


def _musubi_as_wan(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        found = MUSUBI.match(key)
        if not found:
            raise LoraFileError(f"has a key the musubi layout does not use: {key[:80]!r}")
        i, attn, proj, ffn_i, ffn = found.groups()
        module = f"blocks.{i}.{attn}.{proj}" if attn else f"blocks.{ffn_i}.ffn.{ffn}"
        out[f"diffusion_model.{module}{key[found.end() - 1 :]}"] = value
    return out


def meta_state(path: Path) -> tuple[str, dict[str, torch.Tensor], list[str]]:
    """(layout, the normalised state dict with tensors on the meta device except alphas and dropped
    deltas, which are read, the dropped keys that hold non-zero values)."""
    from safetensors import safe_open

    tensors, _ = read_header(path)
    layout, names = normalise(list(tensors))
    small = [k for k in tensors if k.endswith(".alpha") or DROPPED.search(k)]
    state = {
        names[k]: torch.empty(shape, dtype=dtype, device="meta") for k, (dtype, shape, *_) in tensors.items()
    }
    nonzero = []
    if small:
        with safe_open(str(path), framework="pt") as f:
            for key in small:
                value = f.get_tensor(key)
                state[names[key]] = value
                if DROPPED.search(key) and bool(value.ne(0).any()):
                    nonzero.append(key)
    return layout, state, nonzero


def load_state(path: Path) -> dict[str, torch.Tensor]:
    """The file's tensors converted for `load_lora_weights` (a checked file: see `inspect`)."""
    from safetensors.torch import load_file

    layout, names = normalise(list(read_header(path)[0]))
    return _complete_biases(convert({names[k]: v for k, v in load_file(str(path)).items()}, layout))


def _complete_biases(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """peft gives every layer of an adapter a bias once any layer has one (`diff_b`); a layer the file
    gives none would keep an uninitialised (meta) bias. A zero bias is what the file means there."""
    if not any(k.endswith(".lora_B.bias") for k in state):
        return state
    out = dict(state)
    for key, value in state.items():
        if key.endswith(".lora_B.weight"):
            out.setdefault(key.removesuffix("weight") + "bias", value.new_zeros(value.shape[0]))
    return out


def inspect(path: Path, shapes: dict[str, tuple[int, int]]) -> LoraInfo:
    """Check `path` against the model's linear layers `shapes` ({module: (out, in)}); LoraFileError
    says what does not fit. Every target must exist with its shape: a LoRA for Wan 1.3B, Wan2.2 5B or
    any model of other widths is refused, as is a file that matches nothing."""
    _check_metadata(read_header(path)[1])
    layout, state, nonzero = meta_state(path)
    converted = convert(state, layout)
    fits, missing, wrong, rank = set(), [], [], 0
    for key, value in converted.items():
        module, _, kind = key.removeprefix("transformer.").partition(".lora_")
        if kind not in ("A.weight", "B.weight", "B.bias"):
            raise LoraFileError(f"key {key[:80]!r} is not a LoRA weight after conversion")
        if module not in shapes:
            missing.append(module)
            continue
        out_f, in_f = shapes[module]
        got = tuple(value.shape)
        want = {"A.weight": (got[0] if got else -1, in_f), "B.weight": (out_f, got[-1] if got else -1),
                "B.bias": (out_f,)}[kind]  # fmt: skip
        if got != want:
            wrong.append(f"{module}.lora_{kind} is {'x'.join(map(str, got))}, the layer is {out_f}x{in_f}")
        fits.add(module)
        rank = max(rank, got[0]) if kind == "A.weight" else rank
    if not fits:
        raise LoraFileError(f"matches no layer of this model: nothing would be applied (its layers are "
                            f"like {missing[0][:60]!r}: a LoRA for another model?)")  # fmt: skip
    if wrong:
        raise LoraFileError(
            f"was made for a model of other widths ({len(wrong)} mismatches, e.g. {wrong[0]}): "
            "a LoRA for Wan 1.3B, Wan2.2 5B or another variant"
        )
    if missing:
        raise LoraFileError(f"targets {len(set(missing))} layers this model does not have (e.g. "
                            f"{missing[0][:60]!r}): a LoRA for another model?")  # fmt: skip
    t2v = not any(".add_k_proj." in k or ".add_v_proj." in k for k in converted)
    return LoraInfo(layout, len(fits), rank, t2v, _notes(state, nonzero, t2v))


# base models named in trainers' metadata (kohya ss_base_model_version, modelspec.architecture, ...)
BASE_KEYS = ("modelspec.architecture", "ss_base_model_version", "base_model", "ss_base_model", "baseModel")
OTHER_MODELS = ("wan2.2", "wan2_2", "wan22", "1.3b", "1_3b", "ti2v", "5b", "flux", "hunyuan", "ltx",
                "stable-diffusion", "sdxl", "qwen")  # fmt: skip


def _check_metadata(metadata: dict) -> None:
    """A file whose metadata names another base model is refused even when its shapes fit (Wan2.2
    A14B LoRAs have Wan2.1 14B's widths)."""
    for key in BASE_KEYS:
        value = str(metadata.get(key, "")).lower()
        other = next((name for name in OTHER_MODELS if name in value), None)
        if other:
            raise LoraFileError(f"was trained for another model (its metadata {key} = {value[:60]!r})")


def _notes(state: dict, nonzero: list[str], t2v: bool) -> tuple[str, ...]:
    dropped = [k for k in state if DROPPED.search(k)]
    notes = []
    if dropped and not nonzero:
        notes.append(f"{len(dropped)} zero norm/modulation deltas dropped (as diffusers does)")
    elif nonzero:
        notes.append(f"{len(nonzero)} non-zero norm/modulation deltas are NOT applied (diffusers cannot "
                     f"apply them), e.g. {nonzero[0][:60]}")  # fmt: skip
    if t2v:
        notes.append("no image cross-attention keys (a T2V LoRA): applied to the text path only")
    return tuple(notes)


def linear_shapes(config: dict) -> dict[str, tuple[int, int]]:
    """{module name: (out_features, in_features)} of every Linear of a WanTransformer3DModel with
    `config`, built on the meta device (no memory). Cached per config."""
    key = json.dumps({k: v for k, v in dict(config).items() if not k.startswith("_")}, sort_keys=True,
                     default=str)  # fmt: skip
    if key not in _SHAPES:
        from accelerate import init_empty_weights
        from diffusers import WanTransformer3DModel

        with init_empty_weights():
            model = WanTransformer3DModel.from_config(dict(config))
        _SHAPES[key] = {
            n: (m.out_features, m.in_features)
            for n, m in model.named_modules()
            if isinstance(m, torch.nn.Linear)
        }
    return _SHAPES[key]


_SHAPES: dict[str, dict[str, tuple[int, int]]] = {}
