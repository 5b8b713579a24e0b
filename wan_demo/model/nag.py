"""Normalized Attention Guidance (NAG; Chen et al. 2025, arXiv 2505.21179) on Wan's text
cross-attention: negative guidance for the fast mode, whose distilled model runs without CFG.

Per transformer block, the text cross-attention (attn2) is computed twice with the same queries:
once with the prompt's context (z+), once with the negative prompt's (z-). Then, per token over the
channels (the formula of the paper and of its Wan ports: ComfyUI's comfy_extras/nodes_nag.py,
kijai's WanVideoApplyNAG, Wan2GP):

    z~ = scale * z+ - (scale - 1) * z-                 extrapolate away from the negative
    r  = |z~|_1 / |z+|_1 ; z^ = z~ * min(r, tau) / r   clip the norm ratio at tau
    z  = alpha * z^ + (1 - alpha) * z+                 blend back

before the output projection; the image (CLIP) part of the cross-attention is added unchanged.
The sampler is diffusers' own: `nag_processors()` swaps attn2's processor for one pipeline call and
puts every original back afterwards, so a run without NAG never sees this code (bit-identical).
Costs one more text attention per block per forward; the negative keys and values are projected
once per call and reused at every step (the weights and the negative context do not change).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from diffusers.models.attention_dispatch import dispatch_attention_fn
from diffusers.models.transformers.transformer_wan import WanAttnProcessor, _get_added_kv_projections

from wan_demo.core.settings import TEXT_TOKENS

EPS = 1e-6  # floor of the per-token L1 norms (an all-zero row must not divide by zero)


def nag_combine(positive: torch.Tensor, negative: torch.Tensor, scale: float, tau: float, alpha: float):
    """The NAG formula on attention outputs (..., channels); norms per token over the channels."""
    guided = positive * scale - negative * (scale - 1)
    norm_positive = positive.norm(p=1, dim=-1, keepdim=True).clamp_min(EPS)
    norm_guided = guided.norm(p=1, dim=-1, keepdim=True).clamp_min(EPS)
    ratio = norm_guided / norm_positive
    guided = guided * (torch.clamp(ratio, max=tau) / ratio)
    return guided * alpha + positive * (1 - alpha)


class NagAttnProcessor(WanAttnProcessor):
    """WanAttnProcessor for attn2 (text + image cross-attention) with NAG on the text part.
    `context`: the negative prompt after the transformer's text embedder, (1, 512, dim)."""

    def __init__(self, context: torch.Tensor, scale: float, tau: float, alpha: float):
        super().__init__()
        self.context, self.scale, self.tau, self.alpha = context, scale, tau, alpha
        self._kv: tuple[torch.Tensor, torch.Tensor] | None = None  # negative K, V: once per call

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None):
        image_tokens = encoder_hidden_states.shape[1] - TEXT_TOKENS  # 512 text tokens come last
        image_context = encoder_hidden_states[:, :image_tokens] if attn.add_k_proj is not None else None
        text = (
            encoder_hidden_states[:, image_tokens:] if attn.add_k_proj is not None else encoder_hidden_states
        )
        query = self._heads(attn, attn.norm_q(attn.to_q(hidden_states)))
        positive = self._attend(query, *self._key_value(attn, text), attention_mask)
        negative = self._attend(query, *self._negative_kv(attn, query.shape[0]), attention_mask)
        out = nag_combine(positive, negative, self.scale, self.tau, self.alpha).type_as(query)
        if image_context is not None:  # the CLIP image tokens: as diffusers' processor computes them
            key_img, value_img = _get_added_kv_projections(attn, image_context)
            key_img = self._heads(attn, attn.norm_added_k(key_img))
            out = out + self._attend(query, key_img, self._heads(attn, value_img), None).type_as(query)
        return attn.to_out[1](attn.to_out[0](out))

    @staticmethod
    def _heads(attn, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(2, (attn.heads, -1))

    def _key_value(self, attn, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        key = self._heads(attn, attn.norm_k(attn.to_k(context)))
        return key, self._heads(attn, attn.to_v(context))

    def _negative_kv(self, attn, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self._kv is None:
            self._kv = self._key_value(attn, self.context.to(attn.to_k.weight.device, attn.to_k.weight.dtype))
        key, value = self._kv
        return key.expand(batch, -1, -1, -1), value.expand(batch, -1, -1, -1)

    def _attend(self, query, key, value, mask) -> torch.Tensor:
        out = dispatch_attention_fn(
            query, key, value, attn_mask=mask, dropout_p=0.0, is_causal=False, backend=self._attention_backend
        )
        return out.flatten(2, 3)


def negative_context(transformer, negative_embeds: torch.Tensor) -> torch.Tensor:
    """The negative prompt's UMT5 embedding through the transformer's own text embedder (what attn2
    sees as its context for the prompt)."""
    embedder = transformer.condition_embedder.text_embedder
    with torch.no_grad():
        weight = next(embedder.parameters())
        return embedder(negative_embeds.to(weight.device, weight.dtype))


@contextmanager
def nag_processors(
    transformer, negative_embeds: torch.Tensor, scale: float, tau: float, alpha: float
) -> Iterator[list[NagAttnProcessor]]:
    """NAG on every block's attn2 for the duration of the `with` (one pipeline call)."""
    context = negative_context(transformer, negative_embeds)
    originals = [block.attn2.processor for block in transformer.blocks]
    installed = [NagAttnProcessor(context, scale, tau, alpha) for _ in transformer.blocks]
    try:
        for block, processor in zip(transformer.blocks, installed, strict=True):
            block.attn2.processor = processor  # the attribute set_processor writes, minus its logging
        yield installed
    finally:
        for block, processor in zip(transformer.blocks, originals, strict=True):
            block.attn2.processor = processor
