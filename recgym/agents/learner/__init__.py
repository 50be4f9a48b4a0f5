"""The learner: the model being trained and what it computes.

- :mod:`~recgym.agents.learner.loading`: loading for training, mixed precision, LoRA, the reference model;
- :mod:`~recgym.agents.learner.logprobs`: per-token logprobs, with each group's prompt run once;
- :mod:`~recgym.agents.learner.data_parallel`: gradients averaged over processes;
- :mod:`~recgym.agents.learner.weight_export`: the learner's weights to a policy (LoRA merged);
- :mod:`~recgym.agents.learner.memory`: the peak-memory estimate of a config (``--estimate-memory``);
- :mod:`~recgym.agents.learner.host_memory`: a CPU learner keeps the memory it frees for its next step.
"""

from recgym.agents.learner.data_parallel import average_gradients
from recgym.agents.learner.loading import (
    COMPUTE_DTYPES,
    add_lora,
    autocast,
    compute_dtype,
    is_peft,
    load_learner,
    reference_model,
)
from recgym.agents.learner.weight_export import build_policy, policy_weights, sync_policy

__all__ = [
    "COMPUTE_DTYPES",
    "add_lora",
    "autocast",
    "average_gradients",
    "build_policy",
    "compute_dtype",
    "is_peft",
    "load_learner",
    "policy_weights",
    "reference_model",
    "sync_policy",
]
