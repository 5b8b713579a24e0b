"""One frozen Settings object, read once from env vars and CLI flags, then passed explicitly.

Every field is an env var `WAN_DEMO_<FIELD>` (upper case) and a CLI flag `--<field>` (dashes for
underscores); the flag wins. Each field is declared with `opt(GROUP, default, "help", ...)`: its
group, one line of help, its unit, its choices or range (core/rules.py Spec). `python app.py
--help`, docs/settings.md (`python -m wan_demo.core.settings_doc`) and the checks that refuse a bad
value before anything loads are all built from that one declaration. Adding a setting: one `opt()`
line in the fitting group, a unit for a number, `choices=` from core/choices.py for a name.
Importing this module reads nothing.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wan_demo.core import choices as C
from wan_demo.core.cli import Parser, SettingsError, file_problem
from wan_demo.core.cli import build_parser as _build_parser
from wan_demo.core.cli import read as _read
from wan_demo.core.rules import device_index, min_chars, networks, opt, problem, spec_of, url

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


ROLES = C.ROLES  # Settings.role: what one process runs (docs/settings.md "scale-out")
MIN_WEBHOOK_SECRET = 32  # characters of Settings.webhook_secret: it keys every client's secret
PRESIGN_MAX_S = 7 * 24 * 3600  # S3 refuses presigned links valid longer than 7 days

# --help sections and docs/settings.md headings, in this order: group -> what it holds
MODEL, MEMORY, SPEED, LORAS, GENERATION = "model", "memory", "speed", "LoRAs", "generation"
PROMPT, OUTPUT, SERVER, OPERATIONS = "prompt", "output", "server", "operations"
REST, SCALE_OUT = "REST", "scale-out"
GROUPS = {
    MODEL: "which weights, on which device, in which dtype",
    MEMORY: "how the model is placed in VRAM and host RAM (wan_demo/model/memory/)",
    SPEED: "speed modes, step cache, attention kernels, compile (wan_demo/model/speed.py)",
    LORAS: "community LoRAs: the library, downloads, warm adapters, merge-on-load (docs/loras.md)",
    GENERATION: "the server's sampling defaults; a request may override them",
    PROMPT: "prompt extension backends (wan_demo/prompt/)",
    OUTPUT: "where results and the job store live, and how long they are kept",
    SERVER: "the HTTP server: address, port, queue and upload limits",
    OPERATIONS: "metrics, probes, graceful drain and log lines (docs/operations.md)",
    REST: "the REST job API: keys, limits, URL inputs, webhooks (wan_demo/rest/)",
    SCALE_OUT: "one API node and many workers: role, PostgreSQL, S3, leases",
}
# flags that are no setting; app.py acts on them after the settings are read and checked
COMMANDS = {
    "doctor": "check this machine instead of serving: torch, GPUs, RAM, disk, which weights are present, "
    "the memory plan it would pick, the download commands; loads no model (exit 0 ready, 1 not)",
}


@dataclass(frozen=True)
class Settings:  # one opt() per setting: group, default, rules, then help=
    # fmt: off
    # -- model and device
    model: str = opt(MODEL, "auto",
        help="weights: auto (the 14B model on CUDA, the tiny test model elsewhere), tiny, a hub id or a "
             "local diffusers folder")
    device: str = opt(MODEL, "auto", choices=C.DEVICES, check=device_index, rule="or cuda:<index>",
        help="where the model runs; auto = cuda when available, else cpu")
    dtype: str = opt(MODEL, "bfloat16", choices=C.DTYPES,
        help="dtype of the transformer and text encoder on the GPU (CLIP and the VAE stay float32)")
    offline: bool = opt(MODEL, False,
        help="never use the network: weights only from the hub cache or a local folder")
    transformer_file: str = opt(MODEL, "",
        help="single-file transformer replacing the repo's: GGUF (Q8_0 ... Q3_K) or .safetensors, a path "
             "or owner/repo/path/file.gguf on the hub; empty = the repo's bf16 weights")
    tiny_max_area: int = opt(MODEL, 192 * 336, unit="pixels", low=16 * 16,
        help="output size budget of the built-in tiny model (its videos are noise)")
    # -- memory (see wan_demo/model/memory/)
    memory_mode: str = opt(MEMORY, "auto", choices=("auto", *C.MEMORY_PLANS),
        help="memory plan; auto = the fastest plan that fits the VRAM and host RAM")
    vram_gb: float = opt(MEMORY, 0.0, unit="GB", low=0,
        help="VRAM the memory plan may use; 0 = the free VRAM torch reports")
    ram_gb: float = opt(MEMORY, 0.0, unit="GB", low=0,
        help="host RAM the memory plan may use; 0 = the available RAM psutil reports")
    # -- speed (see wan_demo/model/speed.py)
    speed_mode: str = opt(SPEED, "auto", choices=("auto", *C.SPEED_MODES),
        help="default speed mode; auto = fast when the LoRA is loaded, else quality (40 steps, guidance)")
    lora: str = opt(SPEED, "",
        help="step-distilled LoRA for fast mode: a .safetensors file, owner/repo or "
             "owner/repo/path/file.safetensors; empty = no fast mode")
    cache: str = opt(SPEED, "off", choices=C.CACHES,
        help="step cache in quality mode; fbcache = FirstBlockCache; magcache = MagCache with the "
             "published Wan2.1 I2V 480P ratios")
    cache_threshold: float = opt(SPEED, 0.05, unit="relative change", low=0, high=1,
        help="FirstBlockCache: a forward is skipped when the first block's output changed less than this")
    magcache_threshold: float = opt(SPEED, 0.12, unit="accumulated ratio error", low=0.01, high=1,
        help="MagCache: a step reuses the cached residual until the error predicted from the published "
             "ratios passes this (the authors' default)")
    magcache_max_skip: int = opt(SPEED, 2, unit="steps", low=1, high=20,
        help="MagCache: at most this many steps in a row reuse one cached residual (K)")
    magcache_retention: float = opt(SPEED, 0.2, unit="fraction of the steps", low=0, high=0.9,
        help="MagCache: the first steps that always run (layout and motion are set there)")
    compile: bool = opt(SPEED, False,
        help="torch.compile the repeated transformer blocks, warmed up at start")
    attention_backend: str = opt(SPEED, "native", choices=C.ATTENTION_BACKENDS,
        help="attention kernels; flash and sage need their package (else native)")
    # -- community LoRAs (see docs/loras.md, wan_demo/model/loras.py)
    lora_dir: Path = opt(LORAS, Path("loras"),
        help="the LoRA library: every .safetensors file in it is offered by name, read at each request")
    lora_cache_gb: float = opt(LORAS, 20.0, unit="GB", low=0,
        help="downloaded and uploaded LoRAs kept in data_dir/loras, least recently used dropped first")
    lora_max_mb: int = opt(LORAS, 2048, unit="MB", low=1,
        help="largest LoRA file accepted from a URL, the hub or an upload")
    lora_fetch_timeout_s: float = opt(LORAS, 600.0, unit="seconds", above=0,
        help="give up on one LoRA download (URL or hub) after this long")
    lora_warm_gb: float = opt(LORAS, 2.0, unit="GB", low=0,
        help="adapter weights kept loaded for reuse, least recently used dropped first; the memory plan "
             "counts it")
    lora_merge_after: int = opt(LORAS, 0, unit="runs", low=0,
        help="merge a LoRA set into the weights after this many runs in a row with it; 0 = never")
    # -- sampling defaults (0 = the speed mode's default)
    steps: int = opt(GENERATION, 0, unit="steps", low=0, high=100,
        help="denoising steps per 5 s segment; 0 = the mode's (quality 40, fast 4)")
    guidance: float = opt(GENERATION, 0.0, unit="scale", low=0, high=20,
        help="classifier-free guidance scale; 0 = the mode's (quality 5, fast 1)")
    shift: float = opt(GENERATION, 0.0, unit="factor", low=0, high=20,
        help="flow-matching shift of the scheduler; 0 = the mode's (quality 3, fast 5)")
    fps: int = opt(GENERATION, FPS, unit="frames per second", low=4, high=60,
        help="output frame rate; a segment stays 81 frames, so the clip's duration changes with it")
    colour_match: float = opt(GENERATION, 1.0, unit="fraction", low=0, high=1,
        help="colour match at the seams of chained segments: 0 = off, 1 = full transfer")
    # -- live preview (media/preview.py)
    preview_every_s: float = opt(GENERATION, 1.0, unit="seconds", low=0,
        help="at most one live preview per this much denoising time; 0 = no previews")
    # -- prompt extension (see wan_demo/prompt/)
    prompt_extender: str = opt(PROMPT, "auto", choices=C.PROMPT_EXTENDERS,
        help="prompt extension; auto = openai when configured, else local when installed, else rules; "
             "off = the prompt as typed")
    prompt_model: str = opt(PROMPT, "Qwen/Qwen2.5-VL-3B-Instruct",
        help="local vision-language model for prompt extension: a hub id or a folder")
    openai_base_url: str = opt(PROMPT, "", check=url("http", "https"), rule="empty or http(s)://...",
        secret="password",
        help="OpenAI-compatible chat endpoint, e.g. https://host/v1; empty = none")
    openai_model: str = opt(PROMPT, "",
        help="model name at that endpoint")
    openai_api_key: str = opt(PROMPT, "", secret="always", file="openai_api_key_file",
        help="Bearer key for that endpoint")
    openai_api_key_file: str = opt(PROMPT, "", file_for="openai_api_key",
        help="file holding openai_api_key, read once at start")
    prompt_timeout_s: float = opt(PROMPT, 30.0, unit="seconds", above=0,
        help="give up on one prompt-extension call after this long (the next backend runs)")
    # -- output and data
    output_dir: Path = opt(OUTPUT, Path("outputs"),
        help="folder for each generation's MP4, thumbnail and JSON")
    data_dir: Path = opt(OUTPUT, Path("data"),
        help="folder for the SQLite job store and stored input images")
    output_ttl_h: float = opt(OUTPUT, 24.0, unit="hours", low=0,
        help="outputs and stored input images older than this are deleted; 0 = keep")
    history_ttl_h: float = opt(OUTPUT, 168.0, unit="hours", low=0,
        help="finished jobs are forgotten after this long; 0 = keep")
    # -- server
    host: str = opt(SERVER, "127.0.0.1",
        help="address to listen on; 0.0.0.0 = every interface")
    port: int = opt(SERVER, 7860, unit="port", low=1, high=65535,
        help="TCP port of the UI, the Gradio API and the REST API")
    queue_max_size: int = opt(SERVER, 16, unit="jobs", low=1,
        help="waiting generations before new ones are refused as queue full")
    max_file_size_mb: int = opt(SERVER, 20, unit="MB", low=1,
        help="largest upload or request body")
    dist_timeout_s: float = opt(SERVER, 300.0, unit="seconds", above=0,
        help="multi-GPU (torchrun): a rank silent this long in a collective fails the request")
    # -- operations (docs/operations.md)
    drain_s: float = opt(OPERATIONS, 25.0, unit="seconds", low=0,
        help="on SIGTERM: the running job may take this long to finish (else it goes back to the queue), "
             "in-flight requests too")
    metrics_port: int = opt(OPERATIONS, 0, unit="port", low=0, high=65535,
        help="a worker's own /metrics, /healthz and /readyz on this port (bound to host); 0 = off")
    metrics_token: str = opt(OPERATIONS, "", secret="always", file="metrics_token_file",
        help="Bearer token /metrics asks for; empty = /metrics is open")
    metrics_token_file: str = opt(OPERATIONS, "", secret_file=True,
        help="file whose first line is metrics_token, read at start; wins over WAN_DEMO_METRICS_TOKEN")
    log_format: str = opt(OPERATIONS, "text", choices=C.LOG_FORMATS,
        help="text, or json = one JSON object per line with request id, job id and owner hash")
    # -- REST API (see wan_demo/rest/)
    api_keys: str = opt(REST, "", secret="always", file="api_key_file",
        help="comma-separated Bearer keys or sha256:<hex> hashes; none (and no key file) = REST disabled")
    api_key_file: str = opt(REST, "", secret_file=True,
        help="file with one key or sha256:<hex> per line (# comments), read at start")
    allow_url_inputs: bool = opt(REST, False,
        help="accept https URLs in path_input_image (fetched once at submit, SSRF-guarded)")
    max_active_per_key: int = opt(REST, 4, unit="requests", low=1,
        help="queued + processing requests per API key")
    max_attempts: int = opt(REST, 2, unit="runs", low=1,
        help="runs of a job that reached denoising before a crash fails it (worker_lost)")
    public_url: str = opt(REST, "", check=url("http", "https"), rule="empty or http(s)://...",
        help="base URL of outcome links; empty = the request's own host")
    submits_per_min: int = opt(REST, 60, unit="requests per minute", low=0,
        help="REST submits per API key per minute (429 + Retry-After beyond); 0 = no limit")
    webhook_secret: str = opt(REST, "", secret="always", file="webhook_secret_file",
        check=min_chars(MIN_WEBHOOK_SECRET), rule=f"at least {MIN_WEBHOOK_SECRET} characters",
        help="master secret each key's webhook signing secret derives from; empty = no webhooks")
    webhook_secret_file: str = opt(REST, "", file_for="webhook_secret",
        help="file holding webhook_secret, read once at start")
    webhook_allow_private: str = opt(REST, "", check=networks, rule="IP addresses or networks",
        help="comma-separated IPs or networks (10.0.0.0/8, ...) webhooks may reach besides public ones")
    webhook_retry_s: float = opt(REST, 10.0, unit="seconds", above=0,
        help="first webhook retry after this long; doubles up to 1 h, for 24 h")
    # -- scale-out (see docs/settings.md "scale-out")
    role: str = opt(SCALE_OUT, "all", choices=C.ROLES,
        help="what this process runs: all = UI + REST + worker; api = no model; worker = no HTTP")
    database_url: str = opt(SCALE_OUT, "", check=url("postgresql", "postgres"), rule="empty or postgresql://...",
        secret="password", file="database_url_file",
        help="job store; empty = SQLite in data_dir; postgresql://user@host:5432/db = PostgreSQL")
    database_url_file: str = opt(SCALE_OUT, "", file_for="database_url",
        help="file holding database_url (with its password), read once at start")
    database_pool_size: int = opt(SCALE_OUT, 8, unit="connections", low=1,
        help="PostgreSQL connections per process")
    database_timeout_s: float = opt(SCALE_OUT, 5.0, unit="seconds", above=0,
        help="wait this long for a database connection, then answer 503")
    worker_id: str = opt(SCALE_OUT, "",
        help="this worker's name in job records and the workers table; empty = host:pid")
    lease_s: float = opt(SCALE_OUT, 30.0, unit="seconds", low=1,
        help="a running job's lease, renewed every lease_s / 3; expired = worker lost")
    storage_url: str = opt(SCALE_OUT, "", check=url("s3"), rule="empty or s3://bucket/prefix",
        help="where files go; empty = output_dir and data_dir/inputs on disk; s3://bucket/prefix = S3 "
             "(credentials from the AWS env vars)")
    presign_ttl_s: int = opt(SCALE_OUT, 0, unit="seconds", low=0, high=PRESIGN_MAX_S,
        help="S3 only: outcome URLs are presigned links valid this long; 0 = served through the API")
    # fmt: on

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


def from_env(argv: list[str] | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from `environ` (default os.environ) then CLI `argv` (which wins); SettingsError (exit
    status 2, a SystemExit) lists every problem, one line each. --help prints and exits 0."""
    settings = _read(Settings, GROUPS, argv or [], os.environ if environ is None else environ, COMMANDS)
    if problems := cross_problems(settings):
        raise SettingsError(problems)
    return settings


def from_cli(argv: list[str] | None = None) -> Settings:
    """from_env for a command: problems go to stderr as `error: ...` lines, then exit status 2."""
    try:
        return from_env(sys.argv[1:] if argv is None else argv)
    except SettingsError as e:
        print("\n".join(f"error: {p}" for p in e.problems), file=sys.stderr)
        raise


def build_parser() -> Parser:
    return _build_parser(Settings, GROUPS, COMMANDS)


def settings_problems(settings: Settings) -> list[str]:
    """Every rule a Settings built in code breaks (from_env checked them as it read), in words."""
    out = []
    for f in dataclasses.fields(Settings):
        spec, value = spec_of(f), getattr(settings, f.name)
        if why := problem(spec, value):
            out.append(f"{f.name} {'(value hidden)' if spec.secret else repr(value)}: {why}")
        elif (spec.file_for or spec.secret_file) and value and (why := file_problem(Path(value))):
            out.append(f"{f.name} {str(value)!r}: {why}")  # a path, never the secret it holds
    return out + cross_problems(settings)


def cross_problems(settings: Settings) -> list[str]:
    """Settings that are fine alone and cannot work together."""
    out = []
    if settings.model == "tiny" and settings.transformer_file:  # never a silent fall back to the tiny model
        out.append(
            "transformer_file is set but model is 'tiny': set WAN_DEMO_MODEL to the diffusers repo or "
            f"folder the file belongs to (e.g. {REAL_MODEL_ID}), or unset WAN_DEMO_TRANSFORMER_FILE"
        )
    if settings.speed_mode == "fast" and not settings.lora and settings.role != "api":
        out.append(
            "speed_mode 'fast' needs the step-distilled LoRA: set WAN_DEMO_LORA, or use auto or quality"
        )
    return out
