"""NAG's maths (model/nag.py) against a direct computation on small tensors, and its processor
against diffusers' own when NAG cannot change anything (scale 1)."""

from __future__ import annotations

import pytest
import torch

from wan_demo.model.nag import NagAttnProcessor, nag_combine, nag_processors


def direct(positive: torch.Tensor, negative: torch.Tensor, scale: float, tau: float, alpha: float):
    """The paper's three steps written out token by token."""
    out = torch.empty_like(positive)
    for b in range(positive.shape[0]):
        for t in range(positive.shape[1]):
            zp, zn = positive[b, t], negative[b, t]
            guided = scale * zp - (scale - 1) * zn
            ratio = guided.abs().sum() / zp.abs().sum()
            if ratio > tau:  # clip the norm ratio at tau
                guided = guided * tau / ratio
            out[b, t] = alpha * guided + (1 - alpha) * zp
    return out


@pytest.mark.parametrize(("scale", "tau", "alpha"), [(11.0, 2.5, 0.25), (3.0, 10.0, 1.0), (5.0, 1.0, 0.5)])
def test_nag_formula_matches_a_direct_computation(scale, tau, alpha):
    gen = torch.Generator().manual_seed(0)
    positive, negative = torch.randn(2, 7, 12, generator=gen), torch.randn(2, 7, 12, generator=gen)
    got = nag_combine(positive, negative, scale, tau, alpha)
    torch.testing.assert_close(got, direct(positive, negative, scale, tau, alpha), rtol=1e-5, atol=1e-6)


def test_the_norm_is_clipped_at_tau_and_alpha_blends():
    positive = torch.tensor([[[1.0, 1.0]]])  # |z+|_1 = 2
    negative = torch.tensor([[[-1.0, -1.0]]])
    guided = nag_combine(positive, negative, scale=3.0, tau=2.0, alpha=1.0)  # 3z+ - 2z- = (5, 5): ratio 5
    torch.testing.assert_close(guided, torch.tensor([[[2.0, 2.0]]]))  # clipped to ratio 2
    half = nag_combine(positive, negative, scale=3.0, tau=2.0, alpha=0.5)
    torch.testing.assert_close(half, torch.tensor([[[1.5, 1.5]]]))  # halfway back to z+
    same = nag_combine(positive, negative, scale=1.0, tau=2.0, alpha=0.25)
    torch.testing.assert_close(same, positive)  # scale 1: no guidance


def test_processor_at_scale_one_equals_diffusers_attention(engine):
    """The processor recomputes attn2 (text + CLIP image tokens) itself; at scale 1 it must give
    diffusers' own result, so the only difference NAG makes is the formula."""
    transformer = engine.pipe.transformer
    attn = transformer.blocks[0].attn2
    gen = torch.Generator().manual_seed(1)
    dim = transformer.config.num_attention_heads * transformer.config.attention_head_dim
    hidden = torch.randn(1, 10, dim, generator=gen)
    context = torch.randn(1, 65 + 512, dim, generator=gen)  # 65 CLIP tokens (tiny), then 512 text
    with torch.no_grad():
        expected = attn(hidden, encoder_hidden_states=context)
        nag = NagAttnProcessor(torch.randn(1, 512, dim, generator=gen), scale=1.0, tau=2.5, alpha=0.25)
        got = nag(attn, hidden, encoder_hidden_states=context)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_processors_are_put_back_even_on_error(engine):
    transformer = engine.pipe.transformer
    before = [b.attn2.processor for b in transformer.blocks]
    negative = torch.zeros(1, 512, transformer.config.text_dim)
    with pytest.raises(KeyError), nag_processors(transformer, negative, 11.0, 2.5, 0.25) as installed:
        assert [b.attn2.processor for b in transformer.blocks] == installed
        raise KeyError("stop")
    assert [b.attn2.processor for b in transformer.blocks] == before
