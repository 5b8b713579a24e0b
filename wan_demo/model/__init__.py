"""model: the diffusers pipeline. Load it once (tiny or real weights; a GGUF or single-file
transformer: gguf.py, load.py), run one 81-frame segment through the pipeline's own sampler with
prompt embeddings cached (text_cache.py), memory plans (memory/: offload, fp8, GGUF weights,
the start-up check), speed modes (fast LoRA adapter, step cache, compile), community LoRAs (loras.py:
warm adapters switched per request; lora_library.py, lora_cache.py, lora_files.py: where files come
from and their checks; lora_merge.py: merge-on-load) and multi-GPU (torchrun + context parallelism).

May import: core, torch, diffusers, transformers, accelerate, peft, gguf, safetensors.
Not media, prompt, jobs, web, rest.
"""
