"""One frozen Settings object, read once from env vars and CLI flags, then passed explicitly.

Every field can be set as an env var `WAN_DEMO_<FIELD>` (upper case) or a CLI flag `--<field>`
(dashes for underscores); the CLI wins. Importing this module reads nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, get_type_hints

# --- model constants (Wan2.1-I2V-14B-480P) -------------------------------------------------
REAL_MODEL_ID = "Wan-AI/Wan2.1-I2V-14B-480P-Diffusers"
API_MODEL_ID = "Wan-AI_Wan2.1-I2V-14B-480P"  # the hosted provider's model name
FPS = 16  # frames per second the model was trained at
SEGMENT_FRAMES = 81  # frames per pass (training length, 5.06 s at 16 fps); must be 4k+1
NATIVE_WIDTH, NATIVE_HEIGHT = 832, 480  # the 480P training size (landscape)
MAX_AREA = NATIVE_WIDTH * NATIVE_HEIGHT  # pixel budget at 480P; aspect ratio is kept inside it
SIZE_MULTIPLE = 16  # VAE factor 8 x patch size 2
SEED_MAX = 2**31 - 1  # seeds are 0..SEED_MAX; -1 means "draw one"
VIDEO_LENGTHS_S = (5, 10)  # offered clip lengths in seconds
MAX_PROMPT_CHARS = 2000  # longer prompts are cut by the 512-token text encoder anyway
TEXT_TOKENS = 512  # max_sequence_length; Wan's attention assumes exactly 512 text tokens
ROLES = ("all", "api", "worker")  # Settings.role: what one process runs (README "Scale out")


@dataclass(frozen=True)
class Settings:
    # -- model and device
    model: str = "auto"  # "auto" | "tiny" | hub id | local diffusers folder
    device: str = "auto"  # "auto" | "cuda" | "cpu"; auto = cuda when available
    dtype: str = "bfloat16"  # transformer + text encoder dtype on GPU (VAE, CLIP stay fp32)
    offline: bool = False  # never try the network when loading weights
    # single-file transformer replacing the repo's: GGUF (Q8_0 ... Q3_K) or original-layout
    # .safetensors; local path or owner/repo/path/file.gguf on the hub; "" = the repo's bf16 weights
    transformer_file: str = ""
    tiny_max_area: int = 192 * 336  # pixel budget of the built-in tiny model (noise output)
    # -- memory (see wan_demo/model/memory/)
    memory_mode: str = "auto"  # auto | resident | model_offload | group_block | group_leaf | fp8 ...
    vram_gb: float = 0.0  # 0 = read free VRAM from torch
    ram_gb: float = 0.0  # 0 = read available host RAM from psutil
    # -- speed (see wan_demo/model/speed.py)
    speed_mode: str = "auto"  # "auto" | "quality" | "fast"; auto = fast when the LoRA is available
    lora: str = ""  # step-distilled LoRA: hub id or local .safetensors; "" = none
    cache: str = "off"  # "off" | "fbcache" | "magcache" (quality mode only)
    cache_threshold: float = 0.05  # FirstBlockCache relative-change threshold
    compile: bool = False  # torch.compile the repeated transformer blocks, warmed up at start
    attention_backend: str = "native"  # "native" | "flash" | "sage" (when installed)
    # -- sampling defaults (0 = the speed mode's default)
    steps: int = 0  # denoising steps
    guidance: float = 0.0  # classifier-free guidance scale
    shift: float = 0.0  # flow-matching shift of the scheduler
    fps: int = FPS
    colour_match: float = 1.0  # seam colour match of chained segments: 0 = off .. 1 = full transfer
    # -- live preview (media/preview.py)
    preview_every_s: float = 1.0  # at most one live preview per this many seconds of denoising (0 = off)
    # -- prompt extension (see wan_demo/prompt/)
    prompt_extender: str = "auto"  # "auto" | "local" | "openai" | "rules" | "off"
    prompt_model: str = "Qwen/Qwen2.5-VL-3B-Instruct"  # local VLM: hub id or folder
    openai_base_url: str = ""  # OpenAI-compatible chat endpoint, e.g. https://host/v1
    openai_model: str = ""
    openai_api_key: str = ""
    prompt_timeout_s: float = 30.0
    # -- output and data
    output_dir: Path = Path("outputs")  # MP4, thumbnail and JSON per generation
    data_dir: Path = Path("data")  # SQLite job store, stored input images (local storage)
    output_ttl_h: float = 24.0  # outputs and stored input images older than this are deleted (0 = keep)
    history_ttl_h: float = 168.0  # finished jobs are forgotten after this many hours (0 = keep)
    # -- server
    host: str = "127.0.0.1"
    port: int = 7860
    queue_max_size: int = 16  # waiting generations before "queue full"
    max_file_size_mb: int = 20  # uploads and request bodies
    dist_timeout_s: float = 300.0  # multi-GPU: a rank silent this long in a collective fails the request
    # -- operations (docs/operations.md)
    drain_s: float = 25.0  # SIGTERM: seconds the running job may take to finish before it is handed back
    metrics_port: int = 0  # a worker's own /metrics, /healthz, /readyz on this port (0 = off)
    metrics_token: str = ""  # secret: /metrics wants `Authorization: Bearer <it>` ("" = open); env only
    metrics_token_file: str = ""  # file holding that token (first line), instead of the env var
    log_format: str = "text"  # "text" | "json" (one JSON object per line: request id, job id, owner hash)
    # -- REST API (see wan_demo/rest/)
    api_keys: str = ""  # comma-separated Bearer keys (or sha256:<hex> hashes)
    api_key_file: str = ""  # file with one key (or sha256:<hex>) per line
    allow_url_inputs: bool = False  # accept https URLs in path_input_image (SSRF-guarded)
    max_active_per_key: int = 4  # queued + processing requests per API key
    max_attempts: int = 2  # runs of a job that reached denoising before a crash fails it (worker_lost)
    public_url: str = ""  # base URL for outcome links; "" = the request's own host
    submits_per_min: int = 60  # REST submits per API key per minute (429 + Retry-After beyond); 0 = off
    webhook_secret: str = ""  # master secret; each key's signing secret is derived from it; "" = no webhooks
    webhook_allow_private: str = ""  # IPs / networks (10.0.0.0/8, ...) webhooks may reach besides public ones
    webhook_retry_s: float = 10.0  # first webhook retry after this many seconds; doubles up to 1 h, for 24 h
    # -- scale-out (see README "Scale out")
    role: str = "all"  # "all" (UI + REST + worker, one process) | "api" (no model) | "worker" (no UI)
    database_url: str = ""  # "" = SQLite in data_dir; postgresql://user:pass@host:5432/db = PostgreSQL
    database_pool_size: int = 8  # PostgreSQL connections per process (psycopg_pool max_size)
    database_timeout_s: float = 5.0  # wait for a database connection this long, then answer 503
    worker_id: str = ""  # this worker's name in qworker_id and the workers table; "" = host:pid
    lease_s: float = 30.0  # a running job's lease, renewed every lease_s / 3; expired = worker lost
    storage_url: str = ""  # "" = output_dir + data_dir/inputs on disk; s3://bucket/prefix = S3 (AWS env vars)
    presign_ttl_s: int = (
        0  # S3 only: outcome URLs are presigned links valid this many seconds; 0 = via the API
    )

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


ENV_PREFIX = "WAN_DEMO_"


def _convert(kind: Any, raw: str) -> Any:
    if kind is bool:
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off", ""):
            return False
        raise ValueError(f"expected a boolean, got {raw!r}")
    if kind is Path:
        return Path(raw)
    return kind(raw)


def _field_types() -> dict[str, Any]:
    hints = get_type_hints(Settings)
    return {f.name: hints[f.name] for f in fields(Settings)}


def from_env(argv: list[str] | None = None, environ: dict[str, str] | None = None) -> Settings:
    """Read Settings from `environ` (default os.environ) then CLI `argv` (which wins)."""
    environ = os.environ if environ is None else environ
    types = _field_types()
    values: dict[str, Any] = {}
    for name, kind in types.items():
        raw = environ.get(ENV_PREFIX + name.upper())
        if raw is not None:
            try:
                values[name] = _convert(kind, raw)
            except ValueError as e:
                raise SystemExit(f"{ENV_PREFIX}{name.upper()}={raw!r}: {e}") from None
    parser = build_parser()
    args = parser.parse_args(argv or [])
    values.update({k: v for k, v in vars(args).items() if v is not None})
    return Settings(**values)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Wan2.1 I2V 480P demo (Gradio UI + REST API)")
    defaults = Settings()
    for name, kind in _field_types().items():
        flag = "--" + name.replace("_", "-")
        default = getattr(defaults, name)
        if kind is bool:
            parser.add_argument(
                flag,
                dest=name,
                default=None,
                action=argparse.BooleanOptionalAction,
                help=f"(default {default}; env {ENV_PREFIX}{name.upper()})",
            )
        else:
            parser.add_argument(
                flag,
                dest=name,
                default=None,
                type=lambda s, k=kind: _convert(k, s),
                help=f"(default {default!s}; env {ENV_PREFIX}{name.upper()})",
            )
    return parser
