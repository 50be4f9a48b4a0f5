"""Group-aware vectorization: runs of ``group_size`` consecutive sub-environments share one sample
per reset, so a GRPO group holds G completions for the same prompt."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space

from recgym.data.schema import check_int
from recgym.envs.rec_rating import RecRatingEnv, check_action

NO_MAX_EPISODE_STEPS = ("max_episode_steps is not an argument here: RecRating and RecRank episodes end after one step, "
                        "RecRatingTools episodes at max_turns (pass max_turns=N to shorten them)")


def autoreset_mode_of(mode: AutoresetMode | str | None, default: AutoresetMode) -> AutoresetMode:
    """``mode`` as an ``AutoresetMode`` (``default`` for None); a ValueError naming the modes for any other value."""
    if mode is None:
        return default
    try:
        return AutoresetMode(mode)
    except ValueError:
        raise ValueError(f"autoreset_mode must be one of {', '.join(m.value for m in AutoresetMode)} "
                         f"(gymnasium.vector.AutoresetMode), got {mode!r}") from None


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
    dicts, not gymnasium's dict of arrays, since they hold chat messages, so gymnasium's vector
    wrappers that read infos, such as ``RecordEpisodeStatistics``, do not apply); ``step(actions)``
    returns ``(observations, rewards, terminated, truncated, infos)``. Sample indices are drawn
    without replacement within a reset, or given as ``options={"indices": [...]}`` (one int per
    group; the only option). ``step`` checks every action of a running episode before it steps any
    sub-env, so a refused batch changes nothing. ``step`` before the first ``reset``, and ``reset``
    or ``step`` after ``close``, is a RuntimeError.

    Multi-turn sub-envs (``RecRatingToolsEnv``) end their episodes at different turns. A sub-env
    whose episode has ended ignores its action (pass None) and returns ``""``, reward 0, both flags
    False and ``info["waiting"] = True``. With ``autoreset_mode=AutoresetMode.NEXT_STEP`` a group is
    reset as a whole, to one new shared sample, on the step after its last member's episode ended
    (that step returns the reset observations, reward 0 and ``info["autoreset"] = True``; groups
    reset on the same step get distinct samples), so groups stay intact; the default ``DISABLED``
    leaves resetting to ``reset()``. ``end_episode(k, reason)`` truncates sub-env ``k``'s episode
    (the rollout's full context) and counts it as ended, as a truncating ``step`` would.
    """

    def __init__(self, env_fns: Sequence[Callable[[], gym.Env]], group_size: int,
                 autoreset_mode: AutoresetMode | str | None = AutoresetMode.DISABLED) -> None:
        autoreset_mode = autoreset_mode_of(autoreset_mode, AutoresetMode.DISABLED)
        if autoreset_mode not in (AutoresetMode.DISABLED, AutoresetMode.NEXT_STEP):
            raise ValueError(f"autoreset_mode must be DISABLED or NEXT_STEP (whole groups), got {autoreset_mode}")
        self.num_prompts = check_group_shape(len(env_fns), group_size)
        self.group_size = group_size
        self.envs = [fn() for fn in env_fns]
        self.num_envs = len(self.envs)
        first = self.envs[0].unwrapped
        from recgym.envs.rec_rank import RecRankEnv

        if not isinstance(first, RecRatingEnv | RecRankEnv):
            raise TypeError("GroupedRatingVecEnv needs RecRatingEnv or RecRankEnv sub-environments")
        self.num_samples = len(first)
        self.single_observation_space = first.observation_space
        self.single_action_space = first.action_space
        self.observation_space = batch_space(first.observation_space, self.num_envs)
        self.action_space = batch_space(first.action_space, self.num_envs)
        self.metadata = {**first.metadata, "autoreset_mode": autoreset_mode}
        self.render_mode = self.envs[0].render_mode
        self._done = np.ones(self.num_envs, dtype=bool)
        self._started = False

    def __len__(self) -> int:
        return self.num_samples

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[tuple[str, ...], list[dict[str, Any]]]:
        self._check_open()
        options = {} if options is None else options
        if not isinstance(options, dict):
            raise TypeError(f"options must be a dict such as {{'indices': [...]}}, got {options!r}")
        if unknown := sorted(set(options) - {"indices"}):
            raise ValueError(f"unknown reset option(s) {unknown}: the only one is 'indices' "
                             f"({self.num_prompts} sample indices, one per group)")
        indices = None
        if "indices" in options:
            indices = [check_int("options['indices'] entries", i, 0) for i in options["indices"]]
            if len(indices) != self.num_prompts:
                raise ValueError(f"options['indices'] must hold {self.num_prompts} sample indices, got {len(indices)}")
            if outside := [i for i in indices if i >= self.num_samples]:
                raise IndexError(f"options['indices'] entry {outside[0]} out of range: the sub-environments have "
                                 f"{self.num_samples} samples (0 to {self.num_samples - 1})")
        super().reset(seed=seed)
        if indices is None:
            indices = self._draw(self.num_prompts)
        observations, infos = [], []
        for k, env in enumerate(self.envs):
            obs, info = self._reset_env(k, indices[k // self.group_size])
            observations.append(obs)
            infos.append(info)
        self._started = True
        return tuple(observations), infos

    def _draw(self, count: int) -> list[int]:
        """``count`` sample indices, distinct while the sub-envs have that many samples."""
        return self.np_random.choice(self.num_samples, size=count, replace=count > self.num_samples).tolist()

    def _reset_env(self, k: int, index: int) -> tuple[str, dict[str, Any]]:
        obs, info = self.envs[k].reset(options={"index": int(index)})
        info["group"] = k // self.group_size
        self._done[k] = False
        return obs, info

    def step(self, actions: Sequence[str | None]):
        self._check_open()
        if not self._started:
            raise RuntimeError("no episode in progress: call reset() before step()")
        if isinstance(actions, str):  # else its characters would be taken as the actions
            raise TypeError(f"actions must be a sequence of {self.num_envs} completions (one per sub-env), not one str")
        if len(actions) != self.num_envs:
            raise ValueError(f"expected {self.num_envs} actions (one per sub-env), got {len(actions)}")
        for k, (env, action) in enumerate(zip(self.envs, actions)):
            if not self._done[k]:
                try:
                    check_action(action, True, env.action_space.max_length)
                except (TypeError, ValueError) as e:
                    raise type(e)(f"actions[{k}]: {e}") from None
        done = self._done.reshape(self.num_prompts, self.group_size)
        resetting = np.repeat(done.all(axis=1), self.group_size)
        if self.metadata["autoreset_mode"] != AutoresetMode.NEXT_STEP:
            resetting[:] = False
        groups = np.unique(np.flatnonzero(resetting) // self.group_size).tolist()
        fresh = dict(zip(groups, self._draw(len(groups))))
        results = []
        for k, (env, action) in enumerate(zip(self.envs, actions)):
            group = k // self.group_size
            if resetting[k]:
                obs, info = self._reset_env(k, fresh[group])
                results.append((obs, 0.0, False, False, {**info, "autoreset": True}))
            elif self._done[k]:
                results.append(("", 0.0, False, False, {"group": group, "waiting": True}))
            else:
                obs, reward, terminated, truncated, info = env.step(action)
                self._done[k] = terminated or truncated
                results.append((obs, reward, terminated, truncated, info))
        observations = tuple(r[0] for r in results)
        rewards = np.array([r[1] for r in results], dtype=np.float64)
        terminated = np.array([r[2] for r in results], dtype=bool)
        truncated = np.array([r[3] for r in results], dtype=bool)
        return observations, rewards, terminated, truncated, [r[4] for r in results]

    def end_episode(self, k: int, reason: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        """Truncate sub-env ``k``'s running episode now (``RecRatingToolsEnv.end_episode``); later
        steps treat it as ended (pass None for it)."""
        self._check_open()
        k = check_int("k", k, 0)
        if k >= self.num_envs:
            raise IndexError(f"sub-env {k} out of range: this vector env has {self.num_envs} (0 to {self.num_envs - 1})")
        env = self.envs[k].unwrapped
        if not hasattr(env, "end_episode"):
            raise TypeError(f"{type(env).__name__} episodes end after one step: only multi-turn sub-envs "
                            f"(RecRatingTools-*) have end_episode")
        if self._done[k]:
            raise RuntimeError(f"sub-env {k} has no episode in progress: call reset() before end_episode()")
        result = env.end_episode(reason)
        self._done[k] = True
        return result

    def render(self) -> tuple[Any, ...]:
        """Each sub-env's ``render()`` (``render_mode`` is theirs)."""
        self._check_open()
        return tuple(env.render() for env in self.envs)

    def close_extras(self, **kwargs: Any) -> None:
        for env in self.envs:
            env.close()

    def _check_open(self) -> None:
        if self.closed:
            raise RuntimeError("this vector env is closed: make a new one (recgym.make_group_vec or gymnasium.make_vec)")


def make_group_vec(env_id: str, num_prompts: int, group_size: int,
                   autoreset_mode: AutoresetMode | str = AutoresetMode.DISABLED, **env_kwargs: Any) -> GroupedRatingVecEnv:
    """``num_prompts`` groups of ``group_size`` sub-envs of ``env_id`` (built with ``gymnasium.make``,
    sharing one copy of the registered kwargs, as ``gymnasium.make_vec`` does: one dataset)."""
    check_group_shape(num_prompts * group_size, group_size)
    env_kwargs = _sub_env_kwargs(**env_kwargs)
    first = gym.make(env_id, **env_kwargs)
    # make deep-copies the registered kwargs: the others get the first's copy as make arguments
    spec = dataclasses.replace(gym.spec(first.unwrapped.spec.id), kwargs={})
    shared = {**first.unwrapped.spec.kwargs, **env_kwargs}
    return GroupedRatingVecEnv([lambda: first] + [lambda: gym.make(spec, **shared)] * (num_prompts * group_size - 1),
                               group_size, autoreset_mode)


def _sub_env_kwargs(render_mode: str | None = None, max_episode_steps: int | None = None,
                   **env_kwargs: Any) -> dict[str, Any]:
    """The sub-envs' arguments: ``render_mode`` passed on when set, ``max_episode_steps`` refused
    (a time limit's truncation would score a tool episode 0, not as ``max_turns`` does)."""
    if max_episode_steps is not None:
        raise TypeError(NO_MAX_EPISODE_STEPS)
    return env_kwargs if render_mode is None else {**env_kwargs, "render_mode": render_mode}


def grouped_vector_entry_point(num_envs: int, group_size: int | None = None, *,
                               env_class: type[RecRatingEnv] = RecRatingEnv,
                               autoreset_mode: AutoresetMode | str | None = None, **env_kwargs: Any):
    """``gymnasium.make_vec(id, num_envs=B*G, group_size=G)`` gives a GroupedRatingVecEnv (autoreset
    ``DISABLED`` by default); without ``group_size`` it gives a plain ``SyncVectorEnv`` (``NEXT_STEP``
    by default, any mode). ``render_mode`` goes to the sub-envs; ``max_episode_steps`` is refused
    (episodes end after one step, or at ``max_turns``)."""
    env_kwargs = _sub_env_kwargs(**env_kwargs)
    if group_size is None:
        return gym.vector.SyncVectorEnv([lambda: env_class(**env_kwargs)] * num_envs,
                                        autoreset_mode=autoreset_mode_of(autoreset_mode, AutoresetMode.NEXT_STEP))
    return GroupedRatingVecEnv([lambda: env_class(**env_kwargs)] * num_envs, group_size, autoreset_mode)


def tools_vector_entry_point(num_envs: int, group_size: int | None = None, **kwargs: Any):
    """The same for the multi-turn ``RecRatingTools-*`` ids."""
    from recgym.envs.rec_rating_tools import RecRatingToolsEnv

    return grouped_vector_entry_point(num_envs, group_size, env_class=RecRatingToolsEnv, **kwargs)


def rank_vector_entry_point(num_envs: int, group_size: int | None = None, **kwargs: Any):
    """The same for the ranking ``RecRank-*`` ids."""
    from recgym.envs.rec_rank import RecRankEnv

    return grouped_vector_entry_point(num_envs, group_size, env_class=RecRankEnv, **kwargs)
