"""Group rollouts: one batched policy call per step of a group-aware vector env.

``collect(env, policy, num_prompts, group_size, sampling)`` resets the env so that each run of
``group_size`` sub-envs shares one sample, asks the policy for ``group_size`` completions of each
distinct prompt in one call (so a vLLM engine processes each prompt once), steps every sub-env
with its completion, and packs a :class:`~recgym.agents.types.RolloutBatch` plus metrics.
Multi-turn environments (``RecRatingTools-*``) go to :func:`recgym.agents.episodes.collect_episodes`,
which runs every episode turn by turn and packs the same kind of batch.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from recgym.agents.types import Completion, Policy, RolloutBatch, SamplingParams


def _pad(rows: Sequence[Sequence[Any]], value: Any, dtype: Any, left: bool = False) -> tuple[np.ndarray, np.ndarray]:
    width = max((len(r) for r in rows), default=0)
    out = np.full((len(rows), width), value, dtype=dtype)
    mask = np.zeros((len(rows), width), dtype=bool)
    for i, row in enumerate(rows):
        if len(row):
            cols = slice(width - len(row), width) if left else slice(0, len(row))
            out[i, cols] = row
            mask[i, cols] = True
    return out, mask


def _as_float(value: Any) -> float:
    if value is None:
        return float("nan")
    return float(value)


def reward_components(infos: Sequence[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Each numeric part of the infos' ``reward_breakdown`` as an array (NaN where None)."""
    breakdowns = [info.get("reward_breakdown", {}) for info in infos]
    return {
        key: np.array([_as_float(b.get(key)) for b in breakdowns], dtype=np.float32)
        for key, value in (breakdowns[0] if breakdowns else {}).items()
        if isinstance(value, (bool, int, float)) or value is None
    }


def pack_batch(
    completions: Sequence[Completion],
    rewards: Sequence[float],
    infos: Sequence[dict[str, Any]],
    group_size: int,
    pad_token_id: int = 0,
) -> RolloutBatch:
    """A RolloutBatch from flat completions (``group_size`` consecutive ones share a prompt)."""
    if len(completions) % group_size:
        raise ValueError(f"{len(completions)} completions do not split into groups of {group_size}")
    for c in completions:
        if len(c.logprobs) != len(c.completion_token_ids):
            raise ValueError(
                "a completion's logprobs and token ids differ in length "
                f"({len(c.logprobs)} vs {len(c.completion_token_ids)}); the backend returned no token ids?"
            )
    prompt_ids, prompt_mask = _pad([c.prompt_token_ids for c in completions], pad_token_id, np.int64, left=True)
    completion_ids, completion_mask = _pad([c.completion_token_ids for c in completions], pad_token_id, np.int64)
    old_logprobs, _ = _pad([c.logprobs for c in completions], 0.0, np.float32)
    return RolloutBatch(
        prompt_ids=prompt_ids,
        prompt_mask=prompt_mask,
        completion_ids=completion_ids,
        completion_mask=completion_mask,
        old_logprobs=old_logprobs,
        rewards=np.asarray(rewards, dtype=np.float32),
        group_ids=np.repeat(np.arange(len(completions) // group_size, dtype=np.int64), group_size),
        truncated=np.array([c.truncated for c in completions], dtype=bool),
        reward_components=reward_components(infos),
        texts=[c.text for c in completions],
        infos=list(infos),
    )


def take_groups(parts: Sequence[tuple[RolloutBatch, Sequence[int]]], pad_token_id: int = 0) -> RolloutBatch:
    """One RolloutBatch of the chosen groups (by group id) of several batches, in the order given,
    re-padded and with group ids renumbered from 0."""
    rows = [(batch, int(r)) for batch, groups in parts for g in groups for r in np.flatnonzero(batch.group_ids == g)]
    if not rows:
        raise ValueError("take_groups: no groups chosen")
    sizes = {int(np.sum(batch.group_ids == g)) for batch, groups in parts for g in groups}
    if len(sizes) != 1:
        raise ValueError(f"take_groups: groups of different sizes {sorted(sizes)}")
    group_size = sizes.pop()
    keys = set(rows[0][0].reward_components)

    def cut(array: np.ndarray, mask: np.ndarray, batch_row: tuple[RolloutBatch, int]) -> list:
        return array[batch_row[1]][mask[batch_row[1]]].tolist()

    prompt_ids, prompt_mask = _pad([cut(b.prompt_ids, b.prompt_mask, (b, r)) for b, r in rows], pad_token_id, np.int64, left=True)
    # multi-turn rows keep their tool-result tokens (attended, not trained on) in place
    completion_ids, _ = _pad([cut(b.completion_ids, b.attention_mask, (b, r)) for b, r in rows], pad_token_id, np.int64)
    completion_mask, _ = _pad([cut(b.completion_mask, b.attention_mask, (b, r)) for b, r in rows], False, bool)
    old_logprobs, _ = _pad([cut(b.old_logprobs, b.attention_mask, (b, r)) for b, r in rows], 0.0, np.float32)
    observation_mask = None
    if any(b.observation_mask is not None for b, _ in rows):
        observation_mask, _ = _pad([cut(b.attention_mask & ~b.completion_mask, b.attention_mask, (b, r))
                                    for b, r in rows], False, bool)
    return RolloutBatch(
        prompt_ids=prompt_ids, prompt_mask=prompt_mask, completion_ids=completion_ids,
        completion_mask=completion_mask, old_logprobs=old_logprobs,
        rewards=np.array([b.rewards[r] for b, r in rows], dtype=np.float32),
        group_ids=np.repeat(np.arange(len(rows) // group_size, dtype=np.int64), group_size),
        truncated=np.array([b.truncated[r] for b, r in rows], dtype=bool),
        reward_components={k: np.array([b.reward_components[k][r] for b, r in rows], dtype=np.float32)
                           for k in keys if all(k in b.reward_components for b, _ in rows)},
        texts=[b.texts[r] for b, r in rows if b.texts] if all(b.texts for b, _ in rows) else [],
        infos=[b.infos[r] for b, r in rows] if all(b.infos for b, _ in rows) else [],
        observation_mask=observation_mask,
    )


def rollout_metrics(batch: RolloutBatch, group_size: int) -> dict[str, float]:
    """Mean reward, per-component means, zero-spread group share, clipped ratio, token counts."""
    rewards = batch.rewards.astype(np.float64)
    grouped = rewards.reshape(-1, group_size)
    lengths = batch.completion_mask.sum(axis=1)
    metrics = {
        "reward_mean": float(rewards.mean()),
        "reward_std": float(rewards.std()),
        "zero_std_group_frac": float((grouped.std(axis=1) == 0).mean()),
        "clipped_ratio": float(batch.truncated.mean()),
        "tokens_generated": int(lengths.sum()),
        "completion_len_mean": float(lengths.mean()),
    }
    for key, values in batch.reward_components.items():
        finite = values[np.isfinite(values)]
        metrics[f"reward/{key}"] = float(finite.mean()) if len(finite) else float("nan")
    if batch.observation_mask is not None:  # multi-turn episodes
        metrics["observation_tokens_mean"] = float(batch.observation_mask.sum(axis=1).mean())
        for key, name in (("turn", "turns_mean"), ("num_calls", "tool_calls_mean"), ("invalid_turns", "invalid_turns_mean")):
            metrics[name] = float(np.mean([info.get(key, 0) for info in batch.infos])) if batch.infos else float("nan")
    return metrics


def _policy_stats(policy: Any) -> dict[str, int]:
    stats = getattr(policy, "stats", None)
    return dict(stats) if isinstance(stats, dict) else {}


def collect(
    env: Any,
    policy: Policy,
    num_prompts: int | None = None,
    group_size: int | None = None,
    sampling: SamplingParams | None = None,
    *,
    seed: int | None = None,
    indices: Sequence[int] | None = None,
    pad_token_id: int | None = None,
) -> tuple[RolloutBatch, dict[str, float]]:
    """One round of group rollouts.

    Args:
        env: a :class:`~recgym.envs.vector.GroupedRatingVecEnv` (``make_group_vec(...)``), or an
            env id, from which one is built with ``num_prompts`` and ``group_size``.
        policy: any :class:`~recgym.agents.types.Policy`.
        num_prompts, group_size: must match the env's when given (default: the env's).
        sampling: the policy's sampling settings (default ``SamplingParams()``).
        seed: passed to ``env.reset`` (draws the samples).
        indices: the ``num_prompts`` sample indices to use instead of drawing them.
        pad_token_id: for the padded arrays (default: the policy tokenizer's pad id, else 0).

    Returns:
        ``(batch, metrics)``: a RolloutBatch of ``num_prompts * group_size`` rows, grouped by
        prompt, and metrics: ``reward_mean``, ``reward_std``, ``reward/<component>``,
        ``zero_std_group_frac``, ``clipped_ratio``, ``tokens_generated``, ``completion_len_mean``,
        ``gen_seconds``, ``env_seconds``, ``gen_tokens_per_second``, ``prompts_truncated``.
    """
    if isinstance(env, str):
        from recgym.envs.vector import make_group_vec

        if num_prompts is None or group_size is None:
            raise ValueError("collect with an env id needs num_prompts and group_size")
        env = make_group_vec(env, num_prompts=num_prompts, group_size=group_size)
    for name, value in (("num_prompts", num_prompts), ("group_size", group_size)):
        if value is not None and value != getattr(env, name):
            raise ValueError(f"{name}={value} does not match the env's {name}={getattr(env, name)}")
    num_prompts, group_size = int(env.num_prompts), int(env.group_size)
    sampling = sampling or SamplingParams()
    if getattr(env.envs[0].unwrapped, "multi_turn", False):
        from recgym.agents.episodes import collect_episodes

        return collect_episodes(env, policy, sampling, seed=seed, indices=indices, pad_token_id=pad_token_id)

    env_seconds = 0.0
    start = time.perf_counter()
    options = {"indices": list(indices)} if indices is not None else None
    _, infos = env.reset(seed=seed, options=options)
    env_seconds += time.perf_counter() - start
    prompts = [infos[k * group_size]["messages"] for k in range(num_prompts)]

    before = _policy_stats(policy)
    start = time.perf_counter()
    groups = policy.generate(prompts, n=group_size, sampling=sampling)
    gen_seconds = time.perf_counter() - start
    if len(groups) != num_prompts or any(len(g) != group_size for g in groups):
        raise RuntimeError(
            f"policy returned {[len(g) for g in groups]} completions per prompt; expected {num_prompts} x {group_size}"
        )
    completions = [c for group in groups for c in group]

    start = time.perf_counter()
    _, rewards, _, _, step_infos = env.step([c.text for c in completions])
    env_seconds += time.perf_counter() - start
    merged = [
        {**{k: v for k, v in reset_info.items() if k != "messages"}, **step_info}
        for reset_info, step_info in zip(infos, step_infos)
    ]

    batch = pack_batch(completions, rewards, merged, group_size, policy_pad_id(policy, pad_token_id))
    return batch, collection_metrics(batch, group_size, policy, before, gen_seconds, env_seconds)


def policy_pad_id(policy: Any, pad_token_id: int | None = None) -> int:
    """``pad_token_id`` if given, else the policy tokenizer's pad id, else 0."""
    if pad_token_id is not None:
        return pad_token_id
    return getattr(getattr(policy, "tokenizer", None), "pad_token_id", None) or 0


def collection_metrics(batch: RolloutBatch, group_size: int, policy: Any, stats_before: dict[str, int],
                       gen_seconds: float, env_seconds: float) -> dict[str, float]:
    """:func:`rollout_metrics` plus the timings and the prompts the policy truncated meanwhile."""
    metrics = rollout_metrics(batch, group_size)
    after = _policy_stats(policy)
    metrics.update(
        gen_seconds=gen_seconds,
        env_seconds=env_seconds,
        gen_tokens_per_second=metrics["tokens_generated"] / gen_seconds if gen_seconds > 0 else float("nan"),
        prompts_truncated=after.get("truncated_prompts", 0) - stats_before.get("truncated_prompts", 0),
    )
    return metrics
