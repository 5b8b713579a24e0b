"""Write random LoRAs for a Wan transformer in the key layouts of the PUBLISHED files, for tests and
benches; one writer per layout. Each returns a `LoraFile`: the path and, per targeted diffusers
module, the delta that a scale-1.0 application must add (weight: (out, in), bias: (out,)), computed
here from the tensors written, never through diffusers.

- `write_wan`: the original Wan / ComfyUI layout, `diffusion_model.blocks.N.self_attn.q...` with
  `lora_down`/`lora_up` (or `lora_A`/`lora_B`), with or without `.alpha`, `.diff_b` bias deltas,
  norm `.diff` deltas (incl. `cross_attn.norm_k_img`) and `diff_m` modulation deltas; the image
  cross-attention `k_img`/`v_img`; optionally every non-block family diffusers' converter handles
  (`time_projection.1`, `head.head`, `text_embedding.0/2`, `time_embedding.0/2`, `img_emb.proj.1/3`).
- `write_lightx2v`: Kijai's lightx2v_I2V_14B_480p_cfg_step_distill_rank64_bf16 layout (FIELD-NOTES):
  lora_down/lora_up, diff_b, zero norm diffs incl. norm_k_img, diff_m, and NO `.alpha` keys.
- `write_wan_diff`: full-weight `.diff` deltas: `head.head.diff` (+ `diff_b`), which diffusers turns
  into a LoRA with an identity up matrix, and zero norm diffs.
- `write_musubi`: musubi-tuner / kohya `lora_unet_blocks_N_self_attn_q.lora_down.weight` + `.alpha`.
- `write_diffusers`: diffusers / ai-toolkit `transformer.blocks.N.attn1.to_q.lora_A.weight` /
  `lora_B.weight` (optional `lora_B.bias`), no alpha (peft's default alpha = rank).
- `write_peft`: a peft adapter saved by `save_lora_weights` (diffusers layout with its metadata).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from bench.wan_files import original_key

# block linears in the original names; k_img / v_img are the image cross-attention (I2V only)
SELF_ATTN = ["self_attn.q", "self_attn.k", "self_attn.v", "self_attn.o"]
CROSS_ATTN = ["cross_attn.q", "cross_attn.k", "cross_attn.v", "cross_attn.o"]
IMAGE_ATTN = ["cross_attn.k_img", "cross_attn.v_img"]
FFN = ["ffn.0", "ffn.2"]
LINEARS = SELF_ATTN + CROSS_ATTN + IMAGE_ATTN + FFN
NORMS = {"self_attn.norm_q": "attn1.norm_q", "self_attn.norm_k": "attn1.norm_k",
         "cross_attn.norm_q": "attn2.norm_q", "cross_attn.norm_k": "attn2.norm_k",
         "cross_attn.norm_k_img": "attn2.norm_added_k", "norm3": "norm2"}  # fmt: skip
# non-block linears diffusers' converter maps (original name -> diffusers module)
EXTRAS = {
    "time_projection.1": "condition_embedder.time_proj",
    "head.head": "proj_out",
    "text_embedding.0": "condition_embedder.text_embedder.linear_1",
    "text_embedding.2": "condition_embedder.text_embedder.linear_2",
    "time_embedding.0": "condition_embedder.time_embedder.linear_1",
    "time_embedding.2": "condition_embedder.time_embedder.linear_2",
    "img_emb.proj.1": "condition_embedder.image_embedder.ff.net.0.proj",
    "img_emb.proj.3": "condition_embedder.image_embedder.ff.net.2",
}
TO_DIFFUSERS = {"self_attn": "attn1", "cross_attn": "attn2", "q": "to_q", "k": "to_k", "v": "to_v",
                "o": "to_out.0", "k_img": "add_k_proj", "v_img": "add_v_proj"}  # fmt: skip


@dataclass
class Delta:
    weight: torch.Tensor | None = None  # float64 (out, in)
    bias: torch.Tensor | None = None  # float64 (out,)


@dataclass
class LoraFile:
    path: Path
    layout: str
    deltas: dict[str, Delta] = field(default_factory=dict)  # diffusers module name -> delta at scale 1
    ignored: list[str] = field(default_factory=list)  # keys diffusers drops (norm / modulation deltas)


class _Writer:
    """Random tensors of one file, with their deltas recorded as they are made."""

    def __init__(self, transformer: torch.nn.Module, seed: int, size: float = 0.1, record: bool = True):
        self.record = record  # False: no deltas (real-width benches: a 5120x13824 float64 delta is 566 MB)
        self.modules = dict(transformer.named_modules())
        self.by_original = {original_key(k + "."): k for k in self.modules}  # "blocks.0.self_attn.q." -> ours
        self.gen, self.size = torch.Generator().manual_seed(seed), size
        self.tensors: dict[str, torch.Tensor] = {}
        self.deltas: dict[str, Delta] = {}
        self.ignored: list[str] = []

    def randn(self, *shape: int, size: float | None = None) -> torch.Tensor:
        # bf16 first: the file holds bf16, the recorded delta must be computed from what it holds
        return (torch.randn(*shape, generator=self.gen) * (size or self.size)).to(torch.bfloat16)

    def module(self, original: str) -> tuple[str, torch.nn.Module]:
        name = self.by_original.get(original + ".") or EXTRAS[original]
        return name, self.modules[name]

    def lora(self, key: str, original: str, rank: int, alpha: float | None, down="lora_down", up="lora_up"):
        name, layer = self.module(original)
        a, b = self.randn(rank, layer.in_features), self.randn(layer.out_features, rank)
        self.tensors |= {f"{key}.{down}.weight": a, f"{key}.{up}.weight": b}
        if alpha is not None:
            self.tensors[f"{key}.alpha"] = torch.tensor(float(alpha))
        scale = (alpha / rank) if alpha is not None else 1.0
        if self.record:
            self.deltas.setdefault(name, Delta()).weight = scale * (b.double() @ a.double())
        return name, layer

    def bias(self, key: str, name: str, layer: torch.nn.Module) -> None:
        self.tensors[key] = self.randn(layer.out_features, size=0.01)
        self.deltas.setdefault(name, Delta()).bias = self.tensors[key].double()

    def zeros(self, key: str, like: torch.Tensor) -> None:
        self.tensors[key] = torch.zeros_like(like, dtype=torch.bfloat16)
        self.ignored.append(key)

    def save(self, path: Path, layout: str) -> LoraFile:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in self.tensors.items()}, str(path))
        return LoraFile(Path(path), layout, self.deltas, self.ignored)


def write_wan(
    transformer: torch.nn.Module, path: Path, rank: int = 4, alpha: float | None = 2.0, *,
    names: tuple[str, str] = ("lora_down", "lora_up"), diff_b: bool = True, image_attn: bool = True,
    norm_diffs: bool = True, diff_m: bool = True, extras: bool = False, seed: int = 1, record: bool = True,
) -> LoraFile:  # fmt: skip
    """The original Wan layout (`diffusion_model.` prefix); see the module docstring."""
    w = _Writer(transformer, seed, record=record)
    linears = LINEARS if image_attn else [n for n in LINEARS if n not in IMAGE_ATTN]
    for i in range(len(transformer.blocks)):
        for original in linears:
            key = f"diffusion_model.blocks.{i}.{original}"
            name, layer = w.lora(key, f"blocks.{i}.{original}", rank, alpha, *names)
            if diff_b:
                w.bias(f"{key}.diff_b", name, layer)
        if norm_diffs:  # published files carry these as zeros; diffusers drops them
            for original, ours in NORMS.items():
                if image_attn or "img" not in original:
                    norm = transformer.blocks[i].get_submodule(ours)
                    w.zeros(f"diffusion_model.blocks.{i}.{original}.diff", norm.weight)
        if diff_m:
            w.zeros(f"diffusion_model.blocks.{i}.diff_m", transformer.blocks[i].scale_shift_table)
    if extras:
        for original in EXTRAS:
            key = f"diffusion_model.{original}"
            name, layer = w.lora(key, original, rank, None, *names)  # diffusers: no alpha for these
            w.bias(f"{key}.diff_b", name, layer)
    return w.save(path, "wan")


def write_lightx2v(
    transformer: torch.nn.Module, path: Path, rank: int = 4, seed: int = 1, record: bool = True
) -> LoraFile:
    """The published lightx2v distill LoRA's keys: no `.alpha`, diff_b, zero norm diffs, diff_m."""
    lora = write_wan(transformer, path, rank, alpha=None, seed=seed, record=record)
    lora.layout = "wan (lightx2v)"
    return lora


def write_wan_diff(transformer: torch.nn.Module, path: Path, seed: int = 1) -> LoraFile:
    """Full-weight deltas: `head.head.diff` + `head.head.diff_b` (diffusers: lora_A = diff, lora_B =
    identity) beside zero norm diffs; plus one block LoRA so the file has the usual block keys."""
    w = _Writer(transformer, seed)
    name, layer = w.lora("diffusion_model.blocks.0.self_attn.q", "blocks.0.self_attn.q", 4, None)
    name, head = w.module("head.head")
    diff = w.randn(head.out_features, head.in_features)
    w.tensors["diffusion_model.head.head.diff"] = diff
    w.deltas[name] = Delta(weight=diff.double())
    w.bias("diffusion_model.head.head.diff_b", name, head)
    for i in range(len(transformer.blocks)):
        for original, ours in NORMS.items():
            w.zeros(
                f"diffusion_model.blocks.{i}.{original}.diff",
                transformer.blocks[i].get_submodule(ours).weight,
            )
    return w.save(path, "wan (.diff)")


def write_musubi(
    transformer: torch.nn.Module, path: Path, rank: int = 4, alpha: float | None = 1.0, seed: int = 1,
    image_attn: bool = True, record: bool = True,
) -> LoraFile:  # fmt: skip
    """musubi-tuner / kohya: `lora_unet_blocks_0_self_attn_q.lora_down.weight`, `.alpha` (kohya's
    convention: a missing alpha means alpha = rank, i.e. scale 1)."""
    w = _Writer(transformer, seed, record=record)
    linears = LINEARS if image_attn else [n for n in LINEARS if n not in IMAGE_ATTN]
    for i in range(len(transformer.blocks)):
        for original in linears:
            key = f"lora_unet_blocks_{i}_{original.replace('.', '_')}"
            w.lora(key, f"blocks.{i}.{original}", rank, alpha)
    return w.save(path, "musubi")


def write_diffusers(
    transformer: torch.nn.Module, path: Path, rank: int = 4, seed: int = 1, bias: bool = False,
    targets: tuple[str, ...] = ("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0", "attn2.to_q",
                                "attn2.to_k", "attn2.to_v", "attn2.to_out.0", "attn2.add_k_proj",
                                "attn2.add_v_proj", "ffn.net.0.proj", "ffn.net.2"),
    prefix: str = "transformer.", record: bool = True,
) -> LoraFile:  # fmt: skip
    """diffusers / ai-toolkit: `transformer.blocks.0.attn1.to_q.lora_A.weight` (r, in), `lora_B.weight`
    (out, r) and, with `bias`, `lora_B.bias`; no alpha (scale 1)."""
    w = _Writer(transformer, seed, record=record)
    for i in range(len(transformer.blocks)):
        for target in targets:
            name = f"blocks.{i}.{target}"
            layer = w.modules[name]
            a, b = w.randn(rank, layer.in_features), w.randn(layer.out_features, rank)
            w.tensors |= {f"{prefix}{name}.lora_A.weight": a, f"{prefix}{name}.lora_B.weight": b}
            if record:
                w.deltas[name] = Delta(weight=b.double() @ a.double())
            if bias:
                w.bias(f"{prefix}{name}.lora_B.bias", name, layer)
    return w.save(path, "diffusers")


def write_peft(transformer: torch.nn.Module, folder: Path, targets: list[str], name: str = "fast",
               seed: int = 1, rank: int = 4) -> Path:  # fmt: skip
    """A random peft adapter on `targets` (module name suffixes), saved by diffusers' save_lora_weights
    as `<folder>/<name>.safetensors` (diffusers layout + adapter metadata). `transformer` gets the
    adapter added: pass a copy you can spare."""
    from diffusers import WanImageToVideoPipeline
    from peft import LoraConfig, get_peft_model_state_dict

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        # init_lora_weights=False: random A and B (peft's default B = 0 would be a no-op LoRA)
        config = LoraConfig(r=rank, lora_alpha=rank, target_modules=targets, init_lora_weights=False)
        transformer.add_adapter(config)
    WanImageToVideoPipeline.save_lora_weights(
        folder, transformer_lora_layers=get_peft_model_state_dict(transformer),
        weight_name=f"{name}.safetensors",
    )  # fmt: skip
    return Path(folder) / f"{name}.safetensors"


def to_diffusers_name(original: str) -> str:
    """`blocks.0.cross_attn.k_img` -> `blocks.0.attn2.add_k_proj` (block linears only)."""
    parts = original.split(".")
    if parts[2] == "ffn":
        return f"blocks.{parts[1]}.ffn.{'net.0.proj' if parts[3] == '0' else 'net.2'}"
    return f"blocks.{parts[1]}.{TO_DIFFUSERS[parts[2]]}.{TO_DIFFUSERS[parts[3]]}"
