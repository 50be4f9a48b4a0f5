"""Plug in a new RL algorithm: one class, registered by name, then train with it.

This one, "grpo_median", is GRPO with the group's *median* as the baseline and the mean absolute
deviation as the scale (robust to one outlier completion in a group); the loss is the base
class's PPO-clip surrogate. Run:

    python examples/custom_algorithm.py --max_steps 2
    recgym algorithms            # after importing this module, it is listed beside grpo, rloo, ...
"""

from __future__ import annotations

import sys

import numpy as np

from recgym.agents.algorithms import Algorithm, get_algorithm, register_algorithm
from recgym.agents.algorithms.base import per_group
from recgym.agents.config import GRPOConfig
from recgym.agents.trainer import TrainResult, train
from recgym.agents.types import RolloutBatch


@register_algorithm("grpo_median")
class MedianGRPO(Algorithm):
    """GRPO with a median baseline and mean-absolute-deviation scaling (robust to outliers)."""

    def advantages(self, batch: RolloutBatch) -> np.ndarray:
        def robust(rewards: np.ndarray) -> np.ndarray:
            centered = rewards - np.median(rewards)
            return centered / (np.abs(centered).mean() + self.advantage_epsilon)

        return per_group(batch, robust)


def main(argv: list[str] | None = None) -> TrainResult:
    assert get_algorithm("grpo_median") is MedianGRPO
    config = GRPOConfig(
        algorithm="grpo_median", env_kwargs={"max_user_history": 4, "max_item_history": 2},
        group_size=4, prompts_per_step=2, max_steps=5, max_new_tokens=64, learning_rate=5e-6,
        eval_interval=0, eval_size=8, save_interval=0, output_dir="runs/custom_algorithm",
    ).with_overrides(list(sys.argv[1:] if argv is None else argv))
    return train(config)


if __name__ == "__main__":
    main()
