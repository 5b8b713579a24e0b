"""Input image bytes -> a decoded picture (safely), and a picture -> the model's input size."""

from __future__ import annotations

import io
import warnings

from PIL import Image, ImageOps, UnidentifiedImageError

from wan_demo.core.request import InvalidRequest
from wan_demo.core.validate import MAX_INPUT_PIXELS, check_pixels, upright_rgb

ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP")
FORMATS_RULE = "not a readable JPEG, PNG or WEBP image"


def _open(data: bytes, field: str, load: bool) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            if image.format not in ALLOWED_FORMATS:
                raise InvalidRequest(field, f"format {image.format} is not allowed; use JPEG, PNG or WEBP")
            check_pixels(image.size, field)  # before decoding: a pixel bomb never gets decoded
            if load:
                image.load()
    except InvalidRequest:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InvalidRequest(field, f"image has too many pixels; the limit is {MAX_INPUT_PIXELS}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise InvalidRequest(field, f"is {FORMATS_RULE} ({type(e).__name__})") from None
    return image


def decode_image(data: bytes, field: str = "image") -> Image.Image:
    """Decode untrusted bytes: JPEG/PNG/WEBP only, pixel count capped before decoding."""
    return _open(data, field, load=True)


def probe_image(data: bytes, field: str = "image") -> tuple[int, int]:
    """Format and size checks from the header only (no pixel decode): the UI's early validator."""
    return _open(data, field, load=False).size


def load_stored(data: bytes) -> Image.Image:
    """An input the job store kept after validate() accepted it: decode and make it upright RGB."""
    return upright_rgb(decode_image(data))


def resize_for_model(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Scale to cover `size` (the plan's width, height) and centre-crop the few rounding pixels."""
    return ImageOps.fit(image, size, method=Image.Resampling.LANCZOS)
