"""Dr. GRPO ("Understanding R1-Zero-Like Training", Liu et al. 2025): GRPO done right.

Two biases of GRPO are removed: the advantage is ``R - mean(R_group)`` with no division by the
group's std (which up-weights groups that are nearly solved or nearly failed), and the loss sums
the per-token terms and divides by a constant, ``num_completions * max_completion_length``, instead
of each completion's own length (which favours long wrong answers). The PPO-clip surrogate and the
optional KL penalty are GRPO's. The constant normalizer is the algorithm, so a ``loss_aggregation``
is refused.
"""

from __future__ import annotations

import numpy as np

from recgym.agents.algorithms.base import Algorithm, LossInputs, per_group, register_algorithm
from recgym.agents.algorithms.grpo import group_normalized
from recgym.agents.types import RolloutBatch


@register_algorithm("dr_grpo")
class DrGRPO(Algorithm):
    """GRPO without std scaling, with a constant length normalizer (num_completions * max_new_tokens)."""

    def __init__(self, *, loss_aggregation: str | None = None, **kwargs) -> None:
        if loss_aggregation is not None:
            raise ValueError(f"dr_grpo divides token sums by num_completions * max_new_tokens; loss_aggregation "
                             f"must be null, got {loss_aggregation!r}")
        super().__init__(**kwargs)

    def advantages(self, batch: RolloutBatch) -> np.ndarray:
        return per_group(batch, lambda r: group_normalized(r, self.advantage_epsilon, scale=False))

    def aggregate(self, per_token, inputs: LossInputs):
        length = inputs.max_completion_length or inputs.mask.shape[1]
        return (per_token * inputs.mask).sum() / (inputs.total_sequences * length)
