"""Gradio Blocks UI: layout and event wiring only (placeholder until the Gradio issue lands)."""

from __future__ import annotations

import gradio as gr

from wan_demo.jobs import Worker
from wan_demo.settings import Settings


def build_ui(worker: Worker, settings: Settings) -> gr.Blocks:
    with gr.Blocks(title="Wan2.1 image-to-video") as demo:
        gr.Markdown(f"**{worker.engine.banner}**")
    return demo
