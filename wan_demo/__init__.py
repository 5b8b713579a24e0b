"""wan-demo: Wan2.1 image-to-video (14B, 480P) as a Gradio app, a Gradio API and a REST job API.

Subpackages by role; imports point down this list only (tests/test_structure.py checks it):
server -> web, rest -> jobs -> generate -> model, prompt, media -> core.
"""

__version__ = "0.2.0"
