"""Component sizes from the real tensor list: weights, repeated blocks, leaves, and the pinned copies
group offload makes of them.

Every figure is a sum over the component's parameters (shared ones once), as stored: the load dtype,
fp8 for the layers layerwise casting stores in float8 (`castable`), a GGUF file's packed bytes for a
quantized transformer. Pinned copies: torch's caching host allocator rounds every pinned allocation
up to a power of two (c10::llvm::PowerOf2Ceil in ATen/core/CachingHostAllocator.h, torch 2.13, with
its default pinned_max_round_threshold), so a 141.6 MB bf16 ffn weight pins 268 MB.
All sizes are in GB (1e9 bytes).
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass, field, replace

GB = 1e9
MAPPED_WHEN_LOADED = ("image_encoder", "vae")  # loaded in their files' dtype: views of the mapping


def pinned_bytes(nbytes: int) -> int:
    """Bytes torch's pinned host allocator takes for one allocation of `nbytes` (power of two)."""
    return 1 << (nbytes - 1).bit_length() if nbytes > 0 else 0


@dataclass(frozen=True)
class Tensor:
    numel: int  # logical weights
    nbytes: int  # as loaded (load dtype) or as stored in a GGUF file
    castable: bool = False  # layerwise casting stores it in fp8 (1 byte per weight)
    block: int = -1  # index in the repeated block list; -1 outside it
    leaf: int = 0  # the module that owns it (leaf-level offload groups)
    mapped: bool = False  # a view of a GGUF file mapping (quantized tensors: model/gguf.py)
    alias: bool = False  # a tied weight seen again in another module: leaf-level offload pins it again

    def stored(self, fp8: bool) -> int:
        return self.numel if fp8 and self.castable else self.nbytes


@dataclass(frozen=True)
class ComponentSize:
    name: str
    tensors: tuple[Tensor, ...]
    n_blocks: int = 0
    _sums: dict = field(default_factory=dict, compare=False, repr=False)  # memo per (fp8, what)

    def _sum(self, fp8: bool, what: str) -> float:
        key = (fp8, what)
        if key not in self._sums:
            self._sums[key] = _aggregate(self.tensors, fp8, what) / GB
        return self._sums[key]

    @property
    def params(self) -> int:
        return sum(t.numel for t in self.tensors if not t.alias)

    @property
    def load_bytes(self) -> float:
        """Bytes per weight as loaded, averaged over the component."""
        return sum(t.nbytes for t in self.tensors if not t.alias) / max(1, self.params)

    @property
    def largest_leaf_params(self) -> int:
        leaves: dict[int, int] = {}
        for t in self.tensors:
            if t.alias:
                continue
            leaves[t.leaf] = leaves.get(t.leaf, 0) + t.numel
        return max(leaves.values(), default=0)

    def weights_gb(self, fp8: bool = False) -> float:
        return self._sum(fp8, "all")

    def block_gb(self, fp8: bool = False) -> float:
        return self._sum(fp8, "block")

    def non_block_gb(self, fp8: bool = False) -> float:
        return self._sum(fp8, "non_block")

    def leaf_gb(self, fp8: bool = False) -> float:
        return self._sum(fp8, "leaf")

    def mapped_gb(self) -> float:
        """Bytes that are views of their file's mapping (file pages, not process memory)."""
        return sum(t.nbytes for t in self.tensors if t.mapped and not t.alias) / GB

    def pinned_gb(self, fp8: bool = False, level: str = "block") -> float:
        """A pinned copy of every tensor, each rounded up to a power of two. Leaf-level offload makes
        a group per module, so a weight two modules share (T5's tied embedding) is pinned twice."""
        return self._sum(fp8, "pinned_leaves" if level == "leaf" else "pinned")

    def in_flight_pinned_gb(self, level: str, fp8: bool = False) -> float:
        """Lazy pinning's copies while it runs: the two largest groups (one running, one prefetched)."""
        return self._sum(fp8, f"in_flight_{level}")

    def group_pinned_gb(self, level: str, fp8: bool = False) -> float:
        """The largest offload group's pinned copy: a block or the non-block rest (block_level), or a
        leaf (leaf_level)."""
        return self._sum(fp8, "pinned_block" if level == "block" else "pinned_leaf")


def _aggregate(tensors: tuple[Tensor, ...], fp8: bool, what: str) -> int:
    size = pinned_bytes if what.startswith(("pinned", "in_flight")) else (lambda n: n)
    if what not in ("pinned_leaves", "pinned_leaf", "in_flight_leaf"):
        tensors = tuple(t for t in tensors if not t.alias)
    if what in ("all", "pinned", "pinned_leaves"):
        return sum(size(t.stored(fp8)) for t in tensors)
    if what == "non_block":
        return sum(t.stored(fp8) for t in tensors if t.block < 0)
    if what.startswith("in_flight_"):
        level = what.removeprefix("in_flight_")
        sizes = sorted(_groups(tensors, fp8, level != "block", pinned_bytes).values(), reverse=True)
        return sum(sizes[:2])
    groups: dict[int, int] = {}
    by_block = what in ("block", "pinned_block")
    for t in tensors:
        if what == "block" and t.block < 0:  # pinned: the non-block group (-1) is a group in flight too
            continue
        key = t.block if by_block else t.leaf
        groups[key] = groups.get(key, 0) + size(t.stored(fp8))
    return max(groups.values(), default=0)


def _groups(tensors: tuple[Tensor, ...], fp8: bool, by_leaf: bool, size) -> dict[int, int]:
    """Pinned bytes per offload group: per leaf module, or per block with the non-block rest as -1."""
    groups: dict[int, int] = {}
    for t in tensors:
        key = t.leaf if by_leaf else t.block
        groups[key] = groups.get(key, 0) + size(t.stored(fp8))
    return groups


def size_of(name: str, module, load_bytes: int | None = None, skip: tuple[str, ...] = ()) -> ComponentSize:
    """The tensor list of one module: each parameter with its block and the module that holds it; a
    weight tied to a second module is listed again there as an alias. `load_bytes` overrides the
    bytes per weight (meta-device modules); `skip`: fp8 skip patterns."""
    castable = set(fp8_castable_names(module, skip))
    block_list = _block_list_name(module)
    seen: set[int] = set()
    tensors = []
    for leaf, (owner, m) in enumerate(module.named_modules()):
        for pname, p in m.named_parameters(recurse=False):
            numel = _logical_numel(p)
            nbytes = numel * load_bytes if load_bytes else p.numel() * p.element_size()
            full = f"{owner}.{pname}" if owner else pname
            match = re.match(rf"{re.escape(block_list)}\.(\d+)\.", full) if block_list else None
            tensors.append(Tensor(numel, int(nbytes), owner in castable, int(match[1]) if match else -1,
                                  leaf, alias=id(p) in seen))  # fmt: skip
            seen.add(id(p))
    n_blocks = len(module.get_submodule(block_list)) if block_list else 0
    return ComponentSize(name, tuple(tensors), n_blocks)


def gguf_size(tensors: list[tuple[str, tuple[int, ...], str, int]], plain_bytes: int = 2) -> ComponentSize:
    """A GGUF transformer as loaded from its (original name, shape, type, bytes) list (gguf_layout):
    quantized tensors stay views of the file; diffusers converts the plain ones (F32/F16/BF16) to
    the compute dtype (`plain_bytes` per weight), which makes them copies in process memory."""
    leaves: dict[str, int] = {}
    out = []
    for name, shape, kind, nbytes in tensors:
        owner, numel = name.rpartition(".")[0], math.prod(shape)
        match = re.match(r"blocks\.(\d+)\.", name)
        plain = kind in ("F32", "F16", "BF16")
        block = int(match[1]) if match else -1
        stored = numel * plain_bytes if plain else nbytes
        out.append(Tensor(numel, stored, False, block, leaves.setdefault(owner, len(leaves)), not plain))
    return ComponentSize("transformer", tuple(out), len({t.block for t in out if t.block >= 0}))


def _logical_numel(p) -> int:
    shape = getattr(p, "quant_shape", None)  # diffusers' GGUFParameter: the unpacked weight's shape
    return int(math.prod(shape)) if shape is not None else p.numel()


def fp8_castable_names(module, skip_patterns: tuple[str, ...]) -> list[str]:
    """Modules diffusers' layerwise casting would store in fp8: Linear/Conv layers whose name
    matches no skip pattern (same rule as diffusers.hooks.apply_layerwise_casting)."""
    from diffusers.hooks._common import _GO_LC_SUPPORTED_PYTORCH_LAYERS as CASTABLE

    skipped: list[str] = []
    out = []
    for name, m in module.named_modules():
        if any(name.startswith(p + ".") for p in skipped):
            continue
        if name and any(re.search(pat, name) for pat in skip_patterns):
            skipped.append(name)
        elif isinstance(m, CASTABLE):
            out.append(name)
    return out


def _block_list_name(module) -> str:
    """The name of the longest ModuleList inside `module`: transformer blocks, T5 blocks, CLIP layers."""
    import torch

    lists = [(n, m) for n, m in module.named_modules() if isinstance(m, torch.nn.ModuleList)]
    return max(lists, key=lambda nm: len(nm[1]))[0] if lists else ""


@functools.lru_cache(maxsize=1)
def real_sizes() -> dict[str, ComponentSize]:
    """Instantiate the four real components on the meta device (no memory) and count them."""
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection, UMT5Config, UMT5EncoderModel

    from wan_demo.model.memory import estimate as e

    with init_empty_weights():
        modules = {
            "transformer": WanTransformer3DModel(**e.TRANSFORMER_CONFIG),
            "text_encoder": UMT5EncoderModel(UMT5Config(**e.UMT5_CONFIG)),
            "image_encoder": CLIPVisionModelWithProjection(CLIPVisionConfig(**e.CLIP_CONFIG)),
            "vae": AutoencoderKLWan(**e.VAE_CONFIG),
        }
    modules["text_encoder"].tie_weights()  # the checkpoint ties encoder.embed_tokens to shared
    sizes = {n: size_of(n, m, e.LOAD_BYTES[n], e.FP8_SKIP_PATTERNS.get(n, ())) for n, m in modules.items()}
    # CLIP and the VAE load in the dtype their files hold (fp32): safetensors hands out views of the
    # file mapping, no copy (bench/rehearsal.py measured their weights as file pages, not anonymous)
    for name in MAPPED_WHEN_LOADED:
        s = sizes[name]
        sizes[name] = ComponentSize(name, tuple(replace(t, mapped=True) for t in s.tensors), s.n_blocks)
    return sizes


def sizes_of_pipe(pipe) -> dict[str, ComponentSize]:
    """Sizes of a loaded pipeline's components (exact; same numbers as real_sizes for the real model)."""
    from wan_demo.model.memory.estimate import FP8_SKIP_PATTERNS

    names = ("transformer", "text_encoder", "image_encoder", "vae")
    return {
        n: size_of(n, getattr(pipe, n), skip=FP8_SKIP_PATTERNS.get(n, ()))
        for n in names
        if getattr(pipe, n, None) is not None
    }


@functools.lru_cache(maxsize=1)
def real_transformer_shapes() -> dict[str, tuple[int, ...]]:
    """Original-layout names (as GGUF files hold them) and shapes of the real I2V 14B transformer."""
    from accelerate import init_empty_weights
    from diffusers import WanTransformer3DModel

    from wan_demo.model.gguf_layout import original_key
    from wan_demo.model.memory.estimate import TRANSFORMER_CONFIG

    with init_empty_weights():
        model = WanTransformer3DModel(**TRANSFORMER_CONFIG)
    return {original_key(k): tuple(v.shape) for k, v in model.state_dict().items()}


# The linears of each block the step-distilled LoRA adapts (original names): every attention
# projection, the image cross-attention's key/value and the feed-forward.
LORA_LINEARS = ("self_attn.q", "self_attn.k", "self_attn.v", "self_attn.o", "cross_attn.q",
                "cross_attn.k", "cross_attn.v", "cross_attn.o", "cross_attn.k_img", "cross_attn.v_img",
                "ffn.0", "ffn.2")  # fmt: skip


def lora_size(transformer: ComponentSize, rank: int, bytes_per: int = 2) -> ComponentSize:
    """The real transformer with a rank-`rank` LoRA on every block linear (down, up and a bias delta
    per linear, bf16): peft keeps them inside the transformer's modules, so they join its groups."""
    shapes = real_transformer_shapes()
    extra, leaf = [], max((t.leaf for t in transformer.tensors), default=0) + 1
    for name, shape in shapes.items():
        match = re.match(r"blocks\.(\d+)\.(.+)\.weight$", name)
        if not match or match[2] not in LORA_LINEARS:
            continue
        out_f, in_f = shape
        for numel in (rank * in_f, out_f * rank, out_f):
            extra.append(Tensor(numel, numel * bytes_per, False, int(match[1]), leaf))
        leaf += 1
    return ComponentSize(transformer.name, transformer.tensors + tuple(extra), transformer.n_blocks)
