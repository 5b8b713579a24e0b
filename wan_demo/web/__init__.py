"""web: the Gradio Blocks UI, its /generate API endpoint (also an MCP tool) and the ZeroGPU bridge.
Layout and wiring only: handlers turn widget values into a ValidRequest and follow the job. The
page's memory (per-visitor owner, `?job=` links, history, restore, delete, copy as code) lives in
owners.py (the ownership rule), history.py, restore.py, code_snippets.py, page.py and panels.py; the
LoRA rows in lora_panel.py.

May import: core, jobs, media, generate/model (ZeroGPU bridge only), gradio. Not rest.
"""
