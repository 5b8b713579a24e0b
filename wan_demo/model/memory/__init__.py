"""model.memory: fit the pipeline to the machine's VRAM and host RAM.

estimate.py (the real component configs, activation constants), sizes.py (component sizes from the
real tensor list, pinned copies), host.py (host RAM per phase as a plan is applied), weights.py (weight
formats the transformer can be stored in: bf16, fp8, GGUF types), plan.py (strategies and the planner
that picks the fastest one that fits), start.py (the budget from torch/psutil, the check before
loading), apply.py (puts a chosen plan onto a loaded pipeline).

May import: core, model, torch, diffusers, accelerate, psutil (lazily where heavy).
"""
