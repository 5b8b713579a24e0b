"""Widget values -> ValidRequest -> the job queue, and a finished job -> widget values: what the
public API handlers (web/api.py) and the UI's own handlers (web/session.py) share. No model logic.

Validators run before Gradio queues an event (one verdict per input); `submit` validates once and
queues for an owner (web/owners.py); every refusal becomes a gr.Error that names the rule.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import gradio as gr

from wan_demo.core.controls import NUM_VIDEOS, check_control
from wan_demo.core.plan import batch_seeds
from wan_demo.core.request import GenerationRequest, InvalidRequest
from wan_demo.core.validate import check_fields, validate
from wan_demo.jobs.common import Job, ParentUnavailable, QueueFull, Status, StoreUnavailable, TooManyActive
from wan_demo.jobs.health import Draining
from wan_demo.jobs.loading import LoadFailed
from wan_demo.jobs.service import JobService, SourceImage
from wan_demo.media.image import decode_image, probe_image
from wan_demo.web.uploads import probe_upload, upload_parent

AUTO = "auto"  # speed-mode choice meaning "the server's default"

# The order of the /generate and /extend parameters; validators map InvalidRequest.field onto these.
SETTINGS_FIELDS = (
    "prompt", "prompt_extend", "seed", "video_length", "negative_prompt", "steps", "guidance", "speed_mode",
    "prompt_2", *("last_image", "nag_scale", "nag_tau", "nag_alpha", "interpolate"),  # issue 24: appended
)  # fmt: skip
INPUT_FIELDS = ("image", *SETTINGS_FIELDS)
EXTEND_FIELDS = ("video", *SETTINGS_FIELDS)

Outputs = tuple[str | None, str | None, str, int | None]  # video, thumbnail, final prompt, seed


def to_request(
    image: str | None,
    prompt: str,
    prompt_extend: bool,
    seed: float | None,
    video_length: str,
    negative_prompt: str | None,
    steps: float | None,
    guidance: float | None,
    speed_mode: str | None,
    prompt_2: str | None = None,
    *extra: Any,
    decode: bool = True,
    loras: list | None = None,
) -> tuple[GenerationRequest, bytes]:
    """Widget values -> an unchecked request and the upload's bytes. 0 steps / 0 guidance /
    "auto" mean the speed mode's defaults; `decode=False` leaves the image to the caller (the end
    frame is then only probed). `extra`: issue 24's values (END_FRAME_FIELDS order)."""
    if not image:
        raise InvalidRequest("image", "is required: upload a JPEG, PNG or WEBP picture")
    data = Path(image).read_bytes()  # a file Gradio stored for this upload, never a user-given path
    return settings_request(decode_image(data) if decode else None, prompt, prompt_extend, seed, video_length,
                            negative_prompt, steps, guidance, speed_mode, prompt_2, *extra,
                            decode=decode, loras=loras), data  # fmt: skip


def settings_request(image, prompt, prompt_extend, seed, video_length, negative_prompt, steps, guidance,
                     speed_mode, prompt_2=None, last_image=None, nag_scale=0, nag_tau=0, nag_alpha=0,
                     interpolate=False, parent=None, decode=True,
                     loras=None) -> GenerationRequest:  # fmt: skip
    """The widget values every generation shares, as an unchecked request. The end frame is an
    uploaded file (decoded, or only probed with `decode=False`); 0 = unset for the NAG sliders;
    the interpolation checkbox means factor 2."""
    if last_image:  # a file Gradio stored for this upload
        data = Path(last_image).read_bytes()
        if not decode:  # the validator: format and size from the header; the aspect at submit
            probe_image(data, "last_image")
        last_image = decode_image(data, "last_image") if decode else None
    return GenerationRequest(
        image=image,
        prompt=prompt if prompt is not None else "",
        video_length_s=video_length,
        seed=-1 if seed is None else seed,
        prompt_extend=bool(prompt_extend),
        negative_prompt=negative_prompt or None,
        steps=steps or None,  # as given: core/controls.py bounds numbers before any conversion
        guidance=guidance or None,
        speed_mode=None if speed_mode in (None, "", AUTO) else speed_mode,
        prompt_2=prompt_2 or None,
        parent=parent,
        last_image=last_image or None,
        nag_scale=nag_scale or None,  # as given, like steps
        nag_tau=nag_tau or None,
        nag_alpha=nag_alpha or None,
        interpolate=2 if interpolate is True or interpolate == 2 else None,
        loras=loras or None,  # [{"path", "scale"}] from the LoRA rows (web/lora_panel.py)
    )


def _verdicts(names: tuple[str, ...], check: Callable[[], None]) -> list[dict]:
    verdicts = [gr.validate(True, "") for _ in names]
    try:
        check()
    except InvalidRequest as e:
        if e.field in names:  # the field label is shown beside the message: the rule suffices
            verdicts[names.index(e.field)] = gr.validate(False, e.rule)
        else:
            verdicts[0] = gr.validate(False, str(e))
    return verdicts


def check_inputs(*values) -> list[dict]:
    """Gradio validator, before queueing: the same field rules as validate(), and the image's
    format and size from its header (the handler decodes it once). One verdict per input."""

    def check() -> None:
        request, data = to_request(*values, decode=False)
        probe_image(data)
        check_fields(request)

    return _verdicts(INPUT_FIELDS, check)


def check_extend_inputs(video: str | None, *values) -> list[dict]:
    """/extend validator: the video's header (a readable video, within the caps) and the fields."""

    def check() -> None:
        probe_upload(video)
        check_fields(settings_request(None, *values))

    return _verdicts(EXTEND_FIELDS, check)


def submit(
    jobs: JobService, values: tuple, owner: str, num_videos: Any = 1, loras: list | None = None
) -> list[Job]:
    """Validate once and queue for `owner` (web/owners.py): one job, or a batch of `num_videos`
    with seeds seed, seed + 1, ... (random each for -1); `loras`: the LoRA rows'
    [{path, scale}]; errors become gr.Error with the rule."""
    with refusals():
        request, data = to_request(*values, loras=loras)
        count = check_control(NUM_VIDEOS.name, num_videos or 1)  # a slider's 3.0 is 3; inf a field error
        source = SourceImage(data, request.image.format)  # kept as uploaded, not re-encoded
        valid = validate(request)
        requests = [replace(valid, seed=seed) for seed in batch_seeds(valid.seed, count)]
        return jobs.submit_batch(requests, owner, "ui", image=source)


def submit_extend(jobs: JobService, video: str | None, values: tuple, owner: str) -> Job:
    """An uploaded video (or one of our results, recognised by its bytes) plus the settings, queued
    for `owner`."""
    with refusals(), tempfile.TemporaryDirectory(prefix="wan-demo-upload-") as tmp:
        parent, last = upload_parent(jobs, video, Path(tmp))
        return jobs.submit(validate(settings_request(last, *values, parent=parent)), owner, "ui")


@contextmanager
def refusals() -> Iterator[None]:
    """InvalidRequest, capacity and parent refusals as gr.Error naming the reason."""
    try:
        yield
    except InvalidRequest as e:
        raise gr.Error(str(e), title="Invalid input") from None
    except (QueueFull, TooManyActive) as e:
        raise gr.Error(f"The queue is full: {e}.", title="Queue full") from None
    except LoadFailed as e:
        raise gr.Error(f"The model failed to load: {e}.", title="Model unavailable") from None
    except ParentUnavailable as e:
        raise gr.Error(f"Cannot extend: {e}.", title="Cannot extend") from None
    except Draining as e:  # this server is shutting down (SIGTERM): jobs/health.py
        raise gr.Error(f"{str(e).capitalize()}.", title="Restarting") from None
    except StoreUnavailable:
        raise gr.Error("The job database is restarting; try again in a few seconds.", title="Busy") from None


def outputs_of(jobs: JobService, job: Job) -> Outputs:
    if job.status == Status.SUCCESS:
        video, thumbnail = jobs.local_files(job)  # a bucket's files are copied to the UI folder
        return video, thumbnail, job.final_prompt or "", job.seed_used
    if job.status == Status.CANCELLED:
        raise gr.Error("The generation was cancelled.", title="Cancelled")
    if job.error_code == "invalid_input":
        raise gr.Error(job.error_message or "invalid input", title="Invalid input")
    raise gr.Error("The generation failed on the server; see the server log.", title="Failed")
