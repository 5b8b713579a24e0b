"""Input image: decode safely, fix orientation, fit the 480P pixel budget at multiples of 16."""

from __future__ import annotations

import io
import math
import warnings

from PIL import Image, ImageOps, UnidentifiedImageError

from wan_demo.core.request import InvalidRequest
from wan_demo.core.settings import SIZE_MULTIPLE

ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP")
MAX_INPUT_PIXELS = 40_000_000  # decompression-bomb cap (a 40 MP photo is already huge)
MIN_SIDE = 16  # px; smaller inputs carry no usable content
MAX_ASPECT = 4.0  # longer/shorter side; beyond this the model's output degenerates


def decode_image(data: bytes, field: str = "image") -> Image.Image:
    """Decode untrusted bytes: JPEG/PNG/WEBP only, pixel count capped before decoding."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            if image.format not in ALLOWED_FORMATS:
                raise InvalidRequest(field, f"format {image.format} is not allowed; use JPEG, PNG or WEBP")
            check_pixels(image.size, field)
            image.load()
    except InvalidRequest:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InvalidRequest(field, f"image has too many pixels; the limit is {MAX_INPUT_PIXELS}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise InvalidRequest(field, f"is not a readable image ({type(e).__name__})") from None
    return image


def check_pixels(size: tuple[int, int], field: str = "image") -> None:
    width, height = size
    if width * height > MAX_INPUT_PIXELS:
        raise InvalidRequest(field, f"{width}x{height} has too many pixels; the limit is {MAX_INPUT_PIXELS}")
    if min(width, height) < MIN_SIDE:
        raise InvalidRequest(field, f"{width}x{height} is too small; each side must be >= {MIN_SIDE} px")
    if max(width, height) / min(width, height) > MAX_ASPECT:
        limit = f"{MAX_ASPECT:g}:1"
        raise InvalidRequest(field, f"{width}x{height} is too elongated; the aspect ratio limit is {limit}")


def prepare_input(image: Image.Image | None, field: str = "image") -> Image.Image:
    """Upright RGB copy of a user image (EXIF orientation applied, alpha flattened on white)."""
    if image is None:
        raise InvalidRequest(field, "is required")
    if not isinstance(image, Image.Image):
        raise InvalidRequest(field, f"must be an image, got {type(image).__name__}")
    check_pixels(image.size, field)
    image = ImageOps.exif_transpose(image)
    if image.mode in ("RGBA", "LA", "P"):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image)
    return image.convert("RGB")


def fit_size(width: int, height: int, max_area: int, multiple: int = SIZE_MULTIPLE) -> tuple[int, int]:
    """(width, height) with the input's aspect ratio inside `max_area` pixels, multiples of `multiple`.

    The official Wan rule: side = round(sqrt(max_area * ratio)) // multiple * multiple.
    832x480 -> (832, 480); 1:1 -> (624, 624); 4:3 -> (720, 544); 1920x1080 -> (832, 464).
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    ratio = height / width
    out_h = round(math.sqrt(max_area * ratio)) // multiple * multiple
    out_w = round(math.sqrt(max_area / ratio)) // multiple * multiple
    return max(out_w, multiple), max(out_h, multiple)


def resize_for_model(image: Image.Image, max_area: int) -> Image.Image:
    """Scale to cover the target size and centre-crop the few rounding pixels (no distortion)."""
    size = fit_size(image.width, image.height, max_area)
    return ImageOps.fit(image, size, method=Image.Resampling.LANCZOS)
