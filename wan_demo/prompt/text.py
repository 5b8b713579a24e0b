"""Instructions for the model-based prompt extenders, and the checks every rewrite must pass.

Shared by the local VLM (prompt_vlm.py) and the OpenAI-compatible backend (prompt_openai.py).
A rewrite that fails a check raises BackendFailed, so extend_prompt() moves on to the next backend.
"""

from __future__ import annotations

import re

from PIL import Image

MAX_OUTPUT_CHARS = 1000  # hard cap on a rewrite (~200 English words); the text encoder keeps 512 tokens
IMAGE_LONG_SIDE = 512  # px; the rewriter needs the gist of the picture, not its detail

# Our own wording of the goals of issue 5: describe what is seen, then above all how it moves.
SYSTEM_PROMPT = """You write prompts for an image-to-video model. You receive a photo or picture \
(the first frame of the video) and the user's short idea for the clip. Reply with ONE paragraph of \
60 to 120 words that:
- briefly names the main subject, the setting and the visual style of the picture (lighting, \
colours, medium) as they really appear in it;
- spends most of its words on motion: what moves, how, in which direction and how fast, over about \
five seconds, plus one clear camera movement (static shot, slow push-in, pan, tilt, tracking, orbit);
- follows the user's idea; never contradicts the picture; adds no new characters or scene cuts;
- keeps any text inside quotation marks exactly as written;
- is written in the same language as the user's idea (Chinese idea -> Chinese answer).
Reply with the prompt only: no title, no preamble, no quotes around it, no lists."""

LANGUAGE_NAMES = {"en": "English", "zh": "Chinese (简体中文)"}

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_LATIN = re.compile(r"[A-Za-z]")
# "...", “...”, 「...」, 『...』, «...»: text the user wants rendered or kept exactly
_QUOTED = re.compile(r'"([^"]+)"|“([^”]+)”|「([^」]+)」|『([^』]+)』|«([^»]+)»')
_PREAMBLES = [
    r"(?:sure|certainly|of course|okay|ok|absolutely)[!,.]",  # only with punctuation: "Sure-footed" stays
    r"here(?:'s| is) (?:an? |the |your )?[^:\n]{0,60}:",
    r"(?:(?:extended|rewritten|enhanced|improved|detailed|final|video)\s+)*prompt\s*[:：]",
    r"(?:好的|当然|没问题)[，,。.!！]",
    r"(?:以下是|这是|下面是)[^：:\n]{0,30}[：:]",
    r"(?:扩写后的|改写后的|扩展后的|优化后的)?(?:视频)?提示词\s*[：:]",
]
_PREAMBLE = re.compile(r"^\s*[*#>\s]*(?:" + "|".join(_PREAMBLES) + r")[*\s]*", re.IGNORECASE)
_SIGN_OFF = re.compile(r"\s*(?:let me know|i hope this|feel free|希望)[^\n]*$", re.IGNORECASE)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_WRAPPING_QUOTES = {'"': '"', "“": "”", "'": "'", "「": "」"}


class BackendFailed(Exception):
    """A backend gave no usable rewrite; the message says why (shown in prompt_info)."""


def language_of(text: str) -> str:
    """'zh' when the text holds more CJK characters than Latin letters, else 'en'."""
    return "zh" if len(_CJK.findall(text)) > len(_LATIN.findall(text)) else "en"


def quoted_segments(text: str) -> list[str]:
    return [next(g for g in m.groups() if g) for m in _QUOTED.finditer(text)]


def user_message(prompt: str) -> str:
    idea = prompt.strip() or "(no idea given: animate the picture naturally)"
    language = LANGUAGE_NAMES[language_of(prompt)]
    return f"User's idea: {idea}\n\nWrite the video prompt in {language}."


def downscale(image: Image.Image, long_side: int = IMAGE_LONG_SIDE) -> Image.Image:
    image = image.convert("RGB")
    scale = long_side / max(image.size)
    if scale >= 1:
        return image
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.BICUBIC)


def clean_output(raw: str) -> str:
    """Strip code fences, chatty preambles and sign-offs, wrapping quotes; one paragraph."""
    text = _CONTROL.sub("", raw).strip().strip("`").strip()
    if text.lower().startswith(("text\n", "markdown\n")):
        text = text.split("\n", 1)[1]
    previous = None
    while previous != text:
        previous = text
        text = _PREAMBLE.sub("", text, count=1).strip()
        text = _SIGN_OFF.sub("", text).strip()
        if len(text) > 1 and _WRAPPING_QUOTES.get(text[0]) == text[-1] and text[0] not in text[1:-1]:
            text = text[1:-1].strip()
    return re.sub(r"\s+", " ", text).strip()


def check_output(prompt: str, text: str) -> str:
    """Return `text` if it is a usable rewrite of `prompt`; raise BackendFailed otherwise."""
    if not text:
        raise BackendFailed("empty output")
    if len(text) > MAX_OUTPUT_CHARS:
        raise BackendFailed(f"output too long ({len(text)} chars > {MAX_OUTPUT_CHARS})")
    missing = [q for q in quoted_segments(prompt) if q not in text]
    if missing:
        raise BackendFailed(f"quoted text not kept verbatim: {missing[0]!r}")
    if language_of(prompt) == "zh" and not _CJK.search(text):
        raise BackendFailed("answered in another language than the prompt (expected Chinese)")
    if language_of(prompt) == "en" and prompt.strip() and language_of(text) == "zh":
        raise BackendFailed("answered in another language than the prompt (expected English)")
    return text
