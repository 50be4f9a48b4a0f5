"""The Think-before-Recommendation prompt: a system prompt asking for four tagged reasoning
steps, and a user prompt rendering one :class:`RatingContext`.

Text from data (reviews, titles, descriptions) passes through :func:`neutralize`, so it can never
open or close one of our tags.
"""

from __future__ import annotations

from dataclasses import dataclass

from recgym.data.schema import RatingContext, RatingScale
from recgym.rewards import FOUR_STEP_TAGS, RATE_ONLY_TAGS

_ANGLE = str.maketrans({"<": "‹", ">": "›"})

_STEP_GUIDE = {
    "analyze user": "what this user likes and dislikes, judged from their past ratings and reviews",
    "analyze item": "what the target item offers, judged from its description and others' reviews",
    "match": "how well the item's traits fit the user's tastes, point by point",
    "rate": "the predicted rating alone: a single number from {low:g} to {high:g}{step}",
}


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


@dataclass(frozen=True)
class PromptTemplate:
    """Renders a sample as chat messages. Swap it in an environment with ``template=...``."""

    tags: tuple[str, ...] = FOUR_STEP_TAGS
    """Tags the completion must contain, in order; the last holds the rating."""
    max_review_chars: int = 200
    """Reviews (the user's and others') are cut to this many characters."""
    max_description_chars: int = 400
    system_intro: str = "You are a recommender system that predicts the rating a user will give an item."

    def system_prompt(self, scale: RatingScale) -> str:
        step = "" if scale.step == 1 else f" in steps of {scale.step:g}"
        steps = "\n".join(
            f"<{tag}>{_STEP_GUIDE.get(tag, tag).format(low=scale.low, high=scale.high, step=step)}</{tag}>"
            for tag in self.tags
        )
        order = "Think before you rate. Answer" if len(self.tags) > 1 else "Answer"
        return (
            f"{self.system_intro} {order} in exactly this format, each part once, in this order:\n"
            f"{steps}\n"
            f"Decimals are allowed in <{self.tags[-1]}>. Write nothing after </{self.tags[-1]}>."
        )

    def user_prompt(self, context: RatingContext, scale: RatingScale) -> str:
        lines = [f"Ratings are on a scale from {scale.low:g} (worst) to {scale.high:g} (best).", ""]
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


#: The paper's template.
THINK_BEFORE_RECOMMENDATION = PromptTemplate()
#: The ablation without reasoning structure: the model answers ``<rate>x</rate>`` directly.
RATE_ONLY = PromptTemplate(tags=RATE_ONLY_TAGS)

TEMPLATES = {"think": THINK_BEFORE_RECOMMENDATION, "rate_only": RATE_ONLY}


def get_template(template: str | PromptTemplate) -> PromptTemplate:
    if isinstance(template, PromptTemplate):
        return template
    if template not in TEMPLATES:
        raise ValueError(f"unknown template {template!r}; choose one of {', '.join(TEMPLATES)} or pass a PromptTemplate")
    return TEMPLATES[template]


def messages_to_text(messages: list[dict[str, str]]) -> str:
    """A plain-text observation for the chat messages (what ``env.reset`` returns)."""
    return "\n\n".join(f"[{m['role']}]\n{m['content']}" for m in messages)
