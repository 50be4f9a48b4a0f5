"""Scripted reference policies that act on the observation text alone (no model).

They bound what a learned policy should reach: ``UserAveragePolicy`` reads the user's average
from the prompt and answers it in the right format; ``FormatBreakingPolicy`` answers the same
number without the reasoning tags; ``SimilarItemsToolPolicy`` plays the multi-turn tool environment
(a call, then an answer). Each is a :class:`~recgym.agents.types.Policy`, so it plugs in wherever a
model does: evaluation, or as the offline teacher of the RecOne cold start.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from recgym.agents.types import Completion, Prompt, SamplingParams
from recgym.prompts import messages_to_text
from recgym.rewards import FOUR_STEP_TAGS, RANK_TAGS

_USER_AVG = re.compile(r"The user's average rating so far: ([0-9.]+)")
_ITEM_AVG = re.compile(r"The item's average rating so far: ([0-9.]+)")
_SCALE = re.compile(r"scale from ([0-9.]+) \(worst\) to ([0-9.]+) \(best\)")


def average_from_prompt(observation: str) -> float:
    """The user's prior average stated in the prompt, else the item's, else the scale's middle."""
    for pattern in (_USER_AVG, _ITEM_AVG):
        match = pattern.search(observation)
        if match:
            return float(match.group(1))
    match = _SCALE.search(observation)
    return (float(match.group(1)) + float(match.group(2))) / 2 if match else 3.0


class ScriptedPolicy:
    """A Policy whose completion is ``act(observation_text)``; completions carry text only (no
    token ids or logprobs), so they serve evaluation and cold-start data, not RL updates."""

    name = "scripted"

    def act(self, observation: str) -> str:
        raise NotImplementedError

    def generate(
        self, prompts: Sequence[Prompt], n: int = 1, sampling: SamplingParams | None = None
    ) -> list[list[Completion]]:
        out = []
        for prompt in prompts:
            text = self.act(prompt if isinstance(prompt, str) else messages_to_text(prompt))
            out.append([Completion(text, [], [], [], "stop") for _ in range(n)])
        return out


class UserAveragePolicy(ScriptedPolicy):
    """Answers the user's average rating, inside the four tags."""

    name = "user-avg, tagged"

    def __init__(self, rate_only: bool = False) -> None:
        self.rate_only = rate_only
        """Answer ``<rate>x</rate>`` alone (the template without reasoning steps)."""

    def act(self, observation: str) -> str:
        avg = average_from_prompt(observation)
        if self.rate_only:
            return f"<rate>{avg:.2f}</rate>"
        steps = [
            "The user rates around their average.",
            "No reading of the item is done.",
            "Assume the user's usual rating.",
            f"{avg:.2f}",
        ]
        return "".join(f"<{tag}>{text}</{tag}>" for tag, text in zip(FOUR_STEP_TAGS, steps))


class FormatBreakingPolicy(ScriptedPolicy):
    """Answers the same number as ``UserAveragePolicy`` but skips the reasoning tags."""

    name = "user-avg, untagged"

    def act(self, observation: str) -> str:
        return f"I think the rating is <rate>{average_from_prompt(observation):.2f}</rate>"


class SimilarItemsToolPolicy(ScriptedPolicy):
    """The scripted tool-using agent of ``RecRatingTools-*``: it asks for the user's rated items
    most similar to the target, then answers, in the four tags, the mean rating the user gave the
    closest of them (those within ``margin`` of the best similarity); with no rated item, the
    user's average from the task message."""

    name = "similar items, then rate (tools)"

    def __init__(self, limit: int = 3, margin: float = 0.25) -> None:
        self.limit = int(limit)
        """How many similar items to ask for."""
        self.margin = float(margin)
        """Items whose similarity is within this of the best one's count."""

    def act(self, observation: str) -> str:
        result = observation.rpartition("Result of similar_items(")[2] if "Result of similar_items(" in observation else None
        if result is None:
            return f"I should see how this user rated similar items. <call>similar_items(limit={self.limit})</call>"
        found = [(float(r), float(s)) for r, s in _SIMILAR.findall(result)]
        if found:
            best = max(s for _, s in found)
            close = [r for r, s in found if s >= best - self.margin]
            rating, basis = sum(close) / len(close), f"{len(close)} similar item(s) rated {', '.join(f'{r:g}' for r in close)}"
        else:
            profile = _PROFILE.search(observation)
            rating, basis = (float(profile.group(1)) if profile else average_from_prompt(observation)), "no rated item"
        steps = [f"From {basis}.", "Judged by the items closest to it.", "The user rates such items alike.", f"{rating:.2f}"]
        return "".join(f"<{tag}>{text}</{tag}>" for tag, text in zip(FOUR_STEP_TAGS, steps))


_SIMILAR = re.compile(r"rated ([0-9.]+)\..*?\(similarity ([0-9.]+)\)")
_PROFILE = re.compile(r"rated \d+ items before, ([0-9.]+) on average")
_LIKED = re.compile(r"I liked the (.+?)\.")
_DISLIKED = re.compile(r"I did not like the (.+?)\.")
_TRAITS = r"An? (\w+) (\w+) restaurant with an? (.+?) atmosphere"
_RESTAURANT = re.compile(r"Description: " + _TRAITS)


def _stated_tastes(text: str) -> tuple[set[str], set[str]]:
    """What the synthetic world's reviews in ``text`` say the diner liked and disliked."""
    liked = {p for m in _LIKED.findall(text) for p in m.split(" and the ")}
    disliked = {p for m in _DISLIKED.findall(text) for p in m.split(" or the ")}
    return liked, disliked


def _trait_match(liked: set[str], disliked: set[str], price: str, cuisine: str, atmosphere: str) -> tuple[float, list[str]]:
    """How far a restaurant's traits move a diner's rating, and which traits did."""
    change, notes = 0.0, []
    for trait, weight in ((f"{cuisine} food", 0.8), (f"{price} prices", 0.5), (f"{atmosphere} atmosphere", 0.4)):
        if trait in liked:
            change += weight
            notes.append(f"{trait}: liked")
        elif trait in disliked:
            change -= weight
            notes.append(f"{trait}: disliked")
    return change, notes


class SyntheticReasonerPolicy(ScriptedPolicy):
    """Reasons over the synthetic world's text, in the four tags, the way a reader could.

    It collects what the user's reviews say they liked and disliked, reads the target
    restaurant's cuisine, price and atmosphere from its description, and moves the user's
    average up or down for each match, then by how others rate the restaurant. A teacher for the
    RecOne cold start whose traces differ from prompt to prompt and reason from the text.
    """

    name = "synthetic reasoner, tagged"

    def __init__(self, rate_only: bool = False) -> None:
        self.rate_only = rate_only
        """Answer ``<rate>x</rate>`` alone (the template without reasoning steps)."""

    def act(self, observation: str) -> str:
        user_part, _, item_part = observation.partition("The target item:")
        liked, disliked = _stated_tastes(user_part)
        user_avg = _USER_AVG.search(observation)
        item_avg = _ITEM_AVG.search(observation)
        rating = float(user_avg.group(1)) if user_avg else average_from_prompt(observation)
        restaurant = _RESTAURANT.search(item_part)
        notes = []
        if restaurant:
            price, cuisine, atmosphere = restaurant.groups()
            change, notes = _trait_match(liked, disliked, price, cuisine, atmosphere)
            rating += change
            item = f"{price} {cuisine} place, {atmosphere} atmosphere"
        else:
            item = "no clear traits in the description"
        if item_avg:
            rating += 0.5 * (float(item_avg.group(1)) - 3.0)
            item += f"; others rate it {float(item_avg.group(1)):.1f}"
        rating = min(5.0, max(1.0, round(rating * 2) / 2))
        steps = [
            f"Likes {', '.join(sorted(liked)) or 'nothing stated'}; dislikes {', '.join(sorted(disliked)) or 'nothing stated'}.",
            item + ".",
            ("; ".join(notes) or "no trait the user mentioned") + ".",
            f"{rating:g}",
        ]
        if self.rate_only:
            return f"<rate>{rating:g}</rate>"
        return "".join(f"<{tag}>{text}</{tag}>" for tag, text in zip(FOUR_STEP_TAGS, steps))


_CANDIDATE = re.compile(r"^\[(\d+)\] [^:\n]*(?:: (.*))?$", re.MULTILINE)  # a candidate may have no description


class SyntheticRankerPolicy(ScriptedPolicy):
    """The ranking teacher of ``RecRank-Synthetic-v0``: reads the diner's stated likes and dislikes
    from the history, scores each candidate's cuisine, price and atmosphere against them, and
    answers the four ranking steps with the labels best first (ties keep the prompt's order)."""

    name = "synthetic ranker, tagged"

    def __init__(self, rank_only: bool = False) -> None:
        self.rank_only = rank_only
        """Answer ``<rank>...</rank>`` alone (the ``rank_only`` template)."""

    def act(self, observation: str) -> str:
        user_part, _, candidates = observation.partition("Candidates:")
        liked, disliked = _stated_tastes(user_part)
        scored = []
        for label, description in _CANDIDATE.findall(candidates):
            restaurant = re.match(_TRAITS, description)
            change = _trait_match(liked, disliked, *restaurant.groups())[0] if restaurant else 0.0
            scored.append((-change, int(label)))
        order = [label for _, label in sorted(scored)]
        best = order[:3]
        steps = [
            f"Likes {', '.join(sorted(liked)) or 'nothing stated'}; dislikes {', '.join(sorted(disliked)) or 'nothing stated'}.",
            f"{len(order)} candidates, read by cuisine, price and atmosphere.",
            f"Best matches: {', '.join(f'[{b}]' for b in best) or 'none'}.",
            " ".join(f"[{label}]" for label in order),
        ]
        if self.rank_only:
            return f"<rank>{steps[-1]}</rank>"
        return "".join(f"<{tag}>{text}</{tag}>" for tag, text in zip(RANK_TAGS, steps))
