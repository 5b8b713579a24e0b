"""core: settings, request types, validation, the run plan. Pure Python + PIL.

Owns: Settings (read once; each field's help, group, unit, choices and range declared in
settings.py, read from env vars and flags by cli.py with rules.py; name lists in choices.py),
GenerationRequest -> validate() -> ValidRequest, InvalidRequest (the one error type for bad
input), plan_run() and the size/frame/seed/ETA maths.
May import: the standard library, PIL. Never gradio, fastapi, starlette, diffusers, torch,
transformers, nor any other wan_demo subpackage.
"""
