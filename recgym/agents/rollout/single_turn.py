"""Group rollouts: one batched policy call per step of a group-aware vector env.

``collect(env, policy, num_prompts, group_size, sampling)`` resets the env so that each run of
``group_size`` sub-envs shares one sample, asks the policy for ``group_size`` completions of each
distinct prompt in one call (so a vLLM engine processes each prompt once), steps every sub-env
with its completion, and packs a :class:`~recgym.agents.types.RolloutBatch` plus metrics.
Multi-turn environments (``RecRatingTools-*``) go to :func:`recgym.agents.rollout.episodes.collect_episodes`,
which runs every episode turn by turn and packs the same kind of batch.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from recgym.agents.rollout.batch import collection_metrics, pack_batch, policy_pad_id, policy_stats
from recgym.agents.rollout.episodes import collect_episodes
from recgym.agents.types import Policy, RolloutBatch, SamplingParams


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
        return collect_episodes(env, policy, sampling, seed=seed, indices=indices, pad_token_id=pad_token_id)

    env_seconds = 0.0
    start = time.perf_counter()
    options = {"indices": list(indices)} if indices is not None else None
    _, infos = env.reset(seed=seed, options=options)
    env_seconds += time.perf_counter() - start
    prompts = [infos[k * group_size]["messages"] for k in range(num_prompts)]

    before = policy_stats(policy)
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
