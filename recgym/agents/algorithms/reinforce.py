"""REINFORCE (Williams 1992) with the batch-mean reward as baseline.

``A_i = R_i - mean(R_batch)`` over every completion in the batch (groups are ignored). The loss is
the plain policy gradient with no importance ratio and no clipping, so it is on-policy (use
``num_inner_epochs = 1``). By default (``loss_aggregation=None`` -> ``"sequence_sum"``) it is the
paper's sequence-level estimator over a batch of ``B`` completions:

    L = -1/B * sum_i A_i * sum_t log pi(y_i,t | x_i, y_i,<t) = -1/B * sum_i A_i * log pi(y_i | x_i)

(token terms summed per completion, not divided by its length; averaged over completions), plus
``beta * KL`` per token when ``beta > 0``, summed the same way. ``loss_aggregation``
``"sequence"`` or ``"token"`` overrides the aggregation.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch

from recgym.agents.algorithms.base import Algorithm, LossAggregation, LossInputs, register_algorithm
from recgym.agents.types import RolloutBatch


@register_algorithm("reinforce")
class Reinforce(Algorithm):
    """Batch-mean baseline A = R - mean(R); loss -A * log p summed per completion (no ratio, no clipping)."""

    default_loss_aggregation: ClassVar[LossAggregation] = "sequence_sum"

    def advantages(self, batch: RolloutBatch) -> np.ndarray:
        rewards = np.asarray(batch.rewards, dtype=np.float64)
        return (rewards - rewards.mean()).astype(np.float32)

    def per_token_loss(self, inputs: LossInputs) -> torch.Tensor:
        adv = inputs.advantages if inputs.advantages.dim() == 2 else inputs.advantages.unsqueeze(1)
        return -adv * inputs.logprobs
