"""Group-aware vectorization: runs of ``group_size`` consecutive sub-environments share one sample
per reset, so a GRPO group holds G completions for the same prompt."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space

from recgym.envs.rec_rating import RecRatingEnv


def check_group_shape(num_envs: int, group_size: int) -> int:
    """Number of prompts per reset for ``num_envs`` sub-envs in groups of ``group_size``."""
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 2:
        raise ValueError(
            f"group_size must be an int >= 2 (GRPO compares completions within a group), got {group_size!r}"
        )
    if num_envs < 1 or num_envs % group_size:
        raise ValueError(
            f"num_envs={num_envs} must be a positive multiple of group_size={group_size} "
            f"(num_envs = prompts per step x group size)"
        )
    return num_envs // group_size


class GroupedRatingVecEnv(gym.vector.VectorEnv):
    """``num_prompts * group_size`` RecRatingEnv copies; each group of ``group_size`` shares a sample.

    ``reset`` returns ``(observations, infos)`` with one entry per sub-env (infos as a list of
    dicts, not gymnasium's dict of arrays, since they hold chat messages); ``step(actions)``
    returns ``(observations, rewards, terminated, truncated, infos)``. Sample indices are drawn
    without replacement within a reset, or given as ``options={"indices": [...]}``.
    """

    def __init__(self, env_fns: Sequence[Callable[[], gym.Env]], group_size: int) -> None:
        self.num_prompts = check_group_shape(len(env_fns), group_size)
        self.group_size = group_size
        self.envs = [fn() for fn in env_fns]
        self.num_envs = len(self.envs)
        first = self.envs[0].unwrapped
        if not isinstance(first, RecRatingEnv):
            raise TypeError("GroupedRatingVecEnv needs RecRatingEnv sub-environments")
        self.num_samples = len(first)
        self.single_observation_space = first.observation_space
        self.single_action_space = first.action_space
        self.observation_space = batch_space(first.observation_space, self.num_envs)
        self.action_space = batch_space(first.action_space, self.num_envs)
        self.metadata = {**first.metadata, "autoreset_mode": AutoresetMode.DISABLED}
        self._np_random = np.random.default_rng()

    def __len__(self) -> int:
        return self.num_samples

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[tuple[str, ...], list[dict[str, Any]]]:
        if seed is not None:
            self._np_random = np.random.default_rng(seed)
        options = options or {}
        if "indices" in options:
            indices = [int(i) for i in options["indices"]]
            if len(indices) != self.num_prompts:
                raise ValueError(f"options['indices'] must hold {self.num_prompts} sample indices, got {len(indices)}")
        else:
            replace = self.num_prompts > self.num_samples
            indices = self.np_random.choice(self.num_samples, size=self.num_prompts, replace=replace).tolist()
        observations, infos = [], []
        for k, env in enumerate(self.envs):
            obs, info = env.reset(options={"index": indices[k // self.group_size]})
            info["group"] = k // self.group_size
            observations.append(obs)
            infos.append(info)
        return tuple(observations), infos

    def step(self, actions: Sequence[str]):
        if len(actions) != self.num_envs:
            raise ValueError(f"expected {self.num_envs} actions (one per sub-env), got {len(actions)}")
        results = [env.step(a) for env, a in zip(self.envs, actions)]
        observations = tuple(r[0] for r in results)
        rewards = np.array([r[1] for r in results], dtype=np.float64)
        terminated = np.array([r[2] for r in results], dtype=bool)
        truncated = np.array([r[3] for r in results], dtype=bool)
        return observations, rewards, terminated, truncated, [r[4] for r in results]

    def close(self) -> None:
        for env in self.envs:
            env.close()


def make_group_vec(env_id: str, num_prompts: int, group_size: int, **env_kwargs: Any) -> GroupedRatingVecEnv:
    """``num_prompts`` groups of ``group_size`` sub-envs of ``env_id`` (built with ``gymnasium.make``)."""
    check_group_shape(num_prompts * group_size, group_size)
    return GroupedRatingVecEnv([lambda: gym.make(env_id, **env_kwargs)] * (num_prompts * group_size), group_size)


def grouped_vector_entry_point(num_envs: int, group_size: int | None = None, **env_kwargs: Any):
    """``gymnasium.make_vec(id, num_envs=B*G, group_size=G)`` gives a GroupedRatingVecEnv; without
    ``group_size`` it gives a plain ``SyncVectorEnv``."""
    if group_size is None:
        return gym.vector.SyncVectorEnv([lambda: RecRatingEnv(**env_kwargs)] * num_envs)
    return GroupedRatingVecEnv([lambda: RecRatingEnv(**env_kwargs)] * num_envs, group_size)
