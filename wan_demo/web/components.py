"""Gradio components adjusted for hostile input.

gr.Image decodes an upload before any handler runs; when that fails Gradio's own 400 quotes the
server's temp path, the handler's name and the component list. `guarded_upload` makes it name the
rule instead. (A gr.Image subclass would do the same, but Gradio writes a .pyi file beside the
module of every component class it sees defined: importing must not write files.)
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from wan_demo.media.image import FORMATS_RULE

UPLOAD_ERROR = f"image: is {FORMATS_RULE}"


def guarded_upload(image: gr.Image) -> gr.Image:
    """`image` with its preprocessing answering decode failures with the rule (never a server
    path or a handler name)."""
    decode = image.preprocess

    def preprocess(payload: Any) -> Any:
        try:
            return decode(payload)
        except gr.Error:
            raise
        except Exception:  # noqa: BLE001  # whatever PIL raised, the client learns only the rule
            raise gr.Error(UPLOAD_ERROR, title="Invalid input") from None

    image.preprocess = preprocess
    return image
