"""Environments: ``RecRatingEnv``, the tool-using ``RecRatingToolsEnv``, group-aware vectorization,
and registration of the ids."""

from recgym.envs import real_envs as _real_envs  # noqa: F401  (registers the real-data ids)
from recgym.envs.rec_rating import RecRatingEnv
from recgym.envs.rec_rating_tools import RecRatingToolsEnv
from recgym.envs.registration import MULTI_TURN, REGISTERED, register_rating_env, register_tools_env
from recgym.envs.vector import GroupedRatingVecEnv, make_group_vec

__all__ = [
    "MULTI_TURN",
    "REGISTERED",
    "GroupedRatingVecEnv",
    "RecRatingEnv",
    "RecRatingToolsEnv",
    "make_group_vec",
    "register_rating_env",
    "register_tools_env",
]
