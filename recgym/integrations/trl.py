"""Run TRL's ``GRPOTrainer`` on a RecRating environment.

``env_to_dataset`` renders an environment's samples into a ``datasets.Dataset`` with a
conversational ``prompt`` column plus the columns the reward needs (``target_rating`` and the
scale); ``reward_functions`` returns the environment's reward split into its format and accuracy
parts, so TRL logs each under its own name (``rewards/format_reward``, ``rewards/accuracy_reward``)
and sums them into the same total the environment's ``step`` gives. Everything TRL offers then
applies: vLLM colocate or server mode, DeepSpeed/FSDP, PEFT::

    from trl import GRPOConfig, GRPOTrainer
    from recgym.integrations.trl import env_to_dataset, reward_functions

    dataset = env_to_dataset("RecRating-Synthetic-v0", split="train")
    trainer = GRPOTrainer(model=..., reward_funcs=reward_functions("RecRating-Synthetic-v0"),
                          args=GRPOConfig(...), train_dataset=dataset)
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym

from recgym.data.schema import RatingScale
from recgym.rewards import RatingReward

REWARD_COLUMNS = ("target_rating", "scale_low", "scale_high", "scale_step")


def _make_env(env: str | gym.Env, split: str, env_kwargs: dict[str, Any]) -> gym.Env:
    if isinstance(env, str):
        import recgym  # noqa: F401  (registers the environments)

        return gym.make(env, split=split, **env_kwargs)
    return env


def env_to_dataset(
    env: str | gym.Env,
    split: str = "train",
    num_samples: int | None = None,
    seed: int | None = None,
    **env_kwargs: Any,
):
    """A ``datasets.Dataset`` with one row per sample of ``split``: ``prompt`` (chat messages),
    ``target_rating``, ``scale_low``/``scale_high``/``scale_step``, ``user_id``, ``item_id``,
    ``index``. ``num_samples`` takes the first ones (after a shuffle when ``seed`` is given)."""
    import numpy as np
    from datasets import Dataset

    env = _make_env(env, split, env_kwargs)
    core = env.unwrapped
    indices = np.arange(len(core))
    if seed is not None:
        indices = np.random.default_rng(seed).permutation(indices)
    if num_samples is not None:
        indices = indices[:num_samples]
    rows: dict[str, list[Any]] = {k: [] for k in ("prompt", *REWARD_COLUMNS, "user_id", "item_id", "index")}
    targets = np.asarray(core.dataset.targets(core.split), dtype=float)
    for index in indices.tolist():
        _, info = env.reset(options={"index": index})
        scale: RatingScale = info["scale"]
        rows["prompt"].append(info["messages"])
        rows["target_rating"].append(float(targets[index]))
        rows["scale_low"].append(float(scale.low))
        rows["scale_high"].append(float(scale.high))
        rows["scale_step"].append(float(scale.step))
        rows["user_id"].append(str(info["user_id"]))
        rows["item_id"].append(str(info["item_id"]))
        rows["index"].append(int(index))
    return Dataset.from_dict(rows)


def completion_text(completion: Any) -> str:
    """TRL passes plain strings, or for chat prompts a list of messages; take the assistant text."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list):
        return "".join(m.get("content", "") for m in completion if isinstance(m, dict) and m.get("role") == "assistant")
    return str(completion)


class RatingRewardFunction:
    """One part (``"format"``, ``"accuracy"`` or ``"total"``) of a ``RatingReward`` as a TRL reward
    function: ``f(completions, target_rating, scale_low, scale_high, scale_step, **kwargs) -> list[float]``.
    A class instance, not a closure, so TRL can pickle it for its worker processes."""

    def __init__(self, part: str, reward: RatingReward | None = None) -> None:
        if part not in ("format", "accuracy", "total"):
            raise ValueError(f"part must be format, accuracy or total, got {part!r}")
        self.part = part
        self.reward = reward or RatingReward()
        self.__name__ = f"{part}_reward"  # TRL logs rewards/<__name__>

    def __call__(self, completions: list[Any], target_rating: list[float], scale_low: list[float],
                 scale_high: list[float], scale_step: list[float], **kwargs: Any) -> list[float]:
        out = []
        for completion, y, low, high, step in zip(completions, target_rating, scale_low, scale_high, scale_step):
            breakdown = self.reward(completion_text(completion), y, RatingScale(low, high, step))
            out.append(float(getattr(breakdown, self.part)))
        return out


def reward_functions(env: str | gym.Env | None = None, reward: RatingReward | None = None,
                     **env_kwargs: Any) -> list[RatingRewardFunction]:
    """``[format_reward, accuracy_reward]`` for ``GRPOTrainer(reward_funcs=...)``. With ``env``,
    the environment's own reward (its template's tags) is used; equal weights sum to its total."""
    if reward is None and env is not None:
        reward = _make_env(env, "train", env_kwargs).unwrapped.reward_fn
    return [RatingRewardFunction("format", reward), RatingRewardFunction("accuracy", reward)]
