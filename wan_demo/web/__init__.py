"""web: the Gradio Blocks UI, its /generate API endpoint (also an MCP tool) and the ZeroGPU bridge.
Layout and wiring only: handlers turn widget values into a ValidRequest and follow the job.

May import: core, jobs, media, generate/model (ZeroGPU bridge only), gradio. Not rest.
"""
