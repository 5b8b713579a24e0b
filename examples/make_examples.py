"""Draw the example input images procedurally (no photos, no third-party content).

Run from the repo root: `python examples/make_examples.py`. Output is deterministic: the same
script gives the same JPEGs. Sizes match the model's 480P buckets (832x480, 480x832, 624x624).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

HERE = Path(__file__).resolve().parent
QUALITY = 82  # JPEG quality: keeps every file well under 60 KB
LANDSCAPE, PORTRAIT, SQUARE = (832, 480), (480, 832), (624, 624)


def gradient(size: tuple[int, int], top: tuple[int, int, int], bottom: tuple[int, int, int]) -> Image.Image:
    """Vertical colour gradient from `top` to `bottom` (RGB)."""
    w, h = size
    t = np.linspace(0.0, 1.0, h)[:, None, None]
    rows = (1 - t) * np.array(top) + t * np.array(bottom)
    return Image.fromarray(np.repeat(rows, w, axis=1).astype(np.uint8))


def sunset_sea() -> Image.Image:
    w, h = LANDSCAPE
    img = gradient((w, h), (40, 30, 90), (250, 150, 70))
    d = ImageDraw.Draw(img)
    horizon = int(h * 0.6)
    d.ellipse((w // 2 - 70, horizon - 90, w // 2 + 70, horizon + 50), fill=(255, 200, 90))
    sea = gradient((w, h - horizon), (60, 70, 130), (15, 25, 60))
    img.paste(sea, (0, horizon))
    for i in range(14):  # glitter of the sun on the water
        y = horizon + 8 + i * 13
        half = 60 - i * 3
        d.line((w // 2 - half, y, w // 2 + half, y), fill=(255, 190, 110), width=3)
    return img.filter(ImageFilter.GaussianBlur(1.2))


def red_car() -> Image.Image:
    w, h = LANDSCAPE
    img = gradient((w, h), (120, 180, 235), (210, 230, 245))
    d = ImageDraw.Draw(img)
    d.rectangle((0, 300, w, h), fill=(95, 150, 80))  # fields
    d.polygon([(w // 2 - 40, 300), (w // 2 + 40, 300), (w, h), (0, h)], fill=(70, 70, 75))  # road
    for i in range(5):  # dashed centre line, wider as it nears the viewer
        y0 = 310 + i * 35
        d.rectangle((w // 2 - 2 - i, y0, w // 2 + 2 + i, y0 + 18), fill=(240, 230, 200))
    cx, cy = w // 2, 400
    d.rounded_rectangle((cx - 150, cy - 40, cx + 150, cy + 30), 18, fill=(200, 20, 25))  # body
    d.rounded_rectangle((cx - 90, cy - 90, cx + 90, cy - 30), 20, fill=(180, 15, 20))  # cabin
    d.rectangle((cx - 75, cy - 80, cx + 75, cy - 40), fill=(150, 190, 220))  # windscreen
    for x in (cx - 100, cx + 100):
        d.ellipse((x - 32, cy + 5, x + 32, cy + 65), fill=(20, 20, 20))
    d.ellipse((cx - 140, cy - 20, cx - 110, cy), fill=(255, 240, 170))
    d.ellipse((cx + 110, cy - 20, cx + 140, cy), fill=(255, 240, 170))
    return img.filter(ImageFilter.GaussianBlur(0.8))


def cat() -> Image.Image:
    w, h = SQUARE
    img = gradient((w, h), (235, 225, 205), (190, 170, 140))
    d = ImageDraw.Draw(img)
    fur, dark = (225, 140, 60), (120, 70, 30)
    d.ellipse((150, 330, 470, 600), fill=fur)  # body
    d.ellipse((190, 150, 430, 370), fill=fur)  # head
    d.polygon([(205, 215), (225, 100), (290, 170)], fill=fur)  # ears
    d.polygon([(415, 215), (395, 100), (330, 170)], fill=fur)
    d.polygon([(225, 200), (235, 130), (275, 175)], fill=(240, 170, 160))
    d.polygon([(395, 200), (385, 130), (345, 175)], fill=(240, 170, 160))
    for x in (260, 360):  # eyes with slit pupils
        d.ellipse((x - 28, 230, x + 28, 275), fill=(120, 190, 60))
        d.ellipse((x - 6, 232, x + 6, 273), fill=(15, 15, 15))
    d.polygon([(300, 295), (320, 295), (310, 308)], fill=(200, 90, 100))  # nose
    for dy in (-10, 0, 10):  # whiskers
        d.line((295, 310, 200, 300 + dy * 2), fill=dark, width=2)
        d.line((325, 310, 420, 300 + dy * 2), fill=dark, width=2)
    d.arc((420, 380, 560, 560), 180, 300, fill=fur, width=28)  # tail
    return img.filter(ImageFilter.GaussianBlur(0.8))


def mountains() -> Image.Image:
    w, h = LANDSCAPE
    img = gradient((w, h), (70, 120, 200), (200, 220, 240))
    d = ImageDraw.Draw(img)
    rng = np.random.default_rng(7)
    ranges = [(300, (110, 120, 150)), (360, (70, 90, 110)), (430, (40, 70, 60))]  # far to near
    for layer, (base, colour) in enumerate(ranges):
        xs = np.linspace(0, w, 12)
        ys = base - rng.uniform(40, 180 - layer * 40, xs.size)
        d.polygon([(0, h), *zip(xs.tolist(), ys.tolist(), strict=True), (w, h)], fill=colour)
        if layer == 0:  # snow caps on the far range
            for x, y in zip(xs.tolist(), ys.tolist(), strict=True):
                d.polygon([(x - 22, y + 30), (x, y), (x + 22, y + 30)], fill=(245, 245, 250))
    d.ellipse((640, 60, 700, 120), fill=(255, 250, 220))
    return img.filter(ImageFilter.GaussianBlur(1.0))


def lighthouse() -> Image.Image:
    w, h = PORTRAIT
    img = gradient((w, h), (20, 30, 70), (90, 110, 160))
    d = ImageDraw.Draw(img)
    d.rectangle((0, 620, w, h), fill=(30, 50, 90))  # sea
    d.polygon([(100, 640), (380, 640), (430, h), (50, h)], fill=(60, 55, 50))  # rock
    for i, colour in enumerate([(235, 235, 235), (200, 30, 30)] * 3):  # striped tower
        y0 = 300 + i * 55
        top_half, bottom_half = 45 + i * 5, 50 + i * 5
        d.polygon([(240 - top_half, y0), (240 + top_half, y0), (240 + bottom_half, y0 + 55),
                   (240 - bottom_half, y0 + 55)], fill=colour)  # fmt: skip
    d.rectangle((200, 250, 280, 300), fill=(255, 235, 140))  # lamp room
    d.polygon([(190, 250), (290, 250), (240, 210)], fill=(40, 40, 40))
    d.polygon([(280, 265), (w, 200), (w, 320)], fill=(255, 240, 170))  # beam
    for x, y in [(60, 80), (400, 60), (320, 140), (120, 180), (30, 300)]:
        d.ellipse((x, y, x + 3, y + 3), fill=(255, 255, 255))
    return img.filter(ImageFilter.GaussianBlur(0.8))


DRAWINGS: dict[str, Callable[[], Image.Image]] = {
    "sunset_sea.jpg": sunset_sea,
    "red_car.jpg": red_car,
    "cat.jpg": cat,
    "mountains.jpg": mountains,
    "lighthouse.jpg": lighthouse,
}


def main() -> None:
    for name, draw in DRAWINGS.items():
        path = HERE / name
        draw().save(path, format="JPEG", quality=QUALITY, optimize=True)
        print(f"{path.name}: {path.stat().st_size // 1024} KB")


if __name__ == "__main__":
    main()
