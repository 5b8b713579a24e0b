"""The public Gradio API: /generate and /extend (also MCP tools; their names are the functions').

Generators, so Gradio's Cancel can stop them: they submit the job, yield while it runs, and cancel
it in `finally` when Gradio closed them. While the job runs the only output that changes is the
thumbnail slot, which streams the live preview (an animated WEBP); the final outputs and their order
are those of a plain call: video, thumbnail, final prompt, seed used.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import gradio as gr

from wan_demo.jobs.service import JobService
from wan_demo.web.follow import Follow
from wan_demo.web.handlers import AUTO, Outputs, outputs_of, submit, submit_extend
from wan_demo.web.owners import api_owner


def api_stream(follow: Follow) -> Iterator[Outputs]:
    """The public endpoints' stream: nothing changes but the thumbnail slot, which shows each new
    live preview (an animated WEBP) until the real thumbnail replaces it; then the outputs."""
    try:
        for preview in follow:
            yield gr.skip(), preview or gr.skip(), gr.skip(), gr.skip()  # type: ignore[misc]
    finally:
        follow.close()
    yield outputs_of(follow.jobs, follow.job)


def make_generate(jobs: JobService) -> Callable[..., Iterator[Outputs]]:
    """The /generate handler bound to the job service (its name is the API and MCP tool name)."""

    def generate(
        image: str | None,
        prompt: str,
        prompt_extend: bool = False,
        seed: float = -1,
        video_length: str = "5",
        negative_prompt: str | None = None,
        steps: float = 0,
        guidance: float = 0,
        speed_mode: str = AUTO,
        prompt_2: str | None = None,
        last_image: str | None = None,
        nag_scale: float = 0,
        nag_tau: float = 0,
        nag_alpha: float = 0,
        interpolate: bool = False,
        progress: gr.Progress = gr.Progress(),  # noqa: B008  # Gradio injects it by default value
    ) -> Iterator[Outputs]:
        """Animate a still image into a short video with Wan2.1 image-to-video (14B, 480P).

        Args:
            image: the first frame: a JPEG, PNG or WEBP picture (sides >= 16 px, aspect ratio <= 4:1).
            prompt: what should happen in the video, in plain words (1-2000 characters).
            prompt_extend: rewrite the prompt into a richer description before generating.
            seed: -1 for a random seed, or 0..2147483647 to repeat a result.
            video_length: clip length in seconds: "5" (81 frames) or "10" (161 frames) at 16 fps.
            negative_prompt: what to avoid; empty = the model's default list of artifacts.
            steps: denoising steps (1-100); 0 = the speed mode's default.
            guidance: classifier-free guidance scale (up to 20); 0 = the speed mode's default.
            speed_mode: "auto" (server default), "quality" (40 steps) or "fast" (distilled, 4 steps).
            prompt_2: what happens in the second 5 s of a 10 s clip; empty = the same prompt.
            last_image: optional end frame (same aspect ratio as image): the clip ends on it.
            nag_scale: fast mode, negative guidance strength (NAG, 1-30); 0 = 11 when NAG runs.
            nag_tau: fast mode, NAG norm cap (1-10); 0 = 2.5.
            nag_alpha: fast mode, NAG blend (0-1); 0 = 0.25.
            interpolate: true = twice the frames at 32 fps, same duration (161 frames for 5 s).

        Returns:
            The MP4 video, its first-frame thumbnail (JPEG), the final prompt used and the seed used.
            While it runs, the thumbnail slot streams a live preview (animated WEBP).
        """
        values = (prompt, prompt_extend, seed, video_length, negative_prompt, steps, guidance, speed_mode)
        extra = (prompt_2, last_image, nag_scale, nag_tau, nag_alpha, interpolate)
        job = submit(jobs, (image, *values, *extra), api_owner())[0]  # the shared API owner: no history
        yield from api_stream(Follow(jobs, job, progress))

    return generate


def make_generate_with_loras(jobs: JobService) -> Callable[..., Iterator[Outputs]]:
    """The /generate_with_loras handler: /generate's parameters, then the community LoRAs."""

    def generate_with_loras(
        image: str | None,
        prompt: str,
        prompt_extend: bool = False,
        seed: float = -1,
        video_length: str = "5",
        negative_prompt: str | None = None,
        steps: float = 0,
        guidance: float = 0,
        speed_mode: str = AUTO,
        prompt_2: str | None = None,
        last_image: str | None = None,
        nag_scale: float = 0,
        nag_tau: float = 0,
        nag_alpha: float = 0,
        interpolate: bool = False,
        loras: list | None = None,
        progress: gr.Progress = gr.Progress(),  # noqa: B008
    ) -> Iterator[Outputs]:
        """Animate a still image into a short video with Wan2.1 image-to-video, with community LoRAs.

        Args:
            image: the first frame: a JPEG, PNG or WEBP picture (sides >= 16 px, aspect ratio <= 4:1).
            prompt: what should happen in the video, in plain words (1-2000 characters).
            prompt_extend: rewrite the prompt into a richer description before generating.
            seed: -1 for a random seed, or 0..2147483647 to repeat a result.
            video_length: clip length in seconds: "5" (81 frames) or "10" (161 frames) at 16 fps.
            negative_prompt: what to avoid; empty = the model's default list of artifacts.
            steps: denoising steps (1-100); 0 = the speed mode's default.
            guidance: classifier-free guidance scale (up to 20); 0 = the speed mode's default.
            speed_mode: "auto" (server default), "quality" (40 steps) or "fast" (distilled, 4 steps).
            prompt_2: what happens in the second 5 s of a 10 s clip; empty = the same prompt.
            last_image: optional end frame (same aspect ratio as image): the clip ends on it.
            nag_scale: fast mode, negative guidance strength (NAG, 1-30); 0 = 11 when NAG runs.
            nag_tau: fast mode, NAG norm cap (1-10); 0 = 2.5.
            nag_alpha: fast mode, NAG blend (0-1); 0 = 0.25.
            interpolate: true = twice the frames at 32 fps, same duration (161 frames for 5 s).
            loras: up to 4 LoRAs, stacked in order: [{"path": a library name, owner/repo/file.safetensors
                on the hub or sha256:<hex>, "scale": -4..4 (default 1)}].

        Returns:
            The MP4 video, its first-frame thumbnail (JPEG), the final prompt used and the seed used.
        """
        values = (prompt, prompt_extend, seed, video_length, negative_prompt, steps, guidance, speed_mode)
        extra = (prompt_2, last_image, nag_scale, nag_tau, nag_alpha, interpolate)
        job = submit(jobs, (image, *values, *extra), api_owner(), loras=loras or None)[0]
        yield from api_stream(Follow(jobs, job, progress))

    return generate_with_loras


def make_extend(jobs: JobService) -> Callable[..., Iterator[Outputs]]:
    """The /extend handler: continue a video (one of ours or an uploaded MP4) with a new prompt."""

    def extend(
        video: str | None,
        prompt: str,
        prompt_extend: bool = False,
        seed: float = -1,
        video_length: str = "5",
        negative_prompt: str | None = None,
        steps: float = 0,
        guidance: float = 0,
        speed_mode: str = AUTO,
        prompt_2: str | None = None,
        last_image: str | None = None,
        nag_scale: float = 0,
        nag_tau: float = 0,
        nag_alpha: float = 0,
        interpolate: bool = False,
        progress: gr.Progress = gr.Progress(),  # noqa: B008
    ) -> Iterator[Outputs]:
        """Continue a video with a new prompt: the next 5 s (or 10 s) start from its last frame.

        Args:
            video: the video to continue: a result of /generate or /extend, or an MP4 (up to 60 s).
            prompt: what should happen next, in plain words (1-2000 characters).
            prompt_extend: rewrite the prompt into a richer description before generating.
            seed: -1 for a random seed, or 0..2147483647 to repeat a result.
            video_length: seconds to add: "5" (80 frames) or "10" (160 frames) at 16 fps.
            negative_prompt: what to avoid; empty = the model's default list of artifacts.
            steps: denoising steps (1-100); 0 = the speed mode's default.
            guidance: classifier-free guidance scale (up to 20); 0 = the speed mode's default.
            speed_mode: "auto" (server default), "quality" (40 steps) or "fast" (distilled, 4 steps).
            prompt_2: what happens in the second 5 s when adding 10 s; empty = the same prompt.
            last_image: optional end frame (the video's aspect ratio): the added part ends on it.
            nag_scale: fast mode, negative guidance strength (NAG, 1-30); 0 = 11 when NAG runs.
            nag_tau: fast mode, NAG norm cap (1-10); 0 = 2.5.
            nag_alpha: fast mode, NAG blend (0-1); 0 = 0.25.
            interpolate: true = the added frames interpolated to 32 fps (the video must be 32 fps).

        Returns:
            The joined MP4 (the video's frames unchanged, then the new ones), its first-frame
            thumbnail, the final prompt used and the seed used. While it runs, the thumbnail slot
            streams a live preview (animated WEBP).
        """
        values = (prompt, prompt_extend, seed, video_length, negative_prompt, steps, guidance, speed_mode)
        extra = (prompt_2, last_image, nag_scale, nag_tau, nag_alpha, interpolate)
        job = submit_extend(jobs, video, (*values, *extra), api_owner())
        yield from api_stream(Follow(jobs, job, progress))

    return extend


def example_runner(generate: Callable[..., Iterator[Outputs]]) -> Callable[..., Iterator[Outputs]]:
    """gr.Examples fills image, prompt, seed and length; the rest take their defaults."""

    def run_example(
        image: str,
        prompt: str,
        seed: float,
        video_length: str,
        progress: gr.Progress = gr.Progress(),  # noqa: B008
    ) -> Iterator[Outputs]:
        yield from generate(image, prompt, False, seed, video_length, progress=progress)

    return run_example
