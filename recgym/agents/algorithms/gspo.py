"""GSPO (Zheng et al. 2025, "Group Sequence Policy Optimization").

The advantage is GRPO's group-normalized reward, ``A_i = (R_i - mean(R_group)) / (std(R_group) +
eps)``. The importance ratio is the *sequence's*, length-normalized (a geometric mean of the token
ratios):

    s_i = (pi(y_i | x) / pi_old(y_i | x)) ** (1 / |y_i|) = exp(1/|y_i| sum_t (logp_i,t - logp_old_i,t))

and the clipping is per sequence too, with the paper's small ranges (``clip_epsilon_low`` 3e-4,
``clip_epsilon_high`` 4e-4, which replace the config's ``clip_epsilon``):

    L = -1/B sum_i min(s_i A_i, clip(s_i, 1 - eps_low, 1 + eps_high) A_i)

Every token of completion ``i`` carries the same term, so the default ``loss_aggregation=
"sequence"`` (each completion's token mean, averaged over completions) is the paper's ``1/B
sum_i``. The gradient of ``s_i`` is ``s_i / |y_i| sum_t grad logp_i,t``: the tokens of a
completion share one weight instead of each having its own token ratio. Plus ``beta * KL`` per
token when ``beta > 0``. The logged ``clip_fraction`` is the share of completions clipped.
"""

from __future__ import annotations

import torch

from recgym.agents.algorithms.base import LossInputs, register_algorithm
from recgym.agents.algorithms.grpo import GRPO


@register_algorithm("gspo")
class GSPO(GRPO):
    """Group-normalized advantages with a sequence-level (length-normalized) importance ratio and clipping."""

    def __init__(self, *, clip_epsilon_low: float = 3e-4, clip_epsilon_high: float = 4e-4, **kwargs) -> None:
        super().__init__(**kwargs)
        if clip_epsilon_low < 0 or clip_epsilon_high < 0:
            raise ValueError("clip_epsilon_low and clip_epsilon_high must be >= 0")
        self.clip_epsilon_low = clip_epsilon_low
        self.clip_epsilon_high = clip_epsilon_high

    def importance_ratio(self, inputs: LossInputs) -> torch.Tensor:
        mask = inputs.mask
        mean_log_ratio = ((inputs.logprobs - inputs.old_logprobs) * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)
        return torch.exp(mean_log_ratio).unsqueeze(1).expand_as(inputs.logprobs)

    def clip_range(self) -> tuple[float, float]:
        return self.clip_epsilon_low, self.clip_epsilon_high

    def clip_fraction(self, inputs: LossInputs) -> float:
        """The share of the update's completions clipped (the ratio and advantage are a row's own)."""
        return float(self.clipped(inputs)[:, 0].sum() / inputs.total_sequences)
