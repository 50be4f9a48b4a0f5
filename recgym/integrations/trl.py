"""Run TRL's ``GRPOTrainer`` on a RecRating or RecRank environment.

``env_to_dataset`` renders an environment's samples into a ``datasets.Dataset`` with a
conversational ``prompt`` column plus the columns the env's reward needs (ratings: ``target_rating``
and the scale; ranking: ``target_position`` and ``num_candidates``); ``reward_functions`` returns
the environment's reward split into its parts (format and accuracy; ranking: format and ndcg), so
TRL logs each under its own name (``rewards/format_reward``, ``rewards/accuracy_reward``) and sums
them into the same total the environment's ``step`` gives. Everything TRL offers then applies:
vLLM colocate or server mode, DeepSpeed/FSDP, PEFT::

    from trl import GRPOConfig, GRPOTrainer
    from recgym.integrations.trl import env_to_dataset, reward_functions

    dataset = env_to_dataset("RecRating-Synthetic-v0", split="train")
    trainer = GRPOTrainer(model=..., reward_funcs=reward_functions("RecRating-Synthetic-v0"),
                          args=GRPOConfig(...), train_dataset=dataset)
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym

from recgym.data.schema import RatingScale, check_int
from recgym.rewards import RankingReward, RatingReward

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
    """A ``datasets.Dataset`` with one row per sample (ranking: candidate list) of ``split``:
    ``prompt`` (chat messages), the reward's columns (:func:`reward_function_class`'s ``COLUMNS``),
    ``user_id``, ``item_id`` (rating envs) and ``index``. ``num_samples`` takes the first ones
    (after a shuffle when ``seed`` is given); None or -1: all. A multi-turn (tool) env is refused:
    one completion per prompt cannot score its tool turns."""
    env = _make_env(env, split, env_kwargs)
    check_single_turn(env)
    return sample_rows(env, num_samples, seed)


def check_single_turn(env: gym.Env) -> None:
    """A ValueError for a multi-turn env (``RecRatingTools-*``), which TRL's single-completion
    rewards would score without its tool turns and costs."""
    if getattr(env.unwrapped, "multi_turn", False):
        name = env.spec.id if env.spec else type(env.unwrapped).__name__
        raise ValueError(f"{name} is multi-turn (tool calls): TRL's GRPOTrainer scores one completion per "
                         "prompt, without its tool turns and costs; train it with `recgym train grpo`, "
                         "recgym_verifiers or verl (`recgym export verl`)")


def sample_indices(length: int, num_samples: int | None = None, seed: int | None = None) -> list[int]:
    """The first ``num_samples`` of ``range(length)`` (None or -1: all), after a shuffle when ``seed``
    is given; a ValueError or TypeError for any other ``num_samples`` < 1 or a negative ``seed``."""
    import numpy as np

    indices = np.arange(length)
    if seed is not None:
        indices = np.random.default_rng(check_int("seed", seed, 0)).permutation(indices)
    if num_samples not in (None, -1):
        indices = indices[: check_int("num_samples (None or -1: all)", num_samples, 1)]
    return indices.tolist()


def sample_rows(env: gym.Env, num_samples: int | None = None, seed: int | None = None):
    """:func:`env_to_dataset`'s rows of a built env, multi-turn ones too (the verl export replays
    their turns)."""
    from datasets import Dataset

    core = env.unwrapped
    columns = reward_function_class(env).columns
    rows: dict[str, list[Any]] = {"prompt": [], "user_id": [], "index": []}
    for index in sample_indices(len(core), num_samples, seed):
        _, info = env.reset(options={"index": index})
        rows["prompt"].append(info["messages"])
        for key, value in {**columns(core, index, info), "user_id": str(info["user_id"]), "index": int(index),
                           **({"item_id": str(info["item_id"])} if "item_id" in info else {})}.items():
            rows.setdefault(key, []).append(value)
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

    PARTS = ("format", "accuracy")
    """The parts that sum to the env's reward."""
    COLUMNS = REWARD_COLUMNS

    def __init__(self, part: str, reward: RatingReward | None = None) -> None:
        if part not in (*self.PARTS, "total"):
            raise ValueError(f"part must be one of {', '.join(self.PARTS)}, total; got {part!r}")
        self.part = part
        self.reward = reward or RatingReward()
        self.__name__ = f"{part}_reward"  # TRL logs rewards/<__name__>

    @staticmethod
    def columns(core: Any, index: int, info: dict[str, Any]) -> dict[str, float]:
        """The reward's columns of one sample of a RecRating env."""
        scale: RatingScale = info["scale"]
        return {"target_rating": float(core.dataset.target(core.split, index)), "scale_low": float(scale.low),
                "scale_high": float(scale.high), "scale_step": float(scale.step)}

    def __call__(self, completions: list[Any], target_rating: list[float], scale_low: list[float],
                 scale_high: list[float], scale_step: list[float], **kwargs: Any) -> list[float]:
        out = []
        for completion, y, low, high, step in zip(completions, target_rating, scale_low, scale_high, scale_step):
            breakdown = self.reward(completion_text(completion), y, RatingScale(low, high, step))
            out.append(float(getattr(breakdown, self.part)))
        return out


class RankingRewardFunction:
    """One part (``"format"``, ``"ndcg"`` or ``"total"``) of a ``RankingReward`` as a TRL reward
    function: ``f(completions, target_position, num_candidates, **kwargs) -> list[float]``."""

    PARTS = ("format", "ndcg")
    COLUMNS = ("target_position", "num_candidates")

    def __init__(self, part: str, reward: RankingReward | None = None) -> None:
        if part not in (*self.PARTS, "total"):
            raise ValueError(f"part must be one of {', '.join(self.PARTS)}, total; got {part!r}")
        self.part = part
        self.reward = reward or RankingReward()
        self.__name__ = f"{part}_reward"

    @staticmethod
    def columns(core: Any, index: int, info: dict[str, Any]) -> dict[str, int]:
        """The reward's columns of one candidate list of a RecRank env (never shown to the model)."""
        return {"target_position": int(core.lists[index][1].target_position), "num_candidates": len(info["candidates"])}

    def __call__(self, completions: list[Any], target_position: list[int], num_candidates: list[int],
                 **kwargs: Any) -> list[float]:
        return [float(self.reward(completion_text(c), int(t), int(n))[self.part])
                for c, t, n in zip(completions, target_position, num_candidates)]


def reward_function_class(env: Any) -> type[RatingRewardFunction | RankingRewardFunction]:
    """The TRL reward function class for ``env``, by its task (so a custom ranking reward callable gets
    the ranking columns); given a reward instead of an env, by the reward's class."""
    core = getattr(env, "unwrapped", None)
    ranking = getattr(core, "task", "rating") == "ranking" if core is not None else isinstance(env, RankingReward)
    return RankingRewardFunction if ranking else RatingRewardFunction


def reward_functions(env: str | gym.Env | None = None, reward: RatingReward | RankingReward | None = None,
                     **env_kwargs: Any) -> list[RatingRewardFunction] | list[RankingRewardFunction]:
    """``[format_reward, accuracy_reward]`` (ranking: ``[format_reward, ndcg_reward]``) for
    ``GRPOTrainer(reward_funcs=...)``. With ``env``, the environment's own reward (its template's
    tags) is used, or ``reward`` scored as that env's task; equal weights sum to its total. A custom
    ranking reward callable, whose parts need not sum to its total, gives ``[total_reward]``. A
    multi-turn (tool) env is refused (:func:`check_single_turn`)."""
    task: Any = reward
    if env is not None:
        env = _make_env(env, "train", env_kwargs)
        check_single_turn(env)
        task, reward = env, reward if reward is not None else env.unwrapped.reward_fn
    cls = reward_function_class(task)
    if cls is RankingRewardFunction and not isinstance(reward, RankingReward | None):
        return [cls("total", reward)]
    return [cls(part, reward) for part in cls.PARTS]
