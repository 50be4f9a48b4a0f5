"""Plug in a new RL algorithm: one class, registered by name, then train with it.

This one, "grpo_median", is GRPO with the group's *median* as the baseline and the mean absolute
deviation as the scale (robust to one outlier completion in a group); the loss is the base
class's PPO-clip surrogate. It also uses one of the trainer's hooks, ``shape_rewards``: a
completion cut off at ``max_new_tokens`` (its rating never written) loses ``truncation_penalty``
before the advantages are computed. The other hooks (``keep_groups`` with ``max_refills``,
``setup``/``after_update``/``state_dict`` for modules of its own, ``whole_groups``) are used the
same way: see ``recgym/agents/algorithms/dapo.py``, ``ppo.py`` and ``online_dpo.py``. A class that
replaces ``loss(inputs)`` returns ``(loss, stats)``: a scalar tensor with grad, this micro-batch's
share of its update's loss, and a dict of floats (shares too: they are summed). The knobs are
keyword arguments with a type or a numeric default (``algorithm_kwargs`` are checked against them
before the model loads), and ``**kwargs`` goes on to ``super().__init__``. Run:

    python examples/custom_algorithm.py --max_steps 2
    recgym train grpo --algorithm examples/custom_algorithm.py:MedianGRPO --max_steps 2 \\
        --algorithm_kwargs '{truncation_penalty: 0.2}' --env_kwargs '{max_user_history: 4, max_item_history: 2}' \\
        --group_size 4 --prompts_per_step 2 --max_new_tokens 64 --learning_rate 5e-6 --eval_interval 0 \\
        --eval_size 8 --save_interval 0 --output_dir runs/custom_algorithm   # the same, no script
"""

from __future__ import annotations

import dataclasses
import sys

import numpy as np

from recgym.agents.algorithms import Algorithm, get_algorithm, register_algorithm
from recgym.agents.algorithms.base import per_group
from recgym.agents.config import GRPOConfig
from recgym.agents.trainer import TrainResult, train
from recgym.agents.types import RolloutBatch


@register_algorithm("grpo_median")
class MedianGRPO(Algorithm):
    """GRPO with a median baseline and mean-absolute-deviation scaling, and a penalty for truncation."""

    def __init__(self, *, truncation_penalty: float = 0.1, **kwargs) -> None:
        super().__init__(**kwargs)  # the config's clip_epsilon, beta, ... (algorithm_kwargs for new ones)
        self.truncation_penalty = truncation_penalty

    def shape_rewards(self, batch: RolloutBatch, max_new_tokens: int) -> RolloutBatch:
        penalty = self.truncation_penalty * batch.truncated.astype(np.float32)
        return dataclasses.replace(batch, rewards=batch.rewards - penalty)

    def advantages(self, batch: RolloutBatch) -> np.ndarray:
        def robust(rewards: np.ndarray) -> np.ndarray:
            centered = rewards - np.median(rewards)
            return centered / (np.abs(centered).mean() + self.advantage_epsilon)

        return per_group(batch, robust)


def main(argv: list[str] | None = None) -> TrainResult | None:
    assert get_algorithm("grpo_median") is MedianGRPO
    argv = list(sys.argv[1:] if argv is None else argv)
    if {"-h", "--help"} & set(argv):
        print(__doc__ + "\nAny GRPOConfig field is a flag: " + ", ".join(f"--{n}" for n in GRPOConfig.field_names()))
        return None
    config = GRPOConfig(
        algorithm="grpo_median", env_kwargs={"max_user_history": 4, "max_item_history": 2},
        algorithm_kwargs={"truncation_penalty": 0.2},
        group_size=4, prompts_per_step=2, max_steps=5, max_new_tokens=64, learning_rate=5e-6,
        eval_interval=0, eval_size=8, save_interval=0, output_dir="runs/custom_algorithm",
    )
    try:
        config = config.with_overrides(argv)
    except (ValueError, TypeError) as exc:
        raise SystemExit(f"custom_algorithm.py: error: {exc}") from None
    return train(config)


if __name__ == "__main__":
    main()
