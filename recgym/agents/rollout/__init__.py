"""Rollouts: a policy playing group-aware vector envs into a RolloutBatch.

- :mod:`~recgym.agents.rollout.single_turn`: :func:`collect`, one batched policy call per step;
- :mod:`~recgym.agents.rollout.episodes`: multi-turn episodes (tool environments), turn by turn;
- :mod:`~recgym.agents.rollout.batch`: packing either into a RolloutBatch, and its metrics;
- :mod:`~recgym.agents.rollout.prompt_sampler`: which training samples each step draws.
"""

from recgym.agents.rollout.batch import pack_batch, rollout_metrics, take_groups
from recgym.agents.rollout.episodes import collect_episodes, list_stepper, run_episodes
from recgym.agents.rollout.prompt_sampler import PromptSampler
from recgym.agents.rollout.single_turn import collect

__all__ = [
    "PromptSampler",
    "collect",
    "collect_episodes",
    "list_stepper",
    "pack_batch",
    "rollout_metrics",
    "run_episodes",
    "take_groups",
]
