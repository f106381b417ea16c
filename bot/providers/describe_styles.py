"""What each `/describe style:` asks a vision model, and how its answer becomes clean prompts.

The one reviewed place for the instructions: change a style here and every OpenAI-compatible server
gets the same words. Models answer loosely (code fences, "Here is a prompt:", quotes, a numbered list
where one prompt was asked for), so every answer goes through `clean` before it is shown.
"""

from __future__ import annotations

import math
import re

from bot.domain.tasks import DescribeStyle, Suggestion

_COMMON = (
    "You turn images into prompts for text-to-image models. Answer with the prompt only: no preamble, "
    "no explanation, no quotes, no markdown, no code block."
)

INSTRUCTIONS: dict[DescribeStyle, str] = {
    DescribeStyle.DETAILED: (
        f"{_COMMON} Write one detailed prompt of 60 to 120 words in natural English that would let a "
        "text-to-image model recreate this image: the subject and what it does, the setting, the "
        "composition and camera angle, the lighting, the colours, the medium and the style."
    ),
    DescribeStyle.SHORT: (
        f"{_COMMON} Write one short prompt of at most 25 words that captures the subject, the setting and "
        "the style of this image."
    ),
    DescribeStyle.TAGS: (
        f"{_COMMON} Describe this image as comma-separated tags in the manner of booru sites: lower case, "
        "words within a tag joined by underscores, the most important tags first (the subject and how many, "
        "then features, clothing, pose, setting, lighting, style), 15 to 40 tags, no sentences."
    ),
    DescribeStyle.MIDJOURNEY: (
        f"{_COMMON} Write one Midjourney prompt for this image: a comma-separated description of the "
        "subject, setting, lighting, mood, medium and style, 30 to 80 words. Do not add any parameters "
        "such as --ar or --v: the bot adds the aspect ratio itself."
    ),
    DescribeStyle.STABLE_DIFFUSION: (
        f"{_COMMON} Write a Stable Diffusion prompt for this image as two lines exactly:\n"
        "Positive: <comma-separated tags and phrases describing the image, most important first>\n"
        "Negative: <comma-separated things to avoid for this image, such as artefacts and unwanted styles>"
    ),
}

USER_TEXT = "Describe this image as instructed."


def several(count: int) -> str:
    """Ask for `count` different prompts in one answer, for servers that ignore the `n` parameter."""
    return (
        f"Give {count} different prompts for this image, each following the instructions, as a numbered "
        f"list: each item starts on a new line with its number, a full stop and a space (1. ... 2. ...). "
        "Make them differ in wording and emphasis."
    )


# A fenced block anywhere in the answer: its content is the prompt (a preamble line may come first).
_FENCE = re.compile(r"```[\w-]*[ \t]*\n?(.*?)\n?```", re.DOTALL)
_PREAMBLE = re.compile(
    r"^\s*(?:(?:sure|certainly|of course|okay|ok)[!,.]?\s*)?"
    r"(?:here(?:'s| is| are)[^:\n]*|(?:the |a )?(?:detailed |short |midjourney |stable diffusion )?"
    r"(?:prompt|description|tags)[^:\n]{0,20}):\s*",
    re.IGNORECASE,
)
_NUMBERED = re.compile(r"^\s*(?:\*\*)?(\d{1,2})[.)](?:\*\*)?\s+(.*)$")
_MIDJOURNEY_PARAMS = re.compile(r"\s+--[a-z]+(?:\s+[^\s-][^\s]*)?", re.IGNORECASE)
_LABEL = re.compile(
    r"^\s*(?:\*\*)?(positive|negative)(?: prompt)?(?:\*\*)?\s*:\s*(?:\*\*)?\s*", re.IGNORECASE
)
# Aspect ratios Midjourney users know; the nearest to the image's shape is chosen.
_RATIOS = ((1, 1), (5, 4), (4, 3), (3, 2), (16, 9), (2, 1), (21, 9), (4, 5), (3, 4), (2, 3), (9, 16), (1, 2))


def clean(text: str) -> str:
    """Strip what models wrap a prompt in: code fences, a preamble line, surrounding quotes, stray markup."""
    text = text.strip()
    fenced = _FENCE.search(text)
    if fenced:
        text = fenced.group(1).strip()
    text = _PREAMBLE.sub("", text, count=1).strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'`":
        text = text[1:-1].strip()
    return text.replace("**", "").strip()


def numbered_items(text: str) -> list[str]:
    """Return the items of a numbered list (lines after an item's first belong to it, as lines: a
    Stable Diffusion item keeps its "Negative:" line)."""
    items: list[list[str]] = []
    for line in clean(text).splitlines():
        match = _NUMBERED.match(line)
        if match:
            items.append([match.group(2)])
        elif items and line.strip():
            items[-1].append(line.strip())
    return ["\n".join(item).strip() for item in items if "".join(item).strip()]


def aspect_ratio(width: int, height: int) -> str:
    """Return the common aspect ratio nearest to the image's shape, as Midjourney writes it."""
    shape = math.log(width / height)
    w, h = min(_RATIOS, key=lambda ratio: abs(math.log(ratio[0] / ratio[1]) - shape))
    return f"{w}:{h}"


def suggestion(style: DescribeStyle, text: str, *, size: tuple[int, int]) -> Suggestion | None:
    """Turn one cleaned answer into a suggestion of the style's shape; None when nothing usable is left."""
    text = clean(text)
    if style is DescribeStyle.STABLE_DIFFUSION:
        return _stable_diffusion(text)
    if style is DescribeStyle.TAGS:
        tags = [tag.strip().strip(".") for tag in re.split(r"[,\n]", text)]
        unique = list(dict.fromkeys(tag for tag in tags if tag))
        return Suggestion(", ".join(unique)) if unique else None
    if style is DescribeStyle.MIDJOURNEY:
        text = re.sub(r"^/?imagine\s+prompt:\s*", "", text, flags=re.IGNORECASE)
        text = _MIDJOURNEY_PARAMS.sub("", text).strip().rstrip(",")
        return Suggestion(f"{text} --ar {aspect_ratio(*size)}") if text else None
    text = " ".join(text.split())
    return Suggestion(text) if text else None


def _stable_diffusion(text: str) -> Suggestion | None:
    positive: list[str] = []
    negative: list[str] = []
    current = positive
    for line in text.splitlines():
        label = _LABEL.match(line)
        content = line
        if label:
            current = negative if label.group(1).lower() == "negative" else positive
            content = line[label.end() :]
        if content.strip():
            current.append(content.strip())
    prompt = " ".join(positive).strip()
    if not prompt:
        return None
    return Suggestion(prompt, " ".join(negative).strip() or None)
