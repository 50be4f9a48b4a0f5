"""Online DPO (Guo et al. 2024, "Direct Language Model Alignment from Online AI Feedback"): the DPO
loss (Rafailov et al. 2023) on pairs sampled from the current policy and ranked by the reward.

In each group the completion with the highest reward is the chosen one ``w`` and the one with the
lowest the rejected one ``l`` (a group whose rewards are all equal gives no pair). With sequence
logprobs ``logp(y) = sum_t logp_t`` under the policy and ``ref(y)`` under the reference (the
initial model),

    L = 1/N sum_pairs -log sigmoid(beta_dpo * ((logp(w) - ref(w)) - (logp(l) - ref(l))))

over the batch's ``N`` groups (a group without a pair adds 0, as a zero-variance group adds no
gradient to GRPO). :meth:`OnlineDPO.advantages` marks the pair: +1 on ``w``, -1 on ``l``, 0
elsewhere. There is no importance ratio and no clipping; the reference term is the regularizer,
so the config's ``beta``, ``clip_epsilon`` and ``loss_aggregation`` are not used. Without a ratio
the loss is on-policy: the updates after a batch's first (``num_inner_epochs > 1``, or
``gradient_accumulation_steps`` below the number of micro-batches) learn off-policy uncorrected,
and the trainer warns. Micro-batches hold whole groups (``whole_groups``). A completion whose
reward is NaN or inf is never chosen nor rejected.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from recgym.agents.algorithms.base import Algorithm, LossInputs, per_group, register_algorithm
from recgym.agents.types import RolloutBatch


def best_and_worst(rewards: np.ndarray) -> np.ndarray:
    """+1 on the group's first highest reward, -1 on its first lowest, 0 elsewhere (all 0 on a tie)."""
    roles = np.zeros_like(rewards)
    if np.ptp(rewards) > 0:
        roles[np.argmax(rewards)], roles[np.argmin(rewards)] = 1.0, -1.0
    return roles


@register_algorithm("online_dpo")
class OnlineDPO(Algorithm):
    """DPO on each group's best vs worst completion (by reward), against the reference model; no ratio."""

    whole_groups: ClassVar[bool] = True
    uses_importance_ratio: ClassVar[bool] = False

    def __init__(self, *, dpo_beta: float = 0.1, **kwargs) -> None:
        super().__init__(**kwargs)
        if dpo_beta <= 0:
            raise ValueError(f"dpo_beta must be > 0, got {dpo_beta}")
        self.dpo_beta = dpo_beta

    @property
    def needs_reference(self) -> bool:
        return True

    def advantages(self, batch: RolloutBatch) -> np.ndarray:
        return per_group(batch, best_and_worst)

    def loss(self, inputs: LossInputs) -> tuple[torch.Tensor, dict[str, float]]:
        if inputs.ref_logprobs is None or inputs.group_ids is None:
            raise ValueError("online_dpo needs ref_logprobs and group_ids")
        gain = ((inputs.logprobs - inputs.ref_logprobs) * inputs.mask).sum(-1)  # [b] log(pi / ref) per completion
        _, group = torch.unique(inputs.group_ids, return_inverse=True)
        num_groups = int(group.max()) + 1
        total_groups = inputs.total_sequences * num_groups / len(group)  # whole groups of equal size
        role = inputs.advantages
        chosen = gain.new_zeros(num_groups).index_add(0, group, gain * (role > 0))
        rejected = gain.new_zeros(num_groups).index_add(0, group, gain * (role < 0))
        paired = torch.zeros(num_groups, dtype=torch.bool, device=gain.device).index_fill(0, group[role > 0], True)
        margin = self.dpo_beta * (chosen - rejected)
        loss = (-F.logsigmoid(margin) * paired).sum() / total_groups
        with torch.no_grad():
            stats = {
                "loss": float(loss),
                "dpo_pairs": float(paired.sum() / total_groups),
                "dpo_accuracy": float(((margin > 0) & paired).sum() / total_groups),
                "dpo_margin": float((margin * paired).sum() / total_groups),
            }
        return loss, stats
