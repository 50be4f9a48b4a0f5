"""recgym's RecRating environments for verifiers-based trainers and evaluators (prime-rl and others).

    import verifiers as vf

    env = vf.load_environment("recgym-verifiers", gym_id="RecRating-Yelp-v0", data_dir="~/data/yelp")

verifiers' loader imports the module named by the id with ``-`` read as ``_``, which is this one
(the name ``recgym`` itself would be the package, not an adapter). Its own first parameter is
called ``env_id``, so through it the RecRating id goes as ``gym_id``. Needs ``pip install
'recgym[verifiers]'``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["load_environment"]


VERIFIERS_ID = "recgym-verifiers"


def load_environment(
    env_id: str = "RecRating-Synthetic-v0",
    split: str = "train",
    num_samples: int | None = None,
    seed: int | None = None,
    *,
    gym_id: str | None = None,
    **env_kwargs: Any,
):
    """A ``verifiers.SingleTurnEnv`` over one split of a RecRating environment.

    Its dataset (and eval dataset) holds one row per sample: ``prompt`` (the chat messages the Gymnasium environment
    shows), ``answer`` (the true rating, as text) and ``info`` (``target_rating``, ``scale`` as
    ``[low, high, step]``, ``user_id``, ``item_id``, ``index``). Its rubric holds the environment's
    reward in two parts, ``format_reward`` and ``accuracy_reward``, each with weight 1, so a
    rollout's reward is exactly what ``env.step`` gives for the same completion.

    Args:
        env_id: a registered ``RecRating-*-v0`` id.
        gym_id: the same, under the name that passes through ``verifiers.load_environment``
            (which takes ``env_id`` itself); it wins when given.
        split: ``train``, ``valid`` or ``test``.
        num_samples: take only the first samples (after a shuffle when ``seed`` is given).
        seed: shuffle the samples with this seed.
        **env_kwargs: passed to ``gymnasium.make`` (``data_dir``, ``max_user_history``, ...).
    """
    try:
        import verifiers as vf
    except ImportError:
        raise ImportError("recgym_verifiers needs verifiers: pip install 'recgym[verifiers]'") from None
    import gymnasium as gym

    import recgym  # noqa: F401  (registers the environments)
    from recgym.integrations.trl import env_to_dataset, reward_functions

    env_id = gym_id or env_id
    env = gym.make(env_id, split=split, **env_kwargs)
    rows = env_to_dataset(env, split, num_samples=num_samples, seed=seed)
    dataset = rows.map(
        lambda row: {
            "answer": format(row["target_rating"], "g"),
            "info": {
                "target_rating": row["target_rating"],
                "scale": [row["scale_low"], row["scale_high"], row["scale_step"]],
                "user_id": row["user_id"],
                "item_id": row["item_id"],
                "index": row["index"],
            },
            "task": env_id,
        },
        remove_columns=[c for c in rows.column_names if c != "prompt"],
    )
    funcs = [_per_rollout(f) for f in reward_functions(env)]
    return vf.SingleTurnEnv(
        dataset=dataset,
        eval_dataset=dataset,  # verifiers' evaluate reads this one
        rubric=vf.Rubric(funcs=funcs, weights=[1.0, 1.0]),
        env_id=VERIFIERS_ID,
        env_args={"env_id": env_id, "split": split, "num_samples": num_samples, "seed": seed, **env_kwargs},
    )


def _per_rollout(batch_reward: Callable[..., list[float]]) -> Callable[..., float]:
    """A verifiers reward function (one rollout) from a TRL-style one (a batch of completions)."""

    def reward(completion: Any, info: dict[str, Any], **kwargs: Any) -> float:
        low, high, step = info["scale"]
        return batch_reward([completion], [info["target_rating"]], [low], [high], [step])[0]

    reward.__name__ = batch_reward.__name__
    return reward
