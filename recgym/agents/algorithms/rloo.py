"""RLOO (Ahmadian et al. 2024, "Back to Basics"): REINFORCE with a leave-one-out baseline.

Each completion's baseline is the mean reward of the *other* G-1 completions of its prompt:

    A_i = R_i - (sum_j R_j - R_i) / (G - 1)  =  G / (G - 1) * (R_i - mean(R_group))

so the baseline never depends on the completion it scores (an unbiased estimator). RLOO treats a
whole completion as one action, so by default (``loss_aggregation=None`` -> ``"sequence_sum"``)
the loss over a batch of ``B`` completions is

    L = 1/B * sum_i sum_t l[i, t],   l[i, t] = -min(r A_i, clip(r, 1 - eps, 1 + eps) A_i)

the PPO-clip surrogate summed over each completion's tokens (not divided by its length) and
averaged over completions. With one pass over each batch (``r = 1``) its gradient is the paper's
``-1/B sum_i A_i grad log pi(y_i | x_i)``. Plus ``beta * KL`` per token when ``beta > 0``, summed
the same way. ``loss_aggregation`` ``"sequence"`` or ``"token"`` overrides the aggregation.

Unlike TRL's ``RLOOTrainer``, which clips the *sequence's* ratio ``exp(sum_t log r_t)`` and
subtracts a k1 KL estimate from the reward before the baseline, this clips each token's ratio and
puts the KL (k3 by default) in the loss, as GRPO does. With one update per rollout batch and
``beta = 0`` (the defaults) the two are identical: every ratio is 1.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from recgym.agents.algorithms.base import Algorithm, LossAggregation, per_group, register_algorithm
from recgym.agents.types import RolloutBatch


def leave_one_out(rewards: np.ndarray) -> np.ndarray:
    g = len(rewards)
    if g < 2:
        return np.zeros_like(rewards)
    return rewards - (rewards.sum() - rewards) / (g - 1)


@register_algorithm("rloo")
class RLOO(Algorithm):
    """Leave-one-out baseline A_i = R_i - mean of the other G-1 rewards; PPO-clip loss summed per completion."""

    default_loss_aggregation: ClassVar[LossAggregation] = "sequence_sum"

    def advantages(self, batch: RolloutBatch) -> np.ndarray:
        return per_group(batch, leave_one_out)
