"""The Think-before-Recommendation prompt: a system prompt asking for four tagged reasoning
steps, and a user prompt rendering one :class:`RatingContext`.

Text from data (reviews, titles, descriptions) passes through :func:`neutralize`, so it can never
open or close one of our tags.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from recgym.data.schema import RatingContext, RatingScale, check_int
from recgym.rewards import FOUR_STEP_TAGS, RANK_ONLY_TAGS, RANK_TAGS, RATE_ONLY_TAGS, check_tags

_ANGLE = str.maketrans({"<": "‹", ">": "›"})

_STEP_GUIDE = {
    "analyze user": "what this user likes and dislikes, judged from their past ratings and reviews",
    "analyze item": "what the target item offers, judged from its description and others' reviews",
    "match": "how well the item's traits fit the user's tastes, point by point",
}
#: What the last tag, the one the rating is read from, holds (whatever its name).
_RATE_GUIDE = "the predicted rating alone: a single number from {low:g} to {high:g}{step}"


def neutralize(text: str) -> str:
    """Replace angle brackets so data text cannot form tags (``<rate>`` becomes ``‹rate›``)."""
    return str(text).translate(_ANGLE)


def truncate(text: str, max_chars: int) -> str:
    text = " ".join(neutralize(text).split())
    if max_chars <= 0 or len(text) <= max_chars:
        return text
    return text[: max(0, max_chars - 1)].rstrip() + "…"


def _rating(value: float) -> str:
    return f"{value:g}"


def scale_line(scale: RatingScale) -> str:
    """The sentence both prompts open with, so ``rated 9`` reads on the data's own scale."""
    return f"Ratings are on a scale from {scale.low:g} (worst) to {scale.high:g} (best)."


def _check_template(template: PromptTemplate | RankingTemplate) -> None:
    object.__setattr__(template, "tags", check_tags(template.tags, type(template).__name__))
    for name in ("max_review_chars", "max_description_chars"):
        check_int(f"{type(template).__name__}.{name} (0: no cut)", getattr(template, name), 0)


def _format_lines(tags: tuple[str, ...], guides: dict[str, str], answer: str) -> str:
    """``<tag>guide</tag>`` per tag; the last tag's guide is ``answer``, since the parser reads the
    answer from the last tag whatever its name."""
    lines = [f"<{tag}>{guides.get(tag, tag)}</{tag}>" for tag in tags[:-1]]
    return "\n".join([*lines, f"<{tags[-1]}>{answer}</{tags[-1]}>"])


@dataclass(frozen=True)
class PromptTemplate:
    """Renders a sample as chat messages. Swap it in an environment with ``template=...``."""

    tags: tuple[str, ...] = FOUR_STEP_TAGS
    """Tags the completion must contain, in order (distinct names without ``<``, ``>``, ``/``); the
    last holds the rating, whatever its name, and the system prompt says so."""
    max_review_chars: int = 200
    """Reviews (the user's and others') are cut to this many characters (0: no cut)."""
    max_description_chars: int = 400
    """The item's description is cut to this many characters (0: no cut)."""
    system_intro: str = "You are a recommender system that predicts the rating a user will give an item."

    def __post_init__(self) -> None:
        _check_template(self)

    def system_prompt(self, scale: RatingScale) -> str:
        step = "" if scale.step == 1 else f" in steps of {scale.step:g}"
        steps = _format_lines(self.tags, _STEP_GUIDE, _RATE_GUIDE.format(low=scale.low, high=scale.high, step=step))
        order = "Think before you rate. Answer" if len(self.tags) > 1 else "Answer"
        return (
            f"{self.system_intro} {order} in exactly this format, each part once, in this order:\n"
            f"{steps}\n"
            f"Decimals are allowed in <{self.tags[-1]}>. Write nothing after </{self.tags[-1]}>."
        )

    def user_prompt(self, context: RatingContext, scale: RatingScale) -> str:
        lines = [scale_line(scale), ""]
        lines.append("The user's recent ratings, oldest first:")
        if context.user_history:
            for n, entry in enumerate(context.user_history, 1):
                review = truncate(entry.review, self.max_review_chars)
                line = f'{n}. "{truncate(entry.item_title, 120)}" rated {_rating(entry.rating)}'
                lines.append(f'{line}. Review: "{review}"' if review else line + ".")
        else:
            lines.append("(none)")
        if context.user_avg is not None:
            lines.append(
                f"The user's average rating so far: {context.user_avg:.2f} over {context.user_num_prior} ratings."
            )
        lines += ["", "The target item:", f"Title: {truncate(context.item_title, 200)}"]
        if context.item_categories:
            lines.append(f"Categories: {truncate(context.item_categories, 200)}")
        if context.item_description:
            lines.append(f"Description: {truncate(context.item_description, self.max_description_chars)}")
        if context.item_history:
            lines.append("Recent reviews by other users:")
            for entry in context.item_history:
                review = truncate(entry.review, self.max_review_chars)
                lines.append(f'- rated {_rating(entry.rating)}: "{review}"' if review else f"- rated {_rating(entry.rating)}")
        if context.item_avg is not None:
            lines.append(
                f"The item's average rating so far: {context.item_avg:.2f} over {context.item_num_prior} ratings."
            )
        lines += ["", "How will this user rate the target item?"]
        return "\n".join(lines)

    def messages(self, context: RatingContext, scale: RatingScale) -> list[dict[str, str]]:
        return [
            {"role": "system", "content": self.system_prompt(scale)},
            {"role": "user", "content": self.user_prompt(context, scale)},
        ]


_RANK_STEP_GUIDE = {
    "analyze user": "what this user likes and dislikes, judged from their past items, ratings and reviews",
    "analyze candidates": "what each candidate offers, judged from its description",
    "match": "which candidates fit the user's tastes best, and why",
}
#: What the last tag, the one the order is read from, holds (whatever its name).
_RANK_GUIDE = "every candidate label exactly once, best first, e.g. [3] [1] [2]"


@dataclass(frozen=True)
class RankingTemplate:
    """Renders a candidate list (``RecRank-*``) as chat messages. Swap it with ``template=...``."""

    tags: tuple[str, ...] = RANK_TAGS
    """Tags the completion must contain, in order (distinct names without ``<``, ``>``, ``/``); the
    last holds the ordered candidate labels, whatever its name, and the system prompt says so."""
    max_review_chars: int = 200
    """The user's past reviews are cut to this many characters (0: no cut)."""
    max_description_chars: int = 400
    """Each candidate's description is cut to this many characters (0: no cut)."""
    system_intro: str = "You are a recommender system that ranks candidate items for a user."

    def __post_init__(self) -> None:
        _check_template(self)

    def system_prompt(self) -> str:
        steps = _format_lines(self.tags, _RANK_STEP_GUIDE, _RANK_GUIDE)
        order = "Think before you rank. Answer" if len(self.tags) > 1 else "Answer"
        return (
            f"{self.system_intro} {order} in exactly this format, each part once, in this order:\n"
            f"{steps}\n"
            f"Write nothing after </{self.tags[-1]}>."
        )

    def user_prompt(self, history: Sequence[tuple[str, str, float, str]], candidates: Sequence[tuple[str, str]],
                    scale: RatingScale) -> str:
        """``history``: the user's past items, oldest first, as (title, categories, rating, review) on
        ``scale``; ``candidates``: (title, description) in prompt order, labelled ``[1]``, ``[2]``, ...
        Empty categories, reviews and descriptions are left out with their punctuation."""
        lines = [scale_line(scale), "", "User's past items, oldest first:"]
        for title, categories, rating, review in history:
            categories, review = truncate(categories, 200), truncate(review, self.max_review_chars)
            line = f"- {truncate(title, 120)}{f' ({categories})' if categories else ''}, rated {_rating(rating)}"
            lines.append(f"{line}: {review}" if review else line)
        if not history:
            lines.append("- none")
        lines.append("Candidates:")
        for j, (title, description) in enumerate(candidates, 1):
            description = truncate(description, self.max_description_chars)
            lines.append(f"[{j}] {truncate(title, 120)}{f': {description}' if description else ''}")
        return "\n".join(lines)

    def messages(self, history: Sequence[tuple[str, str, float, str]], candidates: Sequence[tuple[str, str]],
                 scale: RatingScale) -> list[dict[str, str]]:
        return [
            {"role": "system", "content": self.system_prompt()},
            {"role": "user", "content": self.user_prompt(history, candidates, scale)},
        ]


#: The paper's template.
THINK_BEFORE_RECOMMENDATION = PromptTemplate()
#: The ablation without reasoning structure: the model answers ``<rate>x</rate>`` directly.
RATE_ONLY = PromptTemplate(tags=RATE_ONLY_TAGS)
#: Think-before-Recommendation for ranking: user analysis, candidate analysis, match, ``<rank>``.
THINK_BEFORE_RANKING = RankingTemplate()
#: The ranking ablation without reasoning structure: ``<rank>[2] [1] ...</rank>`` alone.
RANK_ONLY = RankingTemplate(tags=RANK_ONLY_TAGS)

TEMPLATES = {"think": THINK_BEFORE_RECOMMENDATION, "rate_only": RATE_ONLY}
RANKING_TEMPLATES = {"think": THINK_BEFORE_RANKING, "rank_only": RANK_ONLY}


def get_template(template: str | PromptTemplate | RankingTemplate,
                 task: str = "rating") -> PromptTemplate | RankingTemplate:
    """The named template of ``task`` (``"rating"`` or ``"ranking"``), or ``template`` itself."""
    kind, names = (RankingTemplate, RANKING_TEMPLATES) if task == "ranking" else (PromptTemplate, TEMPLATES)
    if isinstance(template, kind):
        return template
    if not isinstance(template, str) or template not in names:
        raise ValueError(f"unknown {task} template {template!r}; choose one of {', '.join(names)} "
                         f"or pass a {kind.__name__}")
    return names[template]


def messages_to_text(messages: list[dict[str, str]]) -> str:
    """A plain-text observation for the chat messages (what ``env.reset`` returns)."""
    return "\n\n".join(f"[{m['role']}]\n{m['content']}" for m in messages)
