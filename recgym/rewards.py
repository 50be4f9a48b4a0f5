"""Completion parsing and the rule-based rating reward (format + accuracy).

``RatingReward()(completion, target, scale)`` is a pure function of strings and numbers that
never raises on any string: garbage earns the format penalty and zero accuracy.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass

from recgym.data.schema import RatingScale

#: The four reasoning steps of Think-before-Recommendation, in order. The last holds the rating.
FOUR_STEP_TAGS: tuple[str, ...] = ("analyze user", "analyze item", "match", "rate")
#: The ablation without reasoning structure: the rating alone.
RATE_ONLY_TAGS: tuple[str, ...] = ("rate",)

# ASCII digits only: str.isdigit() and float() also accept other scripts ("٥"), which a
# rating on our scale never is. No exponents, so "1e309" is not a rating either.
_NUMBER = re.compile(r"\s*([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))\s*")


@dataclass(frozen=True)
class ParsedCompletion:
    rating: float | None
    """The number inside the rating tag, unclipped; None when none parses."""
    format_ok: bool
    reason: str
    """Why the format fails ("" when it holds)."""


def _parse_number(text: str) -> float | None:
    if len(text) > 64:
        return None
    match = _NUMBER.fullmatch(text)
    if match is None:
        return None
    value = float(match.group(1))
    return value if math.isfinite(value) else None


def _first_rating(text: str, tag: str) -> float | None:
    """The first ``<tag>number</tag>`` in the text, even if the structure around it is broken."""
    open_tag, close_tag = f"<{tag}>", f"</{tag}>"
    start = text.find(open_tag)
    while start != -1:
        end = text.find(close_tag, start + len(open_tag))
        if end == -1:
            return None
        value = _parse_number(text[start + len(open_tag) : end])
        if value is not None:
            return value
        start = text.find(open_tag, end)
    return None


def parse_completion(
    text: str, scale: RatingScale | None = None, tags: tuple[str, ...] = FOUR_STEP_TAGS
) -> ParsedCompletion:
    """Parse a completion: the rating (from the last tag) and whether the format holds.

    The format holds when each tag pair occurs exactly once, in the given order, with
    non-empty content and nothing but whitespace around and between the tags, and the rating is a
    finite number on the scale.
    """
    if not isinstance(text, str):
        return ParsedCompletion(None, False, f"completion is {type(text).__name__}, not str")
    scale = scale or RatingScale()
    rating = _first_rating(text, tags[-1])
    position, previous = 0, None
    for tag in tags:
        open_tag, close_tag = f"<{tag}>", f"</{tag}>"
        if text.count(open_tag) != 1 or text.count(close_tag) != 1:
            return ParsedCompletion(rating, False, f"<{tag}> must open and close exactly once")
        start, end = text.find(open_tag), text.find(close_tag)
        if start < position or end < start:
            return ParsedCompletion(rating, False, f"<{tag}> is out of order")
        if not text[start + len(open_tag) : end].strip():
            return ParsedCompletion(rating, False, f"<{tag}> is empty")
        if text[position:start].strip():
            where = f"between </{previous}> and <{tag}>" if previous else f"before <{tag}>"
            return ParsedCompletion(rating, False, f"text {where}")
        position, previous = end + len(close_tag), tag
    if text[position:].strip():
        return ParsedCompletion(rating, False, f"text after </{tags[-1]}>")
    if rating is None:
        return ParsedCompletion(None, False, f"<{tags[-1]}> does not hold a number")
    if not scale.contains(rating):
        return ParsedCompletion(rating, False, f"rating {rating:g} is off the scale {scale.label}")
    return ParsedCompletion(rating, True, "")


@dataclass(frozen=True)
class RewardBreakdown:
    format: float
    accuracy: float
    total: float
    parsed_rating: float | None
    """The prediction used for accuracy, clipped to the scale (None when none parsed)."""
    abs_error: float | None
    format_ok: bool

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class RatingReward:
    """The paper's reward: ``format + accuracy_weight * (1 - |y - ŷ| / max_error)``.

    ``max_error=None`` uses the scale's range (4 on 1–5); ŷ is clipped to the scale; accuracy is
    0 when no rating parses. ``RatingReward.reczero_public()`` is the public RecZero code's variant.
    """

    format_reward: float = 0.5
    format_penalty: float = -0.5
    accuracy_weight: float = 1.0
    max_error: float | None = None
    tags: tuple[str, ...] = FOUR_STEP_TAGS

    @classmethod
    def reczero_public(cls, tags: tuple[str, ...] = FOUR_STEP_TAGS) -> RatingReward:
        """Format ±1 and accuracy ``1 - |y - ŷ| / 2``, as in the public RecZero code."""
        return cls(format_reward=1.0, format_penalty=-1.0, max_error=2.0, tags=tags)

    def __call__(self, completion: str, target: float, scale: RatingScale | None = None) -> RewardBreakdown:
        scale = scale or RatingScale()
        parsed = parse_completion(completion, scale, self.tags)
        fmt = self.format_reward if parsed.format_ok else self.format_penalty
        if parsed.rating is None:
            return RewardBreakdown(fmt, 0.0, fmt, None, None, parsed.format_ok)
        prediction = scale.clip(parsed.rating)
        error = abs(float(target) - prediction)
        divisor = self.max_error if self.max_error is not None else scale.max_error
        accuracy = self.accuracy_weight * (1.0 - error / divisor)
        return RewardBreakdown(fmt, accuracy, fmt + accuracy, prediction, error, parsed.format_ok)
