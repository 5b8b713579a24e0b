"""model.memory: fit the pipeline to the machine's VRAM and host RAM.

estimate.py (component sizes from the real configs on the meta device, activation constants),
weights.py (weight formats the transformer can be stored in: bf16, fp8, GGUF types), plan.py
(strategies and the planner that picks the fastest one that fits), start.py (the budget from
torch/psutil, the check before loading), apply.py (puts a chosen plan onto a loaded pipeline).

May import: core, model, torch, diffusers, accelerate, psutil (lazily where heavy).
"""
