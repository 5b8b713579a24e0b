"""The page's batch strip: the videos of one submit with num_videos > 1, side by side.

A batch is several jobs of the visitor (jobs/service.py submit_batch, one seed each). The strip
shows the batch of the result the page shows (after Generate: the batch's first video), each as its
video once done or a grey stand-in while it waits or runs, captioned with its seed and status.
Clicking one opens it as the page's result, where Extend, Use last frame, Restore and Delete act on
it, as for any history item. Private events; the strip is hidden when the result is no batch's.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from wan_demo.core.controls import NUM_VIDEOS
from wan_demo.jobs.common import Status
from wan_demo.web.history import ICONS, History, PageView, owner_of


def strip() -> tuple[gr.Gallery, gr.State]:
    gallery = gr.Gallery(
        label="This batch: click one to open it (then extend, restore or delete it)", elem_id="batch",
        columns=NUM_VIDEOS.high, height=240, preview=False, allow_preview=False, interactive=False,
        object_fit="contain", visible=False,
    )  # fmt: skip
    return gallery, gr.State([])


class BatchStrip:
    def __init__(self, history: History):
        self.history = history

    def show(self, token: Any, view: PageView, profile: gr.OAuthProfile | None = None):
        """(gallery update, request ids in gallery order) for the batch of the page's result."""
        owner = owner_of(token, profile)
        job = self.history.find(view.job_id, owner) if view.job_id else None
        if job is None or not job.batch_id:
            return gr.update(visible=False, value=None), []
        jobs, _ = self.history.jobs.list(owner, limit=int(NUM_VIDEOS.high), batch_id=job.batch_id)
        jobs.sort(key=lambda j: (j.created_at, j.request_id))
        items = [(self._item(j), self._caption(j)) for j in jobs]
        return gr.update(visible=True, value=items), [j.request_id for j in jobs]

    def wire(self, gallery: gr.Gallery, ids: gr.State, token, view, job_box, message, then_follow) -> None:
        """A click on a video opens it (then the follower shows it, and the strip again)."""
        private = {"api_visibility": "private"}
        then_follow(gallery.select(self.open, [token, view, ids], [job_box, message], **private))

    def open(self, token: Any, view: PageView, ids: list[str], evt: gr.SelectData,
             profile: gr.OAuthProfile | None = None):  # fmt: skip
        """The clicked video becomes the page's result (job id for the URL, message)."""
        index = evt.index if isinstance(evt.index, int) else -1
        job = self.history.find(ids[index], owner_of(token, profile)) if 0 <= index < len(ids) else None
        view.job_id = job.request_id if job else view.job_id
        return view.job_id, ""

    def _item(self, job) -> Any:
        if job.status == Status.SUCCESS:
            try:
                video, _ = self.history.jobs.local_files(job)
                if video:
                    return video
            except (OSError, ValueError):
                pass
        return self.history.picture(job)  # the grey stand-in

    @staticmethod
    def _caption(job) -> str:
        seed = job.seed_used if job.seed_used is not None else job.params.get("seed", -1)
        return f"{ICONS.get(job.status, '')} seed {seed} · {job.status}"
