"""prompt: prompt extension with fallbacks (OpenAI-compatible endpoint, local Qwen-VL, offline
rules); extend_prompt() never fails a generation.

May import: core, PIL, numpy, httpx, transformers/torch (lazily, for the local VLM).
"""
