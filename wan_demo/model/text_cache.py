"""Prompt embeddings computed once per (prompt, negative prompt) and reused: a re-roll with a new
seed, the second segment of a 10 s clip and a repeated prompt skip the UMT5 encoder (5.7 B params,
the slowest part when it runs on the CPU or is offloaded).

The embeddings come from the pipeline's own `encode_prompt` with the arguments its `__call__` would
use, and go back in as `prompt_embeds` / `negative_prompt_embeds`, so the frames are bit-identical
to a call that encodes the text itself (tests/test_parity.py). NAG (model/nag.py) needs the negative
prompt's embedding in the fast mode too, where CFG is off: `get(..., nag=True)` encodes it then.
"""

from __future__ import annotations

from wan_demo.core.settings import TEXT_TOKENS
from wan_demo.model.lru import Lru

MAX_ENTRIES = 8  # one entry is 2 x 512 x 4096 bf16 = 8 MB for the real encoder


class PromptEmbeddings:
    """A small LRU cache of encoded prompts, keyed by (prompt, negative prompt, CFG on/off)."""

    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self._entries = Lru(max_entries)
        self.encoded = 0  # times the text encoder actually ran (tests, info)
        self.encoder = None  # model.text_encoder.OnDemand when the plan frees the encoder between prompts

    def get(self, pipe, prompt: str, negative_prompt: str, cfg: bool, nag: bool = False) -> dict:
        """prompt_embeds and negative_prompt_embeds (None without CFG and NAG). The positive one is
        the same tensor either way: encode_prompt encodes the two texts separately."""
        key = (prompt, negative_prompt if cfg or nag else None, cfg or nag)
        if (entry := self._entries.get(key)) is not None:
            return entry
        from contextlib import nullcontext

        import torch

        on_demand = self.encoder is not None and pipe.text_encoder is None
        with self.encoder.loaded(pipe) if on_demand else nullcontext(), torch.no_grad():
            # no_grad as inside the pipeline call: with grad on, CPU bf16 kernels round differently
            positive, negative = pipe.encode_prompt(
                prompt=prompt, negative_prompt=negative_prompt, do_classifier_free_guidance=cfg or nag,
                max_sequence_length=TEXT_TOKENS, device=pipe._execution_device,
            )  # fmt: skip
        entry = dict(prompt_embeds=positive, negative_prompt_embeds=negative)
        self.encoded += 1
        self._entries.put(key, entry)
        return entry
