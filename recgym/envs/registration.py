"""Registration of every ``RecRating-*-v0``, ``RecRatingTools-*-v0`` and ``RecRank-*-v0`` id with gymnasium (done on
``import recgym``)."""

from __future__ import annotations

from typing import Any

import gymnasium as gym

REGISTERED: dict[str, str] = {}
"""Env id -> dataset name, for ``recgym envs``."""
MULTI_TURN: set[str] = set()
"""The ids whose episodes take several turns (the tool-using ``RecRatingTools-*-v0``)."""
LOADER_DEFAULTS: dict[str, list[Any]] = {}
"""Keyword -> the values ids are registered with beside their dataset name (``long_history=True``)."""


def without_registered_defaults(dataset_kwargs: dict[str, Any]) -> dict[str, Any]:
    """``dataset_kwargs`` less any registered loader default (same type and value): ``gym.make(id,
    dataset=ds)`` merges the id's defaults into the arguments, yet they load the named dataset, not ``ds``."""
    return {k: v for k, v in dataset_kwargs.items()
            if not any(type(v) is type(d) and v == d for d in LOADER_DEFAULTS.get(k, ()))}


def register_rating_env(env_id: str, dataset: str, **default_kwargs: Any) -> None:
    """Register ``env_id`` as a RecRatingEnv over the registered dataset ``dataset``."""
    _register(env_id, dataset, "rec_rating:RecRatingEnv", "grouped_vector_entry_point", default_kwargs)


def register_tools_env(env_id: str, dataset: str, **default_kwargs: Any) -> None:
    """Register ``env_id`` as a multi-turn RecRatingToolsEnv over the registered dataset ``dataset``."""
    _register(env_id, dataset, "rec_rating_tools:RecRatingToolsEnv", "tools_vector_entry_point", default_kwargs)
    MULTI_TURN.add(env_id)


def _register(env_id: str, dataset: str, entry: str, vector_entry: str, default_kwargs: dict[str, Any]) -> None:
    if env_id not in gym.registry:
        gym.register(
            id=env_id,
            entry_point=f"recgym.envs.{entry}",
            vector_entry_point=f"recgym.envs.vector:{vector_entry}",
            kwargs={"dataset": dataset, **default_kwargs},
            disable_env_checker=True,
        )
    REGISTERED[env_id] = dataset
    for key, value in default_kwargs.items():
        LOADER_DEFAULTS.setdefault(key, []).append(value)


register_rating_env("RecRating-Synthetic-v0", "synthetic")
# the synthetic world with long histories, where the evidence for a rating is never among the
# newest fifteen: the tool environment's default, and the single-turn agent on the same samples
register_tools_env("RecRatingTools-Synthetic-v0", "synthetic", long_history=True)
register_rating_env("RecRating-SyntheticLong-v0", "synthetic", long_history=True)


def register_rank_env(env_id: str, dataset: str, **default_kwargs: Any) -> None:
    """Register ``env_id`` as a RecRankEnv over the registered dataset ``dataset``."""
    _register(env_id, dataset, "rec_rank:RecRankEnv", "rank_vector_entry_point", default_kwargs)


# diners choose their next restaurant by taste (the rating world picks uniformly: no next-item signal)
register_rank_env("RecRank-Synthetic-v0", "synthetic", choice_temperature=0.5)
