"""RL algorithms: each turns a :class:`~recgym.agents.types.RolloutBatch` into advantages and a loss.

``register_algorithm("name")`` adds a class to the registry; ``get_algorithm("name")`` returns it.
The built-in ones (``grpo``, ``dr_grpo``, ``rloo``, ``reinforce``) register on import of this
package. See ``examples/custom_algorithm.py`` for a new one in a few dozen lines.
"""

from recgym.agents.algorithms import dr_grpo, grpo, reinforce, rloo  # noqa: F401  (registers them)
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
