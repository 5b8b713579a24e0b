"""The REST payload <-> the request: a SubmitPayload as a GenerationRequest, what a request's
`payload` echoes, and the body hash of an Idempotency-Key. Pure mapping, no I/O."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from wan_demo.core.controls import CONTROLS
from wan_demo.core.request import GenerationRequest, ParentClip
from wan_demo.jobs.service import SourceImage
from wan_demo.media.clip import last_frame
from wan_demo.rest.inputs import InputImage
from wan_demo.rest.schema import SubmitBody, SubmitPayload


def body_hash(body: SubmitBody) -> str:
    """SHA-256 of the body's canonical JSON: the same request however its JSON was spaced or ordered."""
    return hashlib.sha256(
        json.dumps(body.model_dump(mode="json"), sort_keys=True).encode("ascii")
    ).hexdigest()


def source_of(image: InputImage | None) -> SourceImage | None:
    return SourceImage(image.data, image.format) if image is not None else None


def request_of(
    p: SubmitPayload, image: InputImage | None, parent: ParentClip | None, end: InputImage | None = None
) -> GenerationRequest:
    picture = image.image if image is not None else last_frame(Path(parent.path))  # type: ignore[union-attr]
    controls = {c.name: getattr(p, c.api_name) for c in CONTROLS.values()}
    return GenerationRequest(
        picture,
        p.prompt,
        p.video_length,
        p.seed,
        p.prompt_extend,
        prompt_2=p.prompt_2,
        parent=parent,
        last_image=end.image if end is not None else None,
        loras=None if p.loras is None else [item.model_dump() for item in p.loras],
        **controls,
    )


def payload_echo(p: SubmitPayload, valid, image: InputImage | None, end: InputImage | None = None) -> dict:
    """What the request's `payload` echoes: the contract's fields, then the optional ones set (a
    batch's requests each echo their own seed, and num_videos)."""
    payload = dict(
        prompt=valid.prompt, video_length=valid.video_length_s, prompt_extend=valid.prompt_extend,
        seed=valid.seed, path_input_image=image.echo if image else None,
    )  # fmt: skip
    extra = dict(prompt_2=valid.prompt_2, parent_request_id=p.parent_request_id)
    extra |= dict(
        path_last_image=end.echo if end else None, num_videos=p.num_videos if p.num_videos > 1 else None
    )
    extra |= {c.api_name: getattr(valid, c.name) for c in CONTROLS.values()}
    if valid.loras:  # as asked, with the file that was found for it
        extra["loras"] = [
            dict(path=c.source, scale=c.scale, name=c.name, sha256=c.sha256) for c in valid.loras
        ]
    return payload | {name: value for name, value in extra.items() if value is not None}
