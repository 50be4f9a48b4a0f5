"""Completion parsing and the rule-based rating reward (format + accuracy).

``RatingReward()(completion, target, scale)`` is a pure function of strings and numbers that
never raises on any string: garbage earns the format penalty and zero accuracy.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import re
from dataclasses import asdict, dataclass

from recgym.data.schema import RatingScale, check_int, check_number

#: The four reasoning steps of Think-before-Recommendation, in order. The last holds the rating.
FOUR_STEP_TAGS: tuple[str, ...] = ("analyze user", "analyze item", "match", "rate")
#: The ablation without reasoning structure: the rating alone.
RATE_ONLY_TAGS: tuple[str, ...] = ("rate",)

# ASCII digits only: str.isdigit() and float() also accept other scripts ("٥"), which a
# rating on our scale never is. No exponents, so "1e309" is not a rating either.
_NUMBER = re.compile(r"\s*([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))\s*")


def check_tags(tags: object, owner: str) -> tuple[str, ...]:
    """``tags`` as a tuple if it is a tuple or list of distinct, non-empty tag names without ``<``,
    ``>`` or ``/``, at least one; else a TypeError or ValueError naming ``owner``'s field."""
    where = f"{owner}.tags"
    if not isinstance(tags, tuple | list):
        hint = f" (one tag: ({tags!r},))" if isinstance(tags, str) else ""
        raise TypeError(f"{where} must be a tuple of tag names, the last holding the answer{hint}, got {tags!r}")
    if not tags:
        raise ValueError(f"{where} needs at least one tag (the last holds the answer), got {tags!r}")
    for tag in tags:
        if not isinstance(tag, str) or not tag.strip() or any(c in tag for c in "<>/"):
            raise ValueError(f"{where}: each tag must be a non-empty str without <, > or /, got {tag!r}")
    if twice := [tag for n, tag in enumerate(tags) if tag in tags[:n]]:
        raise ValueError(f"{where}: {twice[0]!r} appears twice, but each tag must occur exactly once in the answer")
    return tuple(tags)


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


def rating_tag(text: str, tag: str) -> tuple[int, float] | None:
    """Where the first ``<tag>number</tag>`` in the text opens, and its number, even if the structure
    around it is broken (None where no such tag holds a number)."""
    open_tag, close_tag = f"<{tag}>", f"</{tag}>"
    start = text.find(open_tag)
    while start != -1:
        end = text.find(close_tag, start + len(open_tag))
        if end == -1:
            return None
        value = _parse_number(text[start + len(open_tag) : end])
        if value is not None:
            return start, value
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
    found = rating_tag(text, tags[-1])
    rating = None if found is None else found[1]
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

    def __post_init__(self) -> None:
        m = self.max_error
        if m is not None and (isinstance(m, bool) or not isinstance(m, numbers.Real) or not 0 < m < math.inf):
            raise ValueError(f"max_error must be a number > 0 or None (the scale's range), got {self.max_error!r}")
        _check_fields(self, "accuracy_weight")

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


#: Think-before-Recommendation adapted to ranking. The last holds the ordered candidate labels.
RANK_TAGS: tuple[str, ...] = ("analyze user", "analyze candidates", "match", "rank")
#: The ranking ablation without reasoning structure.
RANK_ONLY_TAGS: tuple[str, ...] = ("rank",)
_LABEL = re.compile(r"\[([0-9]{1,4})\]")  # ASCII digits, as the rating parser


@dataclass(frozen=True)
class ParsedRanking:
    order: tuple[int, ...]
    """Candidate positions (0-based, prompt order) best first; the prompt's order on failure."""
    format_ok: bool
    reason: str


def parse_ranking(text: str, num_candidates: int, tags: tuple[str, ...] = RANK_TAGS) -> ParsedRanking:
    """Parse ``<rank>[3] [1] ...</rank>``; any failure falls back to the prompt's order."""
    fallback = tuple(range(num_candidates))
    if not isinstance(text, str):
        return ParsedRanking(fallback, False, "completion is not str")
    checked = _check_structure(text, tags)
    if checked:
        return ParsedRanking(fallback, False, checked)
    inner = text[text.find(f"<{tags[-1]}>") + len(tags[-1]) + 2 : text.find(f"</{tags[-1]}>")]
    if _LABEL.sub(" ", inner).replace(",", " ").strip():
        return ParsedRanking(fallback, False, "text in <rank> other than labels")
    labels = [int(x) - 1 for x in _LABEL.findall(inner)]
    if len(set(labels)) != len(labels):
        return ParsedRanking(fallback, False, "duplicate labels")
    if any(not 0 <= x < num_candidates for x in labels):
        return ParsedRanking(fallback, False, "unknown label")
    if len(labels) != num_candidates:
        return ParsedRanking(fallback, False, "missing candidates")
    return ParsedRanking(tuple(labels), True, "")


def _check_structure(text: str, tags: tuple[str, ...]) -> str:
    position, previous = 0, None
    for tag in tags:
        open_tag, close_tag = f"<{tag}>", f"</{tag}>"
        if text.count(open_tag) != 1 or text.count(close_tag) != 1:
            return f"<{tag}> must open and close exactly once"
        start, end = text.find(open_tag), text.find(close_tag)
        if start < position or end < start:
            return f"<{tag}> is out of order"
        if not text[start + len(open_tag) : end].strip():
            return f"<{tag}> is empty"
        if text[position:start].strip():
            return f"text between </{previous}> and <{tag}>" if previous else f"text before <{tag}>"
        position, previous = end + len(close_tag), tag
    return f"text after </{tags[-1]}>" if text[position:].strip() else ""


def ndcg_at_k(rank: int, k: int) -> float:
    """NDCG@k of one relevant item at 1-based ``rank``: ``1 / log2(rank + 1)`` if rank <= k."""
    return 1.0 / math.log2(rank + 1) if rank <= k else 0.0


@dataclass(frozen=True)
class RankingReward:
    """Format ±0.5 plus NDCG@k of the true item in the parsed (or fallback) order."""

    format_reward: float = 0.5
    format_penalty: float = -0.5
    ndcg_weight: float = 1.0
    k: int | None = None
    tags: tuple[str, ...] = RANK_TAGS

    def __post_init__(self) -> None:
        if self.k is not None:
            check_int("k (None: the whole list)", self.k, 1)
        _check_fields(self, "ndcg_weight")

    def __call__(self, completion: str, target_position: int, num_candidates: int) -> dict:
        parsed = parse_ranking(completion, num_candidates, self.tags)
        fmt = self.format_reward if parsed.format_ok else self.format_penalty
        rank = parsed.order.index(target_position) + 1
        ndcg = self.ndcg_weight * ndcg_at_k(rank, self.k or num_candidates)
        return {"format": fmt, "ndcg": ndcg, "total": fmt + ndcg, "rank_of_target": rank,
                "format_ok": parsed.format_ok}


def _check_fields(reward: RatingReward | RankingReward, weight: str) -> None:
    """The reward's format values finite numbers, its ``weight`` one >= 0, its tags checked (kept as a tuple)."""
    owner = type(reward).__name__
    check_number(f"{owner}.format_reward", reward.format_reward)
    check_number(f"{owner}.format_penalty", reward.format_penalty)
    check_number(f"{owner}.{weight}", getattr(reward, weight), 0)
    object.__setattr__(reward, "tags", check_tags(reward.tags, owner))


def reward_for_template(reward, kind: type, tags: tuple[str, ...]):
    """An env's reward: ``kind(tags=tags)`` by default; a ``kind`` left at its default tags is given
    the template's ``tags`` (so the answer the prompt asks for passes the format), one set to other
    tags is refused; another callable (a custom reward with ``kind``'s call signature) is used as is."""
    if reward is None:
        return kind(tags=tuple(tags))
    if (not callable(reward) or isinstance(reward, type)  # a class: its instance is the reward
            or isinstance(reward, RatingReward | RankingReward) and not isinstance(reward, kind)):
        raise TypeError(f"reward must be a {kind.__name__} or a callable like it (None: the default), got {reward!r}")
    if not isinstance(reward, kind) or tuple(reward.tags) == tuple(tags):
        return reward
    if tuple(reward.tags) == kind.__dataclass_fields__["tags"].default:
        return dataclasses.replace(reward, tags=tuple(tags))
    raise ValueError(f"the reward checks the tags {tuple(reward.tags)} but the template asks for {tuple(tags)}: "
                     f"pass {kind.__name__}(..., tags=template.tags)")
