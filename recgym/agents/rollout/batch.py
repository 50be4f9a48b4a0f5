"""Packing rollouts into a :class:`~recgym.agents.types.RolloutBatch`, and their metrics.

Shared by single-turn collection (:mod:`recgym.agents.rollout.single_turn`) and multi-turn
episodes (:mod:`recgym.agents.rollout.episodes`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from recgym.agents.types import Completion, RolloutBatch


def pad(rows: Sequence[Sequence[Any]], value: Any, dtype: Any, left: bool = False) -> tuple[np.ndarray, np.ndarray]:
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
    prompt_ids, prompt_mask = pad([c.prompt_token_ids for c in completions], pad_token_id, np.int64, left=True)
    completion_ids, completion_mask = pad([c.completion_token_ids for c in completions], pad_token_id, np.int64)
    old_logprobs, _ = pad([c.logprobs for c in completions], 0.0, np.float32)
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

    prompt_ids, prompt_mask = pad([cut(b.prompt_ids, b.prompt_mask, (b, r)) for b, r in rows], pad_token_id, np.int64, left=True)
    # multi-turn rows keep their tool-result tokens (attended, not trained on) in place
    completion_ids, _ = pad([cut(b.completion_ids, b.attention_mask, (b, r)) for b, r in rows], pad_token_id, np.int64)
    completion_mask, _ = pad([cut(b.completion_mask, b.attention_mask, (b, r)) for b, r in rows], False, bool)
    old_logprobs, _ = pad([cut(b.old_logprobs, b.attention_mask, (b, r)) for b, r in rows], 0.0, np.float32)
    observation_mask = None
    if any(b.observation_mask is not None for b, _ in rows):
        observation_mask, _ = pad([cut(b.attention_mask & ~b.completion_mask, b.attention_mask, (b, r))
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
    finite = rewards[np.isfinite(rewards)]  # a custom reward's NaN/inf: the trainer counts them, advantage 0
    spread = [np.std(g[np.isfinite(g)]) if np.isfinite(g).sum() > 1 else 0.0 for g in rewards.reshape(-1, group_size)]
    lengths = batch.completion_mask.sum(axis=1)
    metrics = {
        "reward_mean": float(finite.mean()) if len(finite) else float("nan"),
        "reward_std": float(finite.std()) if len(finite) else float("nan"),
        "zero_std_group_frac": float(np.mean(np.asarray(spread) == 0)),
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


def policy_stats(policy: Any) -> dict[str, int]:
    stats = getattr(policy, "stats", None)
    return dict(stats) if isinstance(stats, dict) else {}


def policy_pad_id(policy: Any, pad_token_id: int | None = None) -> int:
    """``pad_token_id`` if given, else the policy tokenizer's pad id, else 0."""
    if pad_token_id is not None:
        return pad_token_id
    return getattr(getattr(policy, "tokenizer", None), "pad_token_id", None) or 0


def collection_metrics(batch: RolloutBatch, group_size: int, policy: Any, stats_before: dict[str, int],
                       gen_seconds: float, env_seconds: float) -> dict[str, float]:
    """:func:`rollout_metrics` plus the timings and the prompts the policy truncated meanwhile."""
    metrics = rollout_metrics(batch, group_size)
    after = policy_stats(policy)
    metrics.update(
        gen_seconds=gen_seconds,
        env_seconds=env_seconds,
        gen_tokens_per_second=metrics["tokens_generated"] / gen_seconds if gen_seconds > 0 else float("nan"),
        prompts_truncated=after.get("truncated_prompts", 0) - stats_before.get("truncated_prompts", 0),
    )
    return metrics
