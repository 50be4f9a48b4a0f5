"""RLOO (Ahmadian et al. 2024, "Back to Basics"): REINFORCE with a leave-one-out baseline.

Each completion's baseline is the mean reward of the *other* G-1 completions of its prompt:

    A_i = R_i - (sum_j R_j - R_i) / (G - 1)  =  G / (G - 1) * (R_i - mean(R_group))

so the baseline never depends on the completion it scores (an unbiased estimator). The loss is the
PPO-clip surrogate (identical to plain policy gradient when each batch is used for one epoch).
"""

from __future__ import annotations

import numpy as np

from recgym.agents.algorithms.base import Algorithm, per_group, register_algorithm
from recgym.agents.types import RolloutBatch


def leave_one_out(rewards: np.ndarray) -> np.ndarray:
    g = len(rewards)
    if g < 2:
        return np.zeros_like(rewards)
    return rewards - (rewards.sum() - rewards) / (g - 1)


@register_algorithm("rloo")
class RLOO(Algorithm):
    """Leave-one-out baseline: A_i = R_i - mean of the other G-1 rewards; PPO-clip loss."""

    def advantages(self, batch: RolloutBatch) -> np.ndarray:
        return per_group(batch, leave_one_out)
