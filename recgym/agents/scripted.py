"""Scripted reference policies that act on the observation text alone (no model).

They bound what a learned policy should reach: ``UserAveragePolicy`` reads the user's average
from the prompt and answers it in the right format; ``FormatBreakingPolicy`` answers the same
number without the reasoning tags.
"""

from __future__ import annotations

import re

from recgym.rewards import FOUR_STEP_TAGS

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


class UserAveragePolicy:
    """Answers the user's average rating, inside the four tags."""

    name = "user-avg, tagged"

    def act(self, observation: str) -> str:
        avg = average_from_prompt(observation)
        steps = [
            "The user rates around their average.",
            "No reading of the item is done.",
            "Assume the user's usual rating.",
            f"{avg:.2f}",
        ]
        return "".join(f"<{tag}>{text}</{tag}>" for tag, text in zip(FOUR_STEP_TAGS, steps))


class FormatBreakingPolicy:
    """Answers the same number as ``UserAveragePolicy`` but skips the reasoning tags."""

    name = "user-avg, untagged"

    def act(self, observation: str) -> str:
        return f"I think the rating is <rate>{average_from_prompt(observation):.2f}</rate>"
