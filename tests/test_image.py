"""Size maths and input decoding (no model)."""

import io

import pytest
from PIL import Image

from wan_demo.core.plan import fit_size
from wan_demo.core.request import InvalidRequest
from wan_demo.core.settings import MAX_AREA
from wan_demo.core.validate import MAX_INPUT_PIXELS, check_image
from wan_demo.media.image import decode_image, probe_image, resize_for_model


@pytest.mark.parametrize(
    ("width", "height", "expected"),
    [
        (832, 480, (832, 480)),  # the model's native landscape size
        (480, 832, (480, 832)),  # portrait
        (1920, 1080, (832, 464)),  # true 16:9: the official rule floors 474 -> 464
        (1080, 1920, (464, 832)),  # 9:16
        (1000, 1000, (624, 624)),  # 1:1
        (1024, 768, (720, 544)),  # 4:3
        (20, 20, (624, 624)),  # tiny inputs are scaled up to the budget
        (8000, 6000, (720, 544)),  # huge inputs are scaled down
    ],
)
def test_fit_size_keeps_ratio_inside_budget(width, height, expected):
    out_w, out_h = fit_size(width, height, MAX_AREA)
    assert (out_w, out_h) == expected
    assert out_w % 16 == 0 and out_h % 16 == 0
    assert out_w * out_h <= MAX_AREA


def test_fit_size_rejects_non_positive():
    with pytest.raises(ValueError, match="positive"):
        fit_size(0, 10, MAX_AREA)


def test_resize_for_model_has_exact_target_size():
    image = Image.new("RGB", (1920, 1080), "red")
    assert resize_for_model(image, fit_size(*image.size, MAX_AREA)).size == (832, 464)


def _encode(image: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_decode_allowed_formats(fmt):
    image = decode_image(_encode(Image.new("RGB", (40, 30), "blue"), fmt))
    assert image.size == (40, 30)


def test_decode_rejects_other_formats_and_garbage():
    with pytest.raises(InvalidRequest, match="format GIF is not allowed"):
        decode_image(_encode(Image.new("RGB", (40, 30)), "GIF"))
    with pytest.raises(InvalidRequest, match="not a readable JPEG, PNG or WEBP image"):
        decode_image(b"this is not an image")


def test_decode_rejects_pixel_bomb_before_decoding():
    # A PNG header claiming 10000x10000 pixels; only the header is read before rejection.
    bomb = _encode(Image.new("1", (10_000, 10_000)), "PNG")
    assert 10_000 * 10_000 > MAX_INPUT_PIXELS
    with pytest.raises(InvalidRequest, match="too many pixels"):
        decode_image(bomb)
    with pytest.raises(InvalidRequest, match="too many pixels"):
        probe_image(bomb)  # the UI's early validator reads the same header


def test_check_image_applies_exif_orientation_and_rgb():
    image = Image.new("RGBA", (60, 20), (255, 0, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    data = _encode_with_exif(image.convert("RGB"), exif)
    upright = check_image(Image.open(io.BytesIO(data)))
    assert upright.size == (20, 60) and upright.mode == "RGB"
    flattened = check_image(image)  # transparent pixels land on white
    assert flattened.mode == "RGB" and flattened.getpixel((0, 0)) == (255, 255, 255)


def _encode_with_exif(image: Image.Image, exif: Image.Exif) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", exif=exif)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("size", "rule"),
    [((8, 100), "too small"), ((400, 50), "too elongated"), ((9000, 9000), "too many pixels")],
)
def test_check_image_rejects_absurd_sizes(size, rule):
    with pytest.raises(InvalidRequest, match=rule) as err:
        check_image(Image.new("RGB", size))
    assert err.value.field == "image"


def test_check_image_requires_an_image():
    with pytest.raises(InvalidRequest, match="image: is required"):
        check_image(None)
    with pytest.raises(InvalidRequest, match="must be an image, got str"):
        check_image("/etc/passwd")
