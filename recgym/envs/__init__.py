"""Environments: ``RecRatingEnv``, group-aware vectorization, and registration of the ids."""

from recgym.envs import real_envs as _real_envs  # noqa: F401  (registers the real-data ids)
from recgym.envs.rec_rating import RecRatingEnv
from recgym.envs.registration import REGISTERED, register_rating_env
from recgym.envs.vector import GroupedRatingVecEnv, make_group_vec

__all__ = ["REGISTERED", "GroupedRatingVecEnv", "RecRatingEnv", "make_group_vec", "register_rating_env"]
