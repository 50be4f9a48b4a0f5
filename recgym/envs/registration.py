"""Registration of every ``RecRating-*-v0`` id with gymnasium (done on ``import recgym``)."""

from __future__ import annotations

from typing import Any

import gymnasium as gym

REGISTERED: dict[str, str] = {}
"""Env id -> dataset name, for ``recgym envs``."""


def register_rating_env(env_id: str, dataset: str, **default_kwargs: Any) -> None:
    """Register ``env_id`` as a RecRatingEnv over the registered dataset ``dataset``."""
    if env_id not in gym.registry:
        gym.register(
            id=env_id,
            entry_point="recgym.envs.rec_rating:RecRatingEnv",
            vector_entry_point="recgym.envs.vector:grouped_vector_entry_point",
            kwargs={"dataset": dataset, **default_kwargs},
            disable_env_checker=True,
        )
    REGISTERED[env_id] = dataset


register_rating_env("RecRating-Synthetic-v0", "synthetic")
