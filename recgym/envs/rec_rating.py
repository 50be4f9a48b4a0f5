"""``RecRatingEnv``: predict the rating a user gives an item, by writing text."""

from __future__ import annotations

import numbers
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np

from recgym.data.dataset import RatingDataset
from recgym.data.registry import check_arguments, load_dataset
from recgym.data.schema import SPLITS, check_int
from recgym.envs.registration import without_registered_defaults
from recgym.envs.spaces import UnicodeText
from recgym.prompts import PromptTemplate, get_template, messages_to_text
from recgym.rewards import RatingReward, RewardBreakdown, reward_for_template

RENDER_MODES = ["ansi"]


def choose_index(options: Any, count: int, rng: np.random.Generator, size_text: str) -> int:
    """``options["index"]`` checked against ``count`` (``size_text`` formats it for the error), else
    an index drawn uniformly with ``rng``. ``index`` is the only option."""
    if options is None:
        options = {}
    if not isinstance(options, dict):
        raise TypeError(f"options must be a dict such as {{'index': 3}}, got {options!r}")
    if unknown := sorted(set(options) - {"index"}):
        raise ValueError(f"unknown reset option(s) {unknown}: the only one is 'index'")
    if "index" not in options:
        return int(rng.integers(count))
    index = options["index"]
    if isinstance(index, bool) or not isinstance(index, int) and not hasattr(index, "__index__"):
        raise TypeError(f"options['index'] must be an int, got {index!r}")
    index = int(index)
    if not 0 <= index < count:
        raise IndexError(f"options['index']={index} out of range: {size_text.format(count)}")
    return index


def check_action(action: Any, in_progress: bool, max_length: int, episode: str = "") -> None:
    """A RuntimeError when no episode is in progress (``episode`` says more); a TypeError or
    ValueError when ``action`` is not a str of at most ``max_length`` characters."""
    if not in_progress:
        raise RuntimeError(f"no episode in progress: call reset() before step(){f' ({episode})' if episode else ''}")
    if not isinstance(action, str):
        raise TypeError(f"the action must be the completion text (str), got {type(action).__name__}")
    if len(action) > max_length:
        raise ValueError(f"completion of {len(action)} characters exceeds max_action_length={max_length}")


def check_observation(text: str, max_length: int, what: str, shorten: str) -> str:
    """``text`` if it fits the observation space, else a ValueError saying how to make it fit."""
    if len(text) > max_length:
        raise ValueError(f"the prompt of {what} has {len(text)} characters, over max_observation_length={max_length}: "
                         f"raise max_observation_length or shorten the prompt ({shorten})")
    return text


def check_render_mode(render_mode: str | None) -> str | None:
    """``render_mode`` if it is None or one of :data:`RENDER_MODES`, else a ValueError."""
    if render_mode is not None and render_mode not in RENDER_MODES:
        raise ValueError(f"render_mode must be None or 'ansi' (render() returns the episode's text), got {render_mode!r}")
    return render_mode


def step_text(action: str, observation: str, info: dict[str, Any]) -> str:
    """What ``render()`` shows in ``"ansi"`` mode after a step: the turn, then what came back (the
    next observation, or once the episode is over the reward and its parts)."""
    if "reward_breakdown" not in info:
        return f"[assistant]\n{action}\n\n[user]\n{observation}"
    parts = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in info["reward_breakdown"].items())
    ended = f" ({info['truncation']})" if "truncation" in info else ""
    return f"[assistant]\n{action}\n\n[reward{ended}]\n{parts}"


def rendered(render_mode: str | None, text: str) -> str | None:
    """What ``render()`` returns: ``text`` in ``"ansi"`` mode; None, with a warning, without a mode."""
    if render_mode is None:
        gym.logger.warn("render() without a render_mode returns None: make the env with render_mode='ansi'")
        return None
    return text


def check_reward_total(total: Any, reward: Any) -> float:
    """``total`` as a float if it is a finite real number (not a bool or str), else a ValueError or
    TypeError naming the reward function ``reward``."""
    name = getattr(reward, "__qualname__", type(reward).__name__)
    if isinstance(total, bool) or not isinstance(total, numbers.Real):
        raise TypeError(f"the reward {name} returned a total of {total!r} ({type(total).__name__}): it must be a "
                        "finite number")
    if not np.isfinite(total):
        raise ValueError(f"the reward {name} returned a total of {total!r}: it must be a finite number")
    return float(total)


def check_breakdown(breakdown: Any, reward: Any) -> RewardBreakdown:
    """``breakdown`` if the reward function ``reward`` returned a ``RewardBreakdown`` with a finite
    number as its total, else a TypeError or ValueError saying so."""
    if not isinstance(breakdown, RewardBreakdown):
        raise TypeError(f"the reward returned {type(breakdown).__name__}: reward(completion, target, scale) must return a "
                        "recgym.rewards.RewardBreakdown (format, accuracy, total, parsed_rating, abs_error, format_ok), "
                        "as RatingReward does")
    check_reward_total(breakdown.total, reward)
    return breakdown


class RecRatingEnv(gym.Env[str, str]):
    """One episode is one rating to predict.

    ## Description
    The agent sees a user's recent ratings and reviews and a target item (its description,
    others' recent reviews, the user's and item's average past rating), all strictly from before
    the target rating's time, rendered as a Think-before-Recommendation prompt. It answers with a
    completion that reasons in four tagged steps, ``<analyze user>``, ``<analyze item>``,
    ``<match>``, ``<rate>``, the last holding the predicted rating.

    ## Observation space
    ``UnicodeText(max_observation_length)``: the prompt as text (system and user message); a
    longer prompt is a ValueError at reset (the prompt is never cut to fit).
    ``info["messages"]`` holds the same as chat messages, which is what chat models need.

    ## Action space
    ``UnicodeText(max_action_length)``: the completion text, any unicode string; a longer one is a
    ValueError at step.

    ## Rewards
    ``RatingReward`` (paper default): format +0.5 if each tag pair occurs once, in order, non-empty,
    and the rating is a number on the scale, else -0.5; plus accuracy ``1 - |y - ŷ| / max_error``
    with ŷ clipped to the scale and ``max_error`` the scale's range (0 when no rating parses).
    Range on 1–5: [-0.5, 1.5].

    ## Episode end
    Every episode terminates after one step (``terminated=True``); there is no truncation.

    ## Arguments
    - ``dataset``: a registered dataset name (``"synthetic"``, ``"yelp"``, ...) or a ``RatingDataset``.
    - ``split``: ``"train"``, ``"valid"`` or ``"test"``. ``len(env.unwrapped)`` is its number of samples.
    - ``template``: ``"think"`` (default), ``"rate_only"`` (ablation without reasoning) or a ``PromptTemplate``.
    - ``reward``: a ``RatingReward`` (by default the paper's) or a callable like it:
      ``reward(completion, target, scale)`` returning a ``RewardBreakdown`` (anything else is a
      TypeError at step). A ``RatingReward`` checks the template's tags: one left at its default
      tags is given the template's, one set to other tags is refused.
    - ``max_user_history`` / ``max_item_history``: how many past ratings the prompt shows.
    - ``render_mode``: None or ``"ansi"``: ``render()`` returns the prompt after ``reset``, the
      completion and its reward after ``step``.
    - any other keyword goes to the dataset loader (e.g. ``data_dir``, ``num_users``, ``seed``).

    ## Reset and info
    ``reset(seed=None, options=None)`` draws a sample uniformly; ``options={"index": i}`` pins one
    (GRPO groups share a sample that way). ``info``: ``messages``, ``user_id``, ``item_id``,
    ``index``, ``scale`` (never the true rating). After ``step``, ``info`` adds
    ``reward_breakdown``, ``target_rating``, ``parsed_rating`` (None if none parsed), ``abs_error``.
    ``index`` identifies the sample (its true rating is in the dataset): give a policy the
    observation (or ``info["messages"]``) only.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": RENDER_MODES, "render_fps": 1}

    def __init__(
        self,
        dataset: str | RatingDataset = "synthetic",
        split: str = "train",
        template: str | PromptTemplate = "think",
        reward: RatingReward | None = None,
        max_user_history: int = 10,
        max_item_history: int = 5,
        max_observation_length: int = 200_000,
        max_action_length: int = 100_000,
        render_mode: str | None = None,
        **dataset_kwargs: Any,
    ) -> None:
        self.render_mode = check_render_mode(render_mode)
        if split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        if isinstance(dataset, str):
            check_arguments(dataset, dataset_kwargs, type(self))
            dataset = load_dataset(dataset, **dataset_kwargs)
        elif dataset_kwargs := without_registered_defaults(dataset_kwargs):
            raise TypeError(f"dataset loader arguments {sorted(dataset_kwargs)} given with a prepared dataset")
        if not isinstance(dataset, RatingDataset):
            raise TypeError(f"dataset must be a dataset name or a RatingDataset, got {type(dataset).__name__}")
        self.dataset = dataset
        self.split = split
        self.scale = dataset.scale
        self.template = get_template(template)
        self.reward_fn = reward_for_template(reward, RatingReward, self.template.tags)
        self.max_user_history = check_int("max_user_history", max_user_history, 0)
        self.max_item_history = check_int("max_item_history", max_item_history, 0)
        self.num_samples = dataset.require_samples(split)
        self.observation_space = UnicodeText(check_int("max_observation_length", max_observation_length, 1))
        self.action_space = UnicodeText(check_int("max_action_length", max_action_length, 1))
        self._index: int | None = None
        self._rendered = ""

    def __len__(self) -> int:
        return self.num_samples

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        super().reset(seed=seed)
        self._index = None
        index = self._choose_index(options)
        context = self.dataset.context(self.split, index, self.max_user_history, self.max_item_history)
        messages = self.template.messages(context, self.scale)
        text = check_observation(messages_to_text(messages), self.observation_space.max_length, f"sample {index}",
                                 "max_user_history, max_item_history")
        self._index = index
        self._target = context.target_rating
        self._rendered = text
        info = {
            "messages": messages,
            "user_id": context.user_id,
            "item_id": context.item_id,
            "index": index,
            "scale": self.scale,
        }
        return text, info

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        self._check_action(action, "an episode is one reset and one step")
        breakdown = check_breakdown(self.reward_fn(action, self._target, self.scale), self.reward_fn)
        info = {
            "index": self._index,
            "reward_breakdown": breakdown.as_dict(),
            "target_rating": self._target,
            "parsed_rating": breakdown.parsed_rating,
            "abs_error": breakdown.abs_error,
        }
        self._index = None
        self._rendered = step_text(action, "", info)
        return "", float(breakdown.total), True, False, info

    def render(self) -> str | None:
        """``"ansi"``: the prompt after ``reset``, the completion and its reward after ``step``
        (``""`` before the first ``reset``)."""
        return rendered(self.render_mode, self._rendered)

    def _choose_index(self, options: dict[str, Any] | None) -> int:
        return choose_index(options, self.num_samples, self.np_random, f"split {self.split!r} has {{}} samples")

    def _check_action(self, action: Any, episode: str) -> None:
        check_action(action, self._index is not None, self.action_space.max_length, episode)
