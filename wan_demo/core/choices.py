"""The names an enumerated setting may take: one list each, read by Settings (to refuse a typo before
anything loads) and by the code that acts on the name (model/, prompt/, server.py).

core may not import model/, so the lists live here; tests/test_cli.py checks that the strategy
table, the cache configs, the attention backends and the prompt backends name exactly these.
"""

from __future__ import annotations

DEVICES = ("auto", "cuda", "cpu")  # plus "cuda:<index>" for one GPU (see core/rules.py device)
DTYPES = ("bfloat16", "float16", "float32")  # torch dtype names (transformer + text encoder)
# model/memory/plan.py STRATEGIES, fastest first (memory_mode = "auto" or one of these)
MEMORY_PLANS = (
    "resident", "resident_te_cpu", "model_offload", "fp8_resident", "fp8_resident_te_cpu",
    "fp8_model_offload", "group_block", "fp8_group_block", "fp8_group_block_te_gpu",
    "fp8_group_block_te_cpu", "group_leaf", "fp8_group_leaf", "sequential",
)  # fmt: skip
SPEED_MODES = ("quality", "fast")  # core/plan.py MODES
CACHES = ("off", "fbcache", "magcache")  # model/speed.py cache_config
ATTENTION_BACKENDS = ("native", "flash", "sage")  # model/speed_setup.py BACKENDS
PROMPT_BACKENDS = ("openai", "local", "rules")  # prompt/extend.py RUNNERS, in auto's order
PROMPT_EXTENDERS = ("auto", *PROMPT_BACKENDS, "off")
LOG_FORMATS = ("text", "json")  # jobs/logs.py configure(): plain lines or one JSON object per line
ROLES = ("all", "api", "worker")  # what one process runs (server.py, docs/settings.md "scale-out")
