"""Agents: policies, rollouts, the learner, RL algorithms, the GRPO trainer, SFT and evaluation.

The names most programs need are here, loaded on first use (so ``import recgym.agents`` does not
import torch)::

    from recgym.agents import GRPOConfig, GRPOTrainer, register_algorithm

Layout (``docs/design.md``): ``config``, ``trainer``, ``checkpoints``, ``run_log``, ``sft``,
``evaluation``, ``models`` and ``types`` at the top; ``rollout/``, ``learner/``, ``algorithms/``,
``policies/`` and ``teachers/`` as sub-packages.
"""

from __future__ import annotations

import importlib
from typing import Any

_PUBLIC = {
    "GRPOConfig": "recgym.agents.config",
    "GRPOTrainer": "recgym.agents.trainer",
    "TrainResult": "recgym.agents.trainer",
    "train": "recgym.agents.trainer",
    "Algorithm": "recgym.agents.algorithms",
    "LossInputs": "recgym.agents.algorithms",
    "get_algorithm": "recgym.agents.algorithms",
    "list_algorithms": "recgym.agents.algorithms",
    "register_algorithm": "recgym.agents.algorithms",
    "make_policy": "recgym.agents.policies",
    "Completion": "recgym.agents.types",
    "Policy": "recgym.agents.types",
    "RolloutBatch": "recgym.agents.types",
    "SamplingParams": "recgym.agents.types",
    "collect": "recgym.agents.rollout",
    "evaluate": "recgym.agents.evaluation",
    "load_model": "recgym.agents.models",
    "model_path": "recgym.agents.models",
    "SFTTrainConfig": "recgym.agents.sft",
    "train_sft": "recgym.agents.sft",
    "ColdStartConfig": "recgym.agents.teachers.cold_start",
    "run_cold_start": "recgym.agents.teachers.cold_start",
}

__all__ = [
    "Algorithm",
    "ColdStartConfig",
    "Completion",
    "GRPOConfig",
    "GRPOTrainer",
    "LossInputs",
    "Policy",
    "RolloutBatch",
    "SFTTrainConfig",
    "SamplingParams",
    "TrainResult",
    "collect",
    "evaluate",
    "get_algorithm",
    "list_algorithms",
    "load_model",
    "make_policy",
    "model_path",
    "register_algorithm",
    "run_cold_start",
    "train",
    "train_sft",
]


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'recgym.agents' has no attribute {name!r}")
    value = getattr(importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))
