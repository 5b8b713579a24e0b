"""A clip's lineage, stored in its MP4 and JSON sidecar: enough to make it again.

The parent it continues (with the parent's own lineage, nested), then one entry per generated
segment: its frame range in the finished clip, the prompt asked and the prompt used, the seed and
what it started from. Pure: built from the request and the run plan.
"""

from __future__ import annotations

from typing import Any

from wan_demo.core.plan import RunPlan
from wan_demo.core.request import ValidRequest

GENERATOR_NOTE = "one random generator seeded once, carried over from segment to segment"


def lineage(
    request: ValidRequest,
    plan: RunPlan,
    seed: int,
    prompts: list[str],
    infos: list[dict],
    colour_match: float,
) -> dict[str, Any]:
    parent, cursor = request.parent, plan.parent_frames  # index of the next new frame in the clip
    segments = []
    for k in range(plan.segments):
        continues = bool(k or parent)  # starts from the frame before it, so its first frame is dropped
        count = plan.frames_per_segment - (1 if continues else 0)
        segments.append(
            dict(
                index=k,
                frames=[cursor, cursor + count - 1],  # first and last, inclusive
                prompt=(request.prompt_2 or request.prompt) if k else request.prompt,
                final_prompt=prompts[k],
                prompt_backend=infos[k].get("backend"),
                seed=seed,
                starts_from="the last frame before it" if continues else "the input image",
                colour_match=colour_match if continues else 0.0,
                ends_on="the end frame (last_image)" if plan.end_frame and k == plan.segments - 1 else None,
            )
        )
        cursor += count
    described = None if parent is None else dict(parent.params(), frames=[0, parent.num_frames - 1])
    frames = "generated frames, before interpolation" if plan.interpolate > 1 else "frames of the clip"
    return dict(parent=described, segments=segments, generator=GENERATOR_NOTE, frame_numbers=frames)
