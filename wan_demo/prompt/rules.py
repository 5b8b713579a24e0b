"""Offline rule-based prompt extender: the fallback for machines with no VLM and no endpoint.

It does not understand the picture. It keeps the user's prompt verbatim, adds what cheap image
statistics tell (orientation, brightness, saturation, dominant colours), then motion phrases picked
by keywords and one camera move. Deterministic: the same prompt and image give the same text.
"""

from __future__ import annotations

import re
import zlib

import numpy as np
from PIL import Image

from wan_demo.prompt.text import language_of

# (English keywords, Chinese keywords, English motion, Chinese motion); first two matches are used
MOTIONS = [
    (("person", "man", "woman", "girl", "boy", "child", "people", "lady", "dancer", "face", "portrait"),
     ("人", "女", "男", "孩", "姑娘", "少年", "老人", "舞者"),
     "The subject moves naturally, breathing, blinking and slightly turning the head, while hair "
     "and clothing stir in a light breeze.",
     "人物自然地动起来，轻轻呼吸、眨眼、微微转头，头发和衣角随微风轻轻飘动。"),
    (("cat", "dog", "bird", "horse", "animal", "fox", "lion", "tiger", "rabbit", "deer", "puppy", "kitten"),
     ("猫", "狗", "鸟", "马", "动物", "狐", "狮", "虎", "兔", "鹿"),
     "The animal stays alive in the frame: its ears twitch, its head turns and its fur ripples "
     "softly as it breathes.",
     "动物在画面中生动自然：耳朵轻轻抖动，头部转动，毛发随呼吸微微起伏。"),
    (("rain", "raining", "rainy", "storm", "snowfall"),
     ("雨", "暴风", "下雪"),
     "Rain keeps falling, drops streaking through the air and splashing on every surface.",
     "雨不停地落下，雨丝划过空中，在各处溅起细小的水花。"),
    (("sea", "ocean", "wave", "river", "lake", "water", "waterfall", "beach"),
     ("海", "浪", "河", "湖", "水面", "溪", "瀑布", "沙滩"),
     "Water moves continuously, waves rolling in and light glinting on the rippling surface.",
     "水面持续流动，波浪缓缓涌来，光线在粼粼水面上闪烁。"),
    (("fire", "candle", "flame", "smoke", "campfire"),
     ("火", "蜡烛", "烟"),
     "Flames flicker and sway while thin smoke curls upward.",
     "火焰跳动摇曳，细细的烟雾袅袅上升。"),
    (("city", "street", "car", "traffic", "road", "building", "town", "train"),
     ("城市", "街", "车", "道路", "建筑", "小镇"),
     "Cars and passers-by move through the scene and distant lights flicker.",
     "车辆和行人在画面中穿行，远处的灯光闪烁。"),
    (("sky", "cloud", "sunset", "sunrise", "mountain", "landscape", "snow"),
     ("天空", "云", "日落", "日出", "山", "雪"),
     "Clouds drift slowly across the sky and the light shifts gently over the scene.",
     "云朵在天空中缓缓飘移，光影在画面上轻柔变化。"),
    (("tree", "forest", "flower", "grass", "field", "garden", "leaf", "leaves"),
     ("树", "森林", "花", "草", "田", "园", "叶"),
     "Leaves, grass and petals sway in a soft breeze.",
     "树叶、青草和花瓣在微风中轻轻摇曳。"),
]  # fmt: skip
GENERIC_MOTION = (
    "Subtle, natural motion brings the still image to life: light shifts softly and small details "
    "in the scene move gently.",
    "细微而自然的动态让静止的画面活起来：光线柔和变化，场景中的细节轻轻摆动。",
)
CAMERA_WORDS = ("camera", "pan", "zoom", "dolly", "tilt", "tracking", "orbit", "push-in", "close-up",
                "镜头", "推进", "拉远", "平移", "环绕", "跟拍", "特写")  # fmt: skip
# Camera moves by frame shape; English and Chinese wording at the same index
CAMERAS = {
    "landscape": [("The camera pans slowly from left to right.", "镜头从左向右缓慢平移。"),
                  ("The camera pushes in slowly toward the subject.", "镜头缓慢推进，靠近主体。")],
    "portrait": [("The camera tilts up slowly along the subject.", "镜头沿主体缓慢向上摇。"),
                 ("A slow dolly-in brings the subject closer.", "镜头缓慢前推，主体逐渐靠近。")],
    "square": [("The camera pushes in slowly toward the subject.", "镜头缓慢推进，靠近主体。"),
               ("The camera orbits gently around the subject.", "镜头围绕主体缓缓环绕。")],
}  # fmt: skip
FRAMES = {"landscape": ("a wide landscape frame", "横构图"), "portrait": ("a tall portrait frame", "竖构图"),
          "square": ("a square frame", "方形构图")}  # fmt: skip
LIGHT = {"dim": ("dim, low-key lighting", "光线昏暗低调"),
         "bright": ("bright, high-key lighting", "光线明亮"),
         "even": ("balanced natural lighting", "光线自然均衡")}  # fmt: skip
COLOURS = {"red": "红", "orange": "橙", "yellow": "黄", "green": "绿", "teal": "青", "blue": "蓝",
           "purple": "紫", "pink": "粉", "brown": "棕", "white": "白", "grey": "灰",
           "black": "黑"}  # fmt: skip
HUES = [(15, "red"), (40, "orange"), (70, "yellow"), (165, "green"), (200, "teal"), (255, "blue"),
        (290, "purple"), (345, "pink"), (361, "red")]  # upper hue bound in degrees -> name  # fmt: skip
NOTE = "rule-based fallback: keyword and image-statistics template, no image understanding"


def image_traits(image: Image.Image) -> dict:
    """Frame shape, light level, saturation and up to two dominant colour names of `image`."""
    ratio = image.width / image.height
    frame = "landscape" if ratio > 1.2 else "portrait" if ratio < 1 / 1.2 else "square"
    hsv = np.asarray(image.convert("RGB").resize((24, 24)).convert("HSV"), dtype=np.float32) / 255.0
    h, s, v = (hsv[..., i].ravel() for i in range(3))
    luma = float(np.asarray(image.convert("L").resize((24, 24)), dtype=np.float32).mean() / 255.0)
    light = "dim" if luma < 0.3 else "bright" if luma > 0.7 else "even"
    names = [_colour_name(hi * 360, si, vi) for hi, si, vi in zip(h, s, v, strict=True)]
    counts = {n: names.count(n) for n in set(names)}
    top = sorted(counts, key=lambda n: (-counts[n], n))[:2]
    colours = [n for n in top if counts[n] / len(names) >= 0.15]
    return {"frame": frame, "light": light, "saturation": round(float(s.mean()), 3), "colours": colours}


def _colour_name(hue_deg: float, sat: float, val: float) -> str:
    if val < 0.2:
        return "black"
    if sat < 0.15:
        return "white" if val > 0.85 else "grey"
    if hue_deg < 40 and val < 0.55:
        return "brown"  # dark red/orange reads as brown
    return next(name for bound, name in HUES if hue_deg < bound)


def _mentions(text: str, words: tuple[str, ...]) -> bool:
    """Chinese words match anywhere; English ones as whole words ("man" not in "woman"), plural too."""
    return any(
        w in text if not w.isascii() else re.search(rf"\b{re.escape(w)}(?:e?s)?\b", text) for w in words
    )


def extend_with_rules(prompt: str, image: Image.Image) -> str:
    traits = image_traits(image)
    zh = language_of(prompt) == "zh"
    lang = 1 if zh else 0
    text = prompt.strip().lower()
    motions = [m[2 + lang] for m in MOTIONS if _mentions(text, m[lang])][:2] or [GENERIC_MOTION[lang]]
    if _mentions(text, CAMERA_WORDS):
        camera = "镜头运动平稳流畅，遵循描述。" if zh else "The camera moves as described, smooth and steady."
    else:
        options = CAMERAS[traits["frame"]]
        camera = options[zlib.crc32(prompt.encode()) % len(options)][lang]
    head = prompt.strip().rstrip("。.!！ ")
    return _chinese(head, traits, motions, camera) if zh else _english(head, traits, motions, camera)


def _english(head: str, traits: dict, motions: list[str], camera: str) -> str:
    frame, light = FRAMES[traits["frame"]][0], LIGHT[traits["light"]][0]
    palette = " and ".join(traits["colours"])
    tone = f"dominant {palette} tones" if palette else "a mixed palette"
    saturation = traits["saturation"]
    vivid = "vivid" if saturation > 0.45 else "muted" if saturation < 0.15 else "natural"
    scene = f"The scene is shown in {frame} with {light} and {tone} in {vivid} colours."
    style = "Smooth, stable, realistic motion, sharp details, consistent with the original image, cinematic."
    return " ".join(p for p in (f"{head}." if head else "", scene, *motions, camera, style) if p)


def _chinese(head: str, traits: dict, motions: list[str], camera: str) -> str:
    frame, light = FRAMES[traits["frame"]][1], LIGHT[traits["light"]][1]
    palette = "、".join(COLOURS[c] for c in traits["colours"])
    tone = f"以{palette}色调为主" if palette else "色彩丰富"
    saturation = traits["saturation"]
    vivid = "色彩鲜艳" if saturation > 0.45 else "色彩柔和" if saturation < 0.15 else ""
    scene = "，".join(p for p in (frame, light, tone, vivid) if p)
    style = "动作流畅稳定，画面清晰细腻，与原图风格一致，电影感。"
    return "".join((f"{head}。" if head else "", f"画面为{scene}。", *motions, camera, style))
