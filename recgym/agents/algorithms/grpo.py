"""GRPO (Shao et al. 2024, DeepSeekMath), as RecZero trains with it.

For each prompt the policy samples G completions. A completion's advantage is its reward relative
to its own group, ``A_i = (R_i - mean(R_group)) / (std(R_group) + eps)`` (sample std, ddof=1), and
every token of the completion gets that advantage. The loss is PPO's clipped surrogate

    L_tok = -min(r * A, clip(r, 1 - eps_clip, 1 + eps_clip) * A),   r = exp(logp - logp_old)

plus ``beta * KL(policy || reference)`` per token when ``beta > 0`` (estimator k1/k2/k3, k3 by
default), averaged per sequence then over sequences (``loss_aggregation="sequence"``, the paper's)
or over all tokens of the batch (``"token"``).
"""

from __future__ import annotations

import numpy as np

from recgym.agents.algorithms.base import Algorithm, per_group, register_algorithm
from recgym.agents.types import RolloutBatch


def group_normalized(rewards: np.ndarray, eps: float, scale: bool = True) -> np.ndarray:
    """``(R - mean) / (std + eps)`` over one group (``scale=False``: ``R - mean``)."""
    centered = rewards - rewards.mean()
    if not scale:
        return centered
    std = rewards.std(ddof=1) if len(rewards) > 1 else 0.0
    return centered / (std + eps)


@register_algorithm("grpo")
class GRPO(Algorithm):
    """Group-relative advantages (R - mean) / (std + eps), PPO-clip loss, optional KL to a reference."""

    def __init__(self, *, scale_rewards: bool = True, **kwargs) -> None:
        super().__init__(**kwargs)
        self.scale_rewards = scale_rewards

    def advantages(self, batch: RolloutBatch) -> np.ndarray:
        return per_group(
            batch, lambda r: group_normalized(r, self.advantage_epsilon, self.scale_rewards)
        )
