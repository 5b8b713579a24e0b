""" "Copy as code": the current form as ready-to-run snippets, in the docs' shapes (docs/web-ui.md
"Gradio API", docs/rest-api.md, docs/architecture.md "Generate from Python").

Values are written as literals by the language's own quoting (Python `repr`, JSON, then POSIX
shell quoting with shlex.quote), so quotes, backslashes, newlines and any Unicode in a prompt give
code that runs as shown.
"""

from __future__ import annotations

import json
import math
import re
import shlex
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

from wan_demo.core.settings import API_MODEL_ID

IMAGE_MARK = "@@IMAGE@@"  # where the base64 of the picture goes in the REST body
LAST_MARK = "@@LASTIMAGE@@"  # ... and of the end frame
HOST_RE = re.compile(r"[A-Za-z0-9.-]+(:\d{1,5})?|\[[0-9A-Fa-f:.]+\](:\d{1,5})?")
DEFAULT_URL = "http://127.0.0.1:7860/"


@dataclass(frozen=True)
class FormValues:
    """The /generate inputs after the image, as the widgets hold them (0 / "" / "auto" = default)."""

    prompt: str
    prompt_extend: bool
    seed: int
    video_length: str  # "5" | "10"
    negative_prompt: str
    steps: int
    guidance: float
    speed_mode: str
    prompt_2: str = ""  # the second 5 s of a 10 s clip; "" = the same prompt
    last_image: str = ""  # the end frame's file name; "" = none (issue 24, like the three below)
    nag_scale: float = 0.0  # 0 = unset
    nag_tau: float = 0.0
    nag_alpha: float = 0.0
    interpolate: bool = False
    loras: tuple[dict, ...] = ()  # {"path", "scale"} per LoRA row in use (web/lora_panel.py)

    @classmethod
    def from_widgets(
        cls, prompt, extend, seed, length, negative, steps, guidance, mode, prompt_2=None, last_image="",
        nag_scale=0, nag_tau=0, nag_alpha=0, interpolate=False,
    ) -> FormValues:  # fmt: skip
        return cls(
            prompt=prompt or "", prompt_extend=bool(extend), seed=int(_number(seed, -1)),
            video_length=str(length or "5"), negative_prompt=negative or "", steps=int(_number(steps, 0)),
            guidance=_number(guidance, 0.0), speed_mode=mode or "auto", prompt_2=prompt_2 or "",
            last_image=last_image or "", nag_scale=_number(nag_scale, 0.0), nag_tau=_number(nag_tau, 0.0),
            nag_alpha=_number(nag_alpha, 0.0), interpolate=bool(interpolate),
        )  # fmt: skip

    def nag(self) -> dict[str, float]:
        return {k: getattr(self, k) for k in ("nag_scale", "nag_tau", "nag_alpha") if getattr(self, k)}


def _number(value: Any, default: float) -> float:
    """A widget's number for a snippet: `default` for None, text, infinity, NaN or a huge integer."""
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return default
    return number if math.isfinite(number) else default


def image_name(path: str | None) -> str:
    """The picture's file name for the snippet (the user has it under that name), or a stand-in."""
    name = PurePath(path).name if path else ""
    return name or "input.jpg"


def base_url(public_url: str, host: str | None, scheme: str | None) -> str:
    """Where this server answers: Settings.public_url, else the Host the browser used."""
    if public_url:
        return public_url.rstrip("/") + "/"
    if host and HOST_RE.fullmatch(host):
        return f"{'https' if scheme == 'https' else 'http'}://{host}/"
    return DEFAULT_URL


def gradio_client_snippet(v: FormValues, url: str, image: str) -> str:
    args = {"image": f"handle_file({image!r})"}
    for name in ("prompt", "prompt_extend", "seed", "video_length", "negative_prompt", "steps", "guidance"):
        args[name] = repr(getattr(v, name))
    args["speed_mode"] = repr(v.speed_mode)  # the /generate parameters, in API order
    if v.prompt_2:
        args["prompt_2"] = repr(v.prompt_2)
    if v.last_image:  # issue 24's parameters come after prompt_2 (keywords: any order)
        args["last_image"] = f"handle_file({v.last_image!r})"
    args |= {name: repr(value) for name, value in v.nag().items()}
    if v.interpolate:
        args["interpolate"] = "True"
    if v.loras:  # the LoRA endpoint: /generate's parameters, then the list of LoRAs
        args["loras"] = repr([dict(lora) for lora in v.loras])
    lines = "".join(f"    {name}={value},\n" for name, value in args.items())
    endpoint = "/generate_with_loras" if v.loras else "/generate"
    return (
        "from gradio_client import Client, handle_file\n\n"
        f"client = Client({url!r})\n"
        "video, thumbnail, final_prompt, seed_used = client.predict(\n"
        f'{lines}    api_name="{endpoint}",\n)\n'
        "print(video, thumbnail, final_prompt, seed_used)\n"
    )


def rest_curl_snippet(v: FormValues, url: str, image: str) -> str:
    payload = {
        "prompt": v.prompt, "path_input_image": IMAGE_MARK, "video_length": int(v.video_length),
        "seed": v.seed, "prompt_extend": v.prompt_extend,
    }  # fmt: skip
    if v.prompt_2:
        payload["prompt_2"] = v.prompt_2
    mode = None if v.speed_mode == "auto" else v.speed_mode
    controls = dict(negative_prompt=v.negative_prompt or None, num_inference_steps=v.steps or None,
                    guidance_scale=v.guidance or None, speed_mode=mode, **v.nag(),
                    interpolate=2 if v.interpolate else None)  # fmt: skip
    payload |= {name: value for name, value in controls.items() if value is not None}
    if v.last_image:
        payload["path_last_image"] = LAST_MARK
    if v.loras:
        payload["loras"] = [dict(lora) for lora in v.loras]
    body = json.dumps({"model": API_MODEL_ID, "payload": payload}, ensure_ascii=False)
    data = shlex.quote(body)
    for mark, file in ((IMAGE_MARK, image), (LAST_MARK, v.last_image)):  # "$(base64 ...)" in the JSON
        data = data.replace(json.dumps(mark), '"\'"$(base64 -w0 ' + shlex.quote(file) + ')"\'"')
    note = ""
    return (
        f"export WAN={shlex.quote(url.rstrip('/'))} WAN_KEY=change-me  # a key from WAN_DEMO_API_KEYS\n{note}"
        'curl -sS "$WAN/api/v1/apikey/requests" -H "Authorization: Bearer $WAN_KEY" '
        '-H "Content-Type: application/json" \\\n'
        f"  -d {data}\n"
        "# then poll GET $WAN/api/v1/apikey/requests/<request_id> (see docs/rest-api.md)\n"
    )


def python_snippet(v: FormValues, image: str, model: str) -> str:
    fields: dict[str, Any] = {
        "prompt": v.prompt, "video_length_s": int(v.video_length), "seed": v.seed,
        "prompt_extend": v.prompt_extend, "negative_prompt": v.negative_prompt or None,
        "steps": v.steps or None, "guidance": v.guidance or None,
        "speed_mode": None if v.speed_mode == "auto" else v.speed_mode,
    }  # fmt: skip
    if v.prompt_2:
        fields["prompt_2"] = v.prompt_2
    fields |= v.nag() | ({"interpolate": 2} if v.interpolate else {})
    if v.loras:
        fields["loras"] = [dict(lora) for lora in v.loras]
    lines = "".join(f"        {name}={value!r},\n" for name, value in fields.items())
    if v.last_image:
        lines += f"        last_image=Image.open({v.last_image!r}),\n"
    return (
        "from PIL import Image\n\n"
        "from wan_demo.core.request import GenerationRequest\n"
        "from wan_demo.core.settings import Settings\n"
        "from wan_demo.core.validate import validate\n"
        "from wan_demo.generate import generate\n"
        "from wan_demo.model.engine import load_engine\n\n"
        f"settings = Settings(model={model!r})\n"
        "engine = load_engine(settings)\n"
        f"image = Image.open({image!r})\n"
        "# validate() checks every field once (InvalidRequest names the field and the rule)\n"
        "request = validate(\n    GenerationRequest(\n        image,\n"
        f"{lines}    )\n)\n"
        "result = generate(request, engine, settings)\n"
        "print(result.video_path, result.num_frames, result.seed_used)\n"
    )


def snippets(v: FormValues, url: str, image: str, model: str) -> tuple[str, str, str]:
    """(gradio_client, REST curl, Python generate()) for the same settings."""
    return (
        gradio_client_snippet(v, url, image),
        rest_curl_snippet(v, url, image),
        python_snippet(v, image, model),
    )
