"""REINFORCE (Williams 1992) with the batch-mean reward as baseline.

``A_i = R_i - mean(R_batch)`` over every completion in the batch (groups are ignored; in a
multi-process run, each process's own batch). The loss is the plain policy gradient with no
importance ratio and no clipping, so it is on-policy: with several optimizer updates per rollout
batch (``num_inner_epochs > 1`` or ``gradient_accumulation_steps`` below the number of
micro-batches) the later ones learn off-policy uncorrected, and the trainer warns. By default
(``loss_aggregation=None`` -> ``"sequence_sum"``) it is the paper's sequence-level estimator over
a batch of ``B`` completions:

    L = -1/B * sum_i A_i * sum_t log pi(y_i,t | x_i, y_i,<t) = -1/B * sum_i A_i * log pi(y_i | x_i)

(token terms summed per completion, not divided by its length; averaged over completions), plus
``beta * KL`` per token when ``beta > 0``, summed the same way. ``loss_aggregation``
``"sequence"`` or ``"token"`` overrides the aggregation.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch

from recgym.agents.algorithms.base import (
    Algorithm,
    LossAggregation,
    LossInputs,
    per_group,
    register_algorithm,
    token_advantages,
)
from recgym.agents.types import RolloutBatch


@register_algorithm("reinforce")
class Reinforce(Algorithm):
    """Batch-mean baseline A = R - mean(R); loss -A * log p summed per completion (no ratio, no clipping)."""

    default_loss_aggregation: ClassVar[LossAggregation] = "sequence_sum"
    uses_importance_ratio: ClassVar[bool] = False

    def advantages(self, batch: RolloutBatch) -> np.ndarray:
        one_group = np.zeros(len(batch), dtype=np.int64)
        return per_group(batch, lambda r: r - r.mean(), group_ids=one_group)

    def per_token_loss(self, inputs: LossInputs) -> torch.Tensor:
        return -token_advantages(inputs) * inputs.logprobs
