"""DAPO (Yu et al. 2025, "DAPO: An Open-Source LLM Reinforcement Learning System at Scale").

GRPO's group-normalized advantage ``A_i = (R_i - mean(R_group)) / (std(R_group) + eps)`` with four
changes:

1. **Dynamic sampling** (:meth:`DAPO.keep_groups`): a group whose rewards are all equal has zero
   advantages and gives no gradient, so it is dropped and the trainer draws fresh prompts in its
   place, up to ``max_refills`` extra rollout rounds per step (the groups still missing after
   that are filled with dropped ones, so the batch keeps its size). It looks at the environment's
   rewards, before the shaping below (their finite ones: a NaN or inf takes no part).
2. **Clip-higher**: the ratio is clipped to ``[1 - eps_low, 1 + eps_high]`` with ``eps_low =
   clip_epsilon`` (0.2) and ``eps_high = clip_epsilon_high`` (0.28), so low-probability tokens
   can grow more before the clip stops them (against entropy collapse):

       L_tok = -min(r A, clip(r, 1 - eps_low, 1 + eps_high) A),   r = exp(logp - logp_old)

3. **Token-level aggregation** (the default ``loss_aggregation="token"``): the loss is
   ``sum_{i,t} L_tok / (tokens in the batch)``, so every token weighs the same whatever the length
   of its completion.
4. **Overlong reward shaping** (:meth:`DAPO.shape_rewards`): with ``L = max_new_tokens`` and a
   buffer of ``overlong_buffer`` tokens, a completion of ``|y|`` tokens gets

       R += -overlong_penalty * clip((|y| - (L - overlong_buffer)) / overlong_buffer, 0, 1)

   (0 up to ``L - overlong_buffer`` tokens, then linear down to ``-overlong_penalty`` at the cap).
   In a multi-turn episode ``L`` caps each turn, so ``|y|`` is the episode's longest turn.

No KL term by default (``beta = 0``, as in the paper).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np

from recgym.agents.algorithms.base import LossAggregation, register_algorithm
from recgym.agents.algorithms.grpo import GRPO
from recgym.agents.types import RolloutBatch


def overlong_shaping(lengths: np.ndarray, max_new_tokens: int, buffer: int, penalty: float) -> np.ndarray:
    """DAPO's soft length penalty per completion (``<= 0``), from its length in tokens."""
    if buffer <= 0 or penalty == 0:
        return np.zeros(len(lengths), dtype=np.float32)
    excess = (lengths - (max_new_tokens - buffer)) / buffer
    return (-penalty * np.clip(excess, 0.0, 1.0)).astype(np.float32)


@register_algorithm("dapo")
class DAPO(GRPO):
    """GRPO + dynamic sampling (refill zero-variance groups), clip-higher, token-level loss, overlong penalty."""

    default_loss_aggregation: ClassVar[LossAggregation] = "token"

    def __init__(
        self,
        *,
        clip_epsilon_high: float = 0.28,
        max_refills: int = 3,
        overlong_buffer: int | None = None,
        overlong_penalty: float = 1.0,
        **kwargs,
    ) -> None:
        """``overlong_buffer`` None: a fifth of ``max_new_tokens`` (the paper's 4096 of 20480); 0 disables
        the shaping."""
        super().__init__(**kwargs)
        if clip_epsilon_high < 0 or max_refills < 0 or overlong_penalty < 0:
            raise ValueError("clip_epsilon_high, max_refills and overlong_penalty must be >= 0")
        self.clip_epsilon_high = clip_epsilon_high
        self.max_refills = max_refills  # the trainer reads it per instance
        self.overlong_buffer = overlong_buffer
        self.overlong_penalty = overlong_penalty

    def keep_groups(self, batch: RolloutBatch) -> np.ndarray:
        def spread(rewards: np.ndarray) -> bool:
            finite = rewards[np.isfinite(rewards)]
            return len(finite) > 1 and np.ptp(finite) > 0

        return np.array([spread(batch.rewards[batch.group_ids == g]) for g in np.unique(batch.group_ids)])

    def shape_rewards(self, batch: RolloutBatch, max_new_tokens: int) -> RolloutBatch:
        buffer = max_new_tokens // 5 if self.overlong_buffer is None else self.overlong_buffer
        lengths = batch.longest_turn()
        penalty = overlong_shaping(lengths, max_new_tokens, buffer, self.overlong_penalty)
        return dataclasses.replace(batch, rewards=(batch.rewards + penalty).astype(np.float32))

    def clip_range(self) -> tuple[float, float]:
        return self.clip_epsilon, self.clip_epsilon_high
