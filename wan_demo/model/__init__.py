"""model: the diffusers pipeline. Load it once (tiny or real weights), run one 81-frame segment
through the pipeline's own sampler, memory plans (offload, fp8), speed modes (fast LoRA, step
cache, compile) and multi-GPU (torchrun + context parallelism).

May import: core, torch, diffusers, transformers, accelerate, peft. Not media, prompt, jobs, web, rest.
"""
