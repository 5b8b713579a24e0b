"""Reuse the CLIP image embedding when the same picture runs again (a re-roll with a new seed, the
same image with another prompt): computed once per picture, kept for the last few pictures.

`install(pipe)` wraps the pipeline's own `encode_image`, so the pipeline still computes the
embedding at the same point of its call (same offload order, same no_grad) and a cached embedding
is bit-identical to a fresh one. (diffusers' I2V pipeline refuses `image_embeds` together with
`image`, and it needs the image for the VAE latents, so passing embeddings in is not an option.)
Keyed by the SHA-256 of the picture's size and RGB pixels (what the image processor sees), so an
equal picture hits whichever file it came from. Bounded, per engine, thread-safe. Prompt
embeddings have their own cache (model/text_cache.py).

End frame: with `last_image`, diffusers asks `encode_image([image, last_image])` and expects the
first-last-frame model (FLF2V), whose image embedder folds the pair into one sequence with its own
position embedding; the 480P I2V transformer has none, and diffusers' call then fails (a batch of 2
image contexts against 1 text context). For that transformer the wrapper returns the two CLIP token
sequences one after the other (1, 2 x 257, dim): ComfyUI's WanFirstLastFrameToVideo conditions the
I2V model the same way (start and end `penultimate_hidden_states` concatenated on the token axis).
"""

from __future__ import annotations

import hashlib

from PIL import Image

from wan_demo.model.lru import Lru

MAX_ENTRIES = 8  # pictures kept; one CLIP ViT-H embedding is 257 x 1280 floats (~1.3 MB)


def image_key(image: Image.Image) -> str:
    rgb = image.convert("RGB")
    digest = hashlib.sha256(f"{rgb.width}x{rgb.height}".encode())
    digest.update(rgb.tobytes())
    return digest.hexdigest()


class ImageEmbedCache:
    def __init__(self, max_entries: int = MAX_ENTRIES):
        self._entries = Lru(max_entries)
        self.hits = 0
        self.misses = 0

    def install(self, pipe) -> None:
        """Route `pipe.encode_image` through this cache (once; PIL pictures only, others pass through)."""
        original = pipe.encode_image
        if getattr(original, "_embed_cache", None) is self:
            return

        def encode_image(image, device=None):
            if _is_pair(image) and not has_pair_embedding(pipe.transformer):
                import torch

                first, last = (self.get(i, device, lambda i=i: original(i, device)) for i in image)
                return torch.cat([first, last], dim=1)  # start tokens, then end tokens
            if not isinstance(image, Image.Image):
                return original(image, device)
            return self.get(image, device, lambda: original(image, device))

        encode_image._embed_cache = self  # type: ignore[attr-defined]
        pipe.encode_image = encode_image

    def get(self, image: Image.Image, device, compute):
        """The cached embedding of `image` (moved to `device`), or `compute()` on a miss."""
        key = image_key(image)
        if (embeds := self._entries.get(key)) is not None:
            self.hits += 1
            return embeds if device is None else embeds.to(device)
        embeds = compute()
        self.misses += 1
        self._entries.put(key, embeds)
        return embeds

    def clear(self) -> None:
        self._entries.clear()


def _is_pair(image) -> bool:
    return isinstance(image, list) and len(image) == 2 and all(isinstance(i, Image.Image) for i in image)


def has_pair_embedding(transformer) -> bool:
    """True for the FLF2V transformer (its image embedder has a position embedding for 2 images)."""
    embedder = getattr(getattr(transformer, "condition_embedder", None), "image_embedder", None)
    return getattr(embedder, "pos_embed", None) is not None
