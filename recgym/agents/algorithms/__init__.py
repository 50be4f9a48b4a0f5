"""RL algorithms: each turns a :class:`~recgym.agents.types.RolloutBatch` into advantages and a loss.

``register_algorithm("name")`` adds a class to the registry; ``get_algorithm("name")`` returns it.
The built-in ones (``grpo``, ``dr_grpo``, ``rloo``, ``reinforce``, ``dapo``, ``gspo``, ``ppo``,
``online_dpo``) register on import of this package. An algorithm can also filter and refill the
rollout's groups, shape its rewards and own modules with their optimizer (the hooks of
:class:`Algorithm`). See ``examples/custom_algorithm.py`` for a new one in a few dozen lines.
"""

from recgym.agents.algorithms import (  # noqa: F401  (registers them)
    dapo,
    dr_grpo,
    grpo,
    gspo,
    online_dpo,
    ppo,
    reinforce,
    rloo,
)
from recgym.agents.algorithms.base import (
    Algorithm,
    LossInputs,
    get_algorithm,
    kl_penalty,
    list_algorithms,
    register_algorithm,
)

__all__ = [
    "Algorithm",
    "LossInputs",
    "get_algorithm",
    "kl_penalty",
    "list_algorithms",
    "register_algorithm",
]
