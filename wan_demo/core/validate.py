"""Input checks shared by every entry point, run once at the edge. One error type: InvalidRequest.

`validate()` turns a GenerationRequest into a ValidRequest. Only the UI turns InvalidRequest into
gr.Error and only the REST layer into an HTTP status. Field names are the API's (prompt, image,
video_length, seed ...); the REST layer prefixes them with "payload.".
"""

from __future__ import annotations

from typing import Any

from PIL import Image, ImageOps

from wan_demo.core.controls import CONTROLS, check_control, check_mode, short_repr
from wan_demo.core.loras import check_loras
from wan_demo.core.request import GenerationRequest, InvalidRequest, ParentClip, ValidRequest
from wan_demo.core.settings import MAX_PROMPT_CHARS, SEED_MAX, SIZE_MULTIPLE, VIDEO_LENGTHS_S

MAX_STEPS = int(CONTROLS["steps"].high)
MAX_GUIDANCE = float(CONTROLS["guidance"].high)
MAX_INPUT_PIXELS = 40_000_000  # decompression-bomb cap (a 40 MP photo is already huge)
MIN_SIDE = 16  # px; smaller inputs carry no usable content
MAX_ASPECT = 4.0  # longer/shorter side; beyond this the model's output degenerates
MAX_PARENT_S = 60.0  # longest video that can be extended, seconds (bounds the joined clip on disk)
MAX_VIDEO_PIXELS = 1920 * 1080  # per frame of an uploaded MP4: bounds the decode work
MAX_VIDEO_FPS = 120.0  # frame rate of an uploaded MP4: bounds the decode work
END_FRAME_ASPECT_TOLERANCE = 0.02  # relative; the end frame is fitted (cover + crop) to the first's size


def is_encodable(text: str) -> bool:
    """True when UTF-8 can encode `text` (Python strings may hold lone surrogates; JSON and SQLite can't)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def encodable(text: str) -> str:
    """`text` with every lone surrogate replaced by U+FFFD: safe to store and to send as JSON."""
    if is_encodable(text):
        return text
    return "".join("\ufffd" if 0xD800 <= ord(ch) <= 0xDFFF else ch for ch in text)


def check_text(field: str, value: Any, limit: int, required: bool) -> str:
    """A string of at most `limit` characters that UTF-8 can encode (no lone surrogates, no NUL)."""
    if not isinstance(value, str):
        raise InvalidRequest(field, f"must be a string, got {type(value).__name__}")
    value = value.strip()
    if required and not value:
        raise InvalidRequest(field, "must not be empty")
    if len(value) > limit:
        raise InvalidRequest(field, f"is {len(value)} characters; the limit is {limit}")
    if "\x00" in value:
        raise InvalidRequest(field, "must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        bad = f"lone surrogate U+{ord(value[e.start]):04X} at {e.start}"
        raise InvalidRequest(field, f"is not valid Unicode text ({bad})") from None
    return value


def check_prompt(prompt: Any) -> str:
    return check_text("prompt", prompt, MAX_PROMPT_CHARS, required=True)


def check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int):
        if isinstance(seed, float) and seed.is_integer():
            seed = int(seed)
        else:
            raise InvalidRequest("seed", f"must be an integer, got {short_repr(seed)}")
    if not -1 <= seed <= SEED_MAX:
        raise InvalidRequest("seed", f"{short_repr(seed)} is out of range; use -1 (random) or 0..{SEED_MAX}")
    return seed


def check_video_length(value: Any) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or value not in VIDEO_LENGTHS_S:
        allowed = " or ".join(str(v) for v in VIDEO_LENGTHS_S)
        raise InvalidRequest("video_length", f"{short_repr(value)} is not allowed; use {allowed} (seconds)")
    return int(value)


def check_pixels(size: tuple[int, int], field: str = "image") -> None:
    width, height = size
    if width * height > MAX_INPUT_PIXELS:
        raise InvalidRequest(field, f"{width}x{height} has too many pixels; the limit is {MAX_INPUT_PIXELS}")
    if min(width, height) < MIN_SIDE:
        raise InvalidRequest(field, f"{width}x{height} is too small; each side must be >= {MIN_SIDE} px")
    if max(width, height) / min(width, height) > MAX_ASPECT:
        limit = f"{MAX_ASPECT:g}:1"
        raise InvalidRequest(field, f"{width}x{height} is too elongated; the aspect ratio limit is {limit}")


def upright_rgb(image: Image.Image) -> Image.Image:
    """EXIF orientation applied, alpha flattened on white, RGB. No checks: see check_image."""
    image = ImageOps.exif_transpose(image)
    if image.mode in ("RGBA", "LA", "P"):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image)
    return image.convert("RGB")


def check_image(image: Any, field: str = "image") -> Image.Image:
    """Upright RGB copy of a decoded user image (media.image.decode_image decodes bytes)."""
    if image is None:
        raise InvalidRequest(field, "is required")
    if not isinstance(image, Image.Image):
        raise InvalidRequest(field, f"must be an image, got {type(image).__name__}")
    check_pixels(image.size, field)
    return upright_rgb(image)


def check_fields(request: GenerationRequest) -> dict[str, Any]:
    """Every field but the image pixels, normalised; the UI's validator runs this before queueing.
    The optional controls follow core/controls.py; with an explicit speed mode, values it would
    ignore are refused here (plan_run checks again once the server's default mode is known)."""
    raw = {name: getattr(request, name) for name in CONTROLS} | {"speed_mode": request.speed_mode or None}
    controls = {name: check_control(name, value) for name, value in raw.items()}
    negative = request.negative_prompt
    if negative is not None:
        negative = check_text("negative_prompt", negative, MAX_PROMPT_CHARS, required=False) or None
    controls["negative_prompt"] = negative
    check_mode(controls, controls["speed_mode"], controls["guidance"])
    if not isinstance(request.prompt_extend, bool):
        got = short_repr(request.prompt_extend)
        raise InvalidRequest("prompt_extend", f"must be true or false, got {got}")
    length = check_video_length(request.video_length_s)
    return dict(
        prompt=check_prompt(request.prompt),
        video_length_s=length,
        prompt_2=check_prompt_2(request.prompt_2, length),
        seed=check_seed(request.seed),
        prompt_extend=request.prompt_extend,
        loras=check_loras(request.loras),  # forms and scales; the files: model/lora_library.py
        **controls,
    )


def check_prompt_2(prompt_2: Any, video_length_s: int) -> str | None:
    """The second segment's prompt: optional, and only where a second segment exists."""
    if prompt_2 is None:
        return None
    text = check_text("prompt_2", prompt_2, MAX_PROMPT_CHARS, required=False) or None
    if text is not None and video_length_s < 10:
        raise InvalidRequest(
            "prompt_2", "is the prompt of the second 5 s segment; use it with video_length 10"
        )
    return text


def check_parent(parent: Any) -> ParentClip | None:
    """A clip to extend: in our format (sides multiples of 16) and at most MAX_PARENT_S long."""
    if parent is None:
        return None
    if not isinstance(parent, ParentClip):
        raise InvalidRequest("video", f"must be a video to extend, got {type(parent).__name__}")
    if parent.num_frames < 1 or parent.fps <= 0:
        raise InvalidRequest("video", "has no frames")
    if parent.width % SIZE_MULTIPLE or parent.height % SIZE_MULTIPLE:
        raise InvalidRequest("video", f"{parent.width}x{parent.height} is not a multiple of {SIZE_MULTIPLE}")
    seconds = parent.num_frames / parent.fps
    if seconds > MAX_PARENT_S:
        raise InvalidRequest(
            "video", f"is {seconds:.1f} s long; videos up to {MAX_PARENT_S:g} s can be extended"
        )
    return parent


def check_last_image(last_image: Any, image: Image.Image) -> Image.Image | None:
    """The optional end frame: the same checks as the input image, and the input's aspect ratio
    (both are fitted to one planned size; another shape would be cropped away or distorted)."""
    if last_image is None:
        return None
    last = check_image(last_image, "last_image")
    first_ratio, last_ratio = image.width / image.height, last.width / last.height
    if abs(last_ratio / first_ratio - 1) > END_FRAME_ASPECT_TOLERANCE:
        raise InvalidRequest(
            "last_image",
            f"{last.width}x{last.height} (aspect {last_ratio:.3f}) must have the input image's aspect ratio "
            f"({image.width}x{image.height}, {first_ratio:.3f}) within {END_FRAME_ASPECT_TOLERANCE:.0%}",
        )
    return last


def validate(request: GenerationRequest) -> ValidRequest:
    """Check every field once and return the normalised request (trimmed text, upright RGB image)."""
    parent = check_parent(request.parent)
    image = check_image(request.image)
    last = check_last_image(request.last_image, image)
    return ValidRequest(image=image, parent=parent, last_image=last, **check_fields(request))
