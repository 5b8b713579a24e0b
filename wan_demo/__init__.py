"""Wan2.1-I2V-14B-480P image-to-video demo: generation core, Gradio UI and REST job API."""

__version__ = "0.1.0"
