"""torchrun's environment and how one segment's tokens split over its ranks (pure maths)."""

from __future__ import annotations

import os

from wan_demo.model.memory.estimate import Shape


def world_size_from_env(environ: dict[str, str] | None = None) -> int:
    environ = os.environ if environ is None else environ
    return int(environ.get("WORLD_SIZE", "1") or 1)


def ranks_from_env(environ: dict[str, str] | None = None) -> tuple[int, int]:
    """(ranks in the run, ranks on this host) as torchrun sets them; (1, 1) without torchrun."""
    environ = os.environ if environ is None else environ
    world = world_size_from_env(environ)
    return world, int(environ.get("LOCAL_WORLD_SIZE", world) or world)


def sequence_tokens(width: int, height: int, num_frames: int) -> int:
    """Transformer tokens of one segment (VAE 4x time / 8x space, then 1x2x2 patches)."""
    return Shape(num_frames, height, width).tokens


def needs_uneven_split(width: int, height: int, num_frames: int, world_size: int) -> bool:
    """True when the tokens do not split evenly over the ranks (e.g. 624x624: 21*39*39 is odd)."""
    return sequence_tokens(width, height, num_frames) % world_size != 0
