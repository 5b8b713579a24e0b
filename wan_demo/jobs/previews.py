"""A running job's live previews in storage, so every process (API nodes, REST, the UI) can show them.

Each preview is a new file, `outputs/<ui|rest>/<request_id>.preview.<n>.webp` (an animated WEBP,
media/preview.py), whose location goes into the job row with the progress: readers compare
locations instead of polling file times, which works for a bucket too. The previous file is kept one
more round, so a reader that has just seen its location can still fetch it; all go when the job ends.
Writing is best effort: a storage hiccup skips a preview, never the generation.
"""

from __future__ import annotations

import logging

import numpy as np

from wan_demo.core.settings import FPS
from wan_demo.jobs.storage.base import Storage
from wan_demo.media.preview import TEMPORAL_FACTOR, encode_preview

log = logging.getLogger(__name__)

PREVIEW_FPS = FPS / TEMPORAL_FACTOR  # one latent frame stands for 4 video frames
KEEP = 2  # files kept per job: the newest and the one before it


class PreviewSink:
    def __init__(self, storage: Storage, source: str, request_id: str):
        self.storage, self.request_id = storage, request_id
        self.folder = "ui" if source == "ui" else "rest"  # REST previews never land in Gradio's folder
        self.count = 0
        self._locations: list[str] = []

    def __call__(self, frames: np.ndarray) -> str | None:
        """Store one preview (RGB uint8 frames at latent size); its location, or None if it failed."""
        self.count += 1
        key = f"outputs/{self.folder}/{self.request_id}.preview.{self.count}.webp"
        try:
            location = self.storage.put_bytes(key, encode_preview(frames, PREVIEW_FPS))
        except Exception as e:  # noqa: BLE001  # a preview is never worth a failed generation
            log.warning("preview %s not stored: %s", key, e)
            return None
        self._locations.append(location)
        while len(self._locations) > KEEP:
            self._delete(self._locations.pop(0))
        return location

    def clear(self) -> None:
        """The job ended: its previews go."""
        while self._locations:
            self._delete(self._locations.pop())

    def _delete(self, location: str) -> None:
        try:
            self.storage.delete(location)
        except Exception as e:  # noqa: BLE001  # the sweeper removes what is left
            log.warning("preview %s not deleted: %s", location, e)
