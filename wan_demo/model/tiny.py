"""The built-in tiny model: a random-weight WanImageToVideoPipeline built in-process from code.

Same pipeline class and image-conditioning branch as the real 14B model (36 input channels:
16 noise + 16 image-condition latents + 4 mask; CLIP image tokens through added K/V), so every
code path runs on a CPU in seconds. Its weights are random: its output is noise.
No download: the tokenizer is built in memory too.
"""

from __future__ import annotations

import string

import torch
from diffusers import (
    AutoencoderKLWan,
    UniPCMultistepScheduler,
    WanImageToVideoPipeline,
    WanTransformer3DModel,
)
from transformers import (
    CLIPImageProcessor,
    CLIPVisionConfig,
    CLIPVisionModelWithProjection,
    T5Tokenizer,
    UMT5Config,
    UMT5EncoderModel,
)

TINY_MODEL_NAME = "tiny (built-in, random weights: output is noise)"

# ---------------------------------------------------------------------------
# Tiny configs
# ---------------------------------------------------------------------------
TEXT_DIM = 32  # UMT5 d_model  -> transformer.text_dim
CLIP_DIM = 16  # CLIP hidden    -> transformer.image_dim
HEADS, HEAD_DIM = 2, 12  # inner_dim = 24 ; HEAD_DIM must split into t/h/w rope parts (even sizes)
INNER_DIM = HEADS * HEAD_DIM

TRANSFORMER_CONFIG = dict(
    patch_size=(1, 2, 2),
    num_attention_heads=HEADS,
    attention_head_dim=HEAD_DIM,
    in_channels=36,
    out_channels=16,
    text_dim=TEXT_DIM,
    freq_dim=256,
    ffn_dim=32,
    num_layers=2,
    cross_attn_norm=True,
    qk_norm="rms_norm_across_heads",
    eps=1e-6,
    image_dim=CLIP_DIM,
    added_kv_proj_dim=INNER_DIM,
    rope_max_seq_len=1024,  # real value; must be >= latent W/2 (52 for 832 px)
)

VAE_CONFIG = dict(
    base_dim=3,
    z_dim=16,
    dim_mult=[1, 1, 1, 1],
    num_res_blocks=1,
    temperal_downsample=[False, True, True],
)

UMT5_CONFIG = dict(
    d_model=TEXT_DIM,
    d_kv=8,
    d_ff=64,
    num_layers=2,
    num_heads=4,
    relative_attention_num_buckets=8,
    relative_attention_max_distance=16,
    feed_forward_proj="gated-gelu",
    dropout_rate=0.0,
    is_encoder_decoder=True,
    tie_word_embeddings=False,
    pad_token_id=0,
    eos_token_id=1,
    decoder_start_token_id=0,
)

CLIP_CONFIG = dict(
    hidden_size=CLIP_DIM,
    intermediate_size=32,
    projection_dim=CLIP_DIM,
    num_hidden_layers=2,
    num_attention_heads=2,
    image_size=32,
    patch_size=4,  # -> 8*8+1 = 65 image tokens (real ViT-H/14 @224: 257)
    hidden_act="gelu",
)

SCHEDULER_CONFIG = dict(
    prediction_type="flow_prediction",
    use_flow_sigmas=True,
    num_train_timesteps=1000,
    flow_shift=3.0,  # 3.0 for 480P per diffusers' convert_wan_to_diffusers.py
)


def build_tiny_tokenizer() -> T5Tokenizer:
    """A Unigram T5 tokenizer built in memory (transformers v5 T5Tokenizer accepts `vocab=`).

    Layout follows T5: <pad>=0, </s>=1, <unk>=2. Saves to tokenizer.json + tokenizer_config.json
    and reloads with AutoTokenizer / T5TokenizerFast (alias of T5Tokenizer in transformers 5).
    """
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    chars = string.ascii_letters + string.digits + string.punctuation
    pieces += [(c, -5.0) for c in chars]
    pieces += [("\u2581" + c, -4.0) for c in chars]
    words = "a the of and in on with camera cat dog man woman walking moving slowly video scene light".split()
    pieces += [("\u2581" + w, -3.0) for w in words]
    return T5Tokenizer(vocab=pieces, extra_ids=0)


def build_tiny_components(seed: int = 0, num_layers: int = 2, head_dim: int = HEAD_DIM) -> dict:
    """`head_dim` 16 gives 32-wide linears, which GGUF's 32-weight quant blocks can hold (tests)."""
    tokenizer = build_tiny_tokenizer()

    torch.manual_seed(seed)
    text_encoder = UMT5EncoderModel(UMT5Config(vocab_size=len(tokenizer), **UMT5_CONFIG)).eval()

    torch.manual_seed(seed)
    image_encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(**CLIP_CONFIG)).eval()
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": CLIP_CONFIG["image_size"]},
        crop_size={"height": CLIP_CONFIG["image_size"], "width": CLIP_CONFIG["image_size"]},
    )

    torch.manual_seed(seed)
    vae = AutoencoderKLWan(**VAE_CONFIG).eval()

    torch.manual_seed(seed)
    inner = HEADS * head_dim
    config = {**TRANSFORMER_CONFIG, "num_layers": num_layers, "attention_head_dim": head_dim,
              "added_kv_proj_dim": inner}  # fmt: skip
    transformer = WanTransformer3DModel(**config).eval()

    scheduler = UniPCMultistepScheduler(**SCHEDULER_CONFIG)

    return dict(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        image_encoder=image_encoder,
        image_processor=image_processor,
        transformer=transformer,
        transformer_2=None,
        vae=vae,
        scheduler=scheduler,
    )


def build_tiny_pipeline(
    seed: int = 0, num_layers: int = 2, head_dim: int = HEAD_DIM
) -> WanImageToVideoPipeline:  # noqa: E501
    pipe = WanImageToVideoPipeline(**build_tiny_components(seed, num_layers, head_dim))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def save_tiny_pipeline(path: str, seed: int = 0, head_dim: int = HEAD_DIM) -> str:
    """Write a diffusers folder (model_index.json + subfolders) that the real loader can read.

    Class names in model_index.json are rewritten to the hub repo's (T5TokenizerFast,
    CLIPImageProcessor): without torchvision transformers 5 saves other names.
    """
    import json
    import os

    build_tiny_pipeline(seed, head_dim=head_dim).save_pretrained(path, safe_serialization=True)
    index_path = os.path.join(path, "model_index.json")
    with open(index_path) as f:
        index = json.load(f)
    index["tokenizer"] = ["transformers", "T5TokenizerFast"]
    index["image_processor"] = ["transformers", "CLIPImageProcessor"]
    with open(index_path, "w") as f:
        json.dump(index, f, indent=2)
    return path
