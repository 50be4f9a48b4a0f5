"""REINFORCE (Williams 1992) with the batch-mean reward as baseline.

``A_i = R_i - mean(R_batch)`` over every completion in the batch (groups are ignored), and the
loss is the plain policy-gradient ``-A * log pi(token)``: no importance ratio and no clipping, so
it is on-policy (use ``num_inner_epochs = 1``). The optional KL penalty and the loss aggregation
are the base class's.
"""

from __future__ import annotations

import numpy as np

from recgym.agents.algorithms.base import Algorithm, LossInputs, register_algorithm
from recgym.agents.types import RolloutBatch


@register_algorithm("reinforce")
class Reinforce(Algorithm):
    """Batch-mean baseline A = R - mean(R), loss -A * log p (no ratio, no clipping)."""

    def advantages(self, batch: RolloutBatch) -> np.ndarray:
        rewards = np.asarray(batch.rewards, dtype=np.float64)
        return (rewards - rewards.mean()).astype(np.float32)

    def per_token_loss(self, inputs: LossInputs):
        adv = inputs.advantages if inputs.advantages.dim() == 2 else inputs.advantages.unsqueeze(1)
        return -adv * inputs.logprobs
