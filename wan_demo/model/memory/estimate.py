"""The real component configs (Wan-AI/Wan2.1-I2V-14B-480P-Diffusers), the dtypes they load in, and
activation estimates for a given frame count and output size (constants measured on CPU by
bench/activations.py). Weight sizes from these configs: model/memory/sizes.py.
All sizes are in GB (1e9 bytes) unless a name says GiB.
"""

from __future__ import annotations

from dataclasses import dataclass

GB = 1e9

# --- real configs (Wan-AI/Wan2.1-I2V-14B-480P-Diffusers, per component folder) -----------------
TRANSFORMER_CONFIG = dict(
    patch_size=(1, 2, 2),
    num_attention_heads=40,
    attention_head_dim=128,  # dim 5120 = 40 heads x 128
    in_channels=36,  # 16 noise + 16 image-condition latents + 4 mask
    out_channels=16,
    text_dim=4096,
    freq_dim=256,
    ffn_dim=13824,
    num_layers=40,
    cross_attn_norm=True,
    qk_norm="rms_norm_across_heads",
    eps=1e-6,
    image_dim=1280,
    added_kv_proj_dim=5120,
    rope_max_seq_len=1024,
)
UMT5_CONFIG = dict(
    d_model=4096, d_ff=10240, num_layers=24, num_heads=64, d_kv=64, vocab_size=256384,
    feed_forward_proj="gated-gelu",
)  # fmt: skip
CLIP_CONFIG = dict(
    hidden_size=1280, num_hidden_layers=32, num_attention_heads=16, intermediate_size=5120,
    image_size=224, patch_size=14, projection_dim=1024, hidden_act="gelu",
)  # fmt: skip
VAE_CONFIG = dict(
    base_dim=96, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, temperal_downsample=[False, True, True]
)

# bytes per weight in each component's load dtype (diffusers recipe: VAE and CLIP stay fp32)
LOAD_BYTES = {"transformer": 2, "text_encoder": 2, "image_encoder": 4, "vae": 4}
FP8_BYTES = 1  # float8_e4m3fn storage with layerwise casting (skipped layers keep their dtype)
# Layers kept out of fp8. Transformer: diffusers' defaults + WanTransformer3DModel's own list.
# Text encoder: embeddings, norms, and T5's `wo`, whose input transformers casts to wo's dtype.
FP8_SKIP_PATTERNS = {
    "transformer": ("pos_embed", "patch_embed", "norm", "^proj_in$", "^proj_out$", "patch_embedding",
                    "condition_embedder"),
    "text_encoder": ("shared", "embed_tokens", "layer_norm", "relative_attention_bias", r"\.wo$"),
}  # fmt: skip

# --- activation model (inference, batch 1: diffusers' Wan pipeline runs cond and uncond apart) --
VAE_TIME_STRIDE, VAE_SPACE_STRIDE = 4, 8  # latent frames = (F - 1) / 4 + 1, latent side = px / 8
PATCH_AREA = 4  # (1, 2, 2) patches: one token per 2x2 latent pixels
# Measured with bench/activations.py (one real-width block, bf16, CPU, peak RSS above the weights):
# 193 / 365 / 701 MiB at 1560 / 3120 / 6240 tokens; the fitted line is 111 KiB per token + 24 MiB,
# i.e. 11.1 bf16 copies of a (tokens x dim) tensor plus the text/image context. A CPU proxy: GPU
# kernels (flash attention, fused norms) differ.
MEASURED_ACTIVATIONS_MIB = ((1560, 193), (3120, 365), (6240, 701))  # (tokens, MiB), bench/activations.py
ACT_DIM_COPIES = 11.1
ACT_FIXED_GB = 0.025  # the fitted intercept: context projections, rope tables
ACT_BYTES_PER_TOKEN = ACT_DIM_COPIES * 5120 * 2  # at the real width
# GGUF: diffusers dequantizes each layer's weight per forward; its temporaries peak at this many bf16
# copies of the weight (bench/activations.py `dequant`, the 13824 x 5120 ffn weight, measured on CPU:
# Q3_K 3.66, Q6_K 3.56, Q4_K 2.59, Q8_0 1.99; the largest is used).
DEQUANT_COPIES = 3.7
VAE_CHUNK_FRAMES = 4  # the causal VAE decodes one latent frame = 4 video frames at a time
# Measured with bench/activations.py (real VAE config, fp32, 480x832, CPU): decode peak 7717 MiB
# untiled, 1299 MiB tiled, i.e. 13.2 live fp32 (base_dim x H x W) maps per frame of a 4-frame chunk
# (CPU convolutions keep im2col buffers; cuDNN may need less: conservative on GPUs).
VAE_FULLRES_COPIES = 13.2
MEASURED_VAE_MIB = {"untiled": 7717, "tiled": 1299}
# What grows with the frame count (the decoded video, kept and concatenated: 3 fp32 channels, for any
# VAE width): bench/activations.py --vae-growth, narrow VAEs, 5 -> 81 frames at 480x832, measured on
# CPU: +389 / +411 MiB untiled (base_dim 24 / 12) = 1.18 copies of the 76 added frames.
VAE_VIDEO_COPIES = 1.18
MEASURED_FRAMES = 5  # MEASURED_VAE_MIB's runs: 2 latent frames
VAE_TILE_PX = 256 * 256  # diffusers' default Wan VAE tile (256 px, stride 192) when tiling is on


@dataclass(frozen=True)
class Shape:
    """What one pipeline pass computes: frames per segment and output size in pixels."""

    num_frames: int = 81
    height: int = 480
    width: int = 832
    ranks: int = 1  # GPUs sharing the token sequence (context parallelism, wan_demo/model/distributed.py)

    @property
    def tokens(self) -> int:
        latent_frames = (self.num_frames - 1) // VAE_TIME_STRIDE + 1
        latent_area = (self.height // VAE_SPACE_STRIDE) * (self.width // VAE_SPACE_STRIDE)
        return latent_frames * latent_area // PATCH_AREA

    @property
    def tokens_per_rank(self) -> int:
        """Tokens one GPU holds between attention calls; its activations scale with this."""
        return -(-self.tokens // self.ranks)


def transformer_activations_gb(shape: Shape, dim: int, ffn_dim: int) -> float:
    """Peak live activations inside one transformer block (blocks run one after another).

    `ffn_dim` is kept for callers: the measurement was at the real ffn/dim ratio (2.7), which
    the per-dim constant folds in."""
    return shape.tokens_per_rank * ACT_DIM_COPIES * dim * 2 / GB + ACT_FIXED_GB


def vae_activations_gb(shape: Shape, base_dim: int, tiling: bool) -> float:
    """Peak of the VAE encode (conditioning video) or decode: one 4-frame chunk at full resolution,
    plus the video it builds (tiled: the same video term; its own 81-frame run is not measured yet)."""
    area = min(shape.height * shape.width, VAE_TILE_PX) if tiling else shape.height * shape.width
    chunk = VAE_CHUNK_FRAMES * area * base_dim * VAE_FULLRES_COPIES * 4
    video = max(shape.num_frames - MEASURED_FRAMES, 0) * 3 * shape.height * shape.width * 4 * VAE_VIDEO_COPIES
    return (chunk + video) / GB
