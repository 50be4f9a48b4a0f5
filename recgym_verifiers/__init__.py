"""recgym's RecRating environments for verifiers-based trainers and evaluators (prime-rl and others).

    import verifiers as vf

    env = vf.load_environment("recgym-verifiers", gym_id="RecRating-Yelp-v0", data_dir="~/data/yelp")
    tools = vf.load_environment("recgym-verifiers", gym_id="RecRatingTools-Synthetic-v0")  # multi-turn

A ``RecRating-*`` id gives a ``verifiers.SingleTurnEnv``; a tool-using ``RecRatingTools-*`` id gives
a ``verifiers.MultiTurnEnv`` whose environment turns are the tool results.

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
    """A ``verifiers.SingleTurnEnv`` over one split of a RecRating or RecRank environment.

    Its dataset (and eval dataset) holds one row per sample: ``prompt`` (the chat messages the Gymnasium environment
    shows), ``answer`` (the true rating, as text; ranking: the true item's label) and ``info``
    (``target_rating``, ``scale`` as ``[low, high, step]``, ``user_id``, ``item_id``, ``index``;
    ranking: ``target_position``, ``num_candidates``, ``user_id``, ``index``). Its rubric holds the
    environment's reward in two parts, ``format_reward`` and ``accuracy_reward`` (ranking:
    ``ndcg_reward``), each with weight 1, so a rollout's reward is exactly what ``env.step`` gives
    for the same completion.

    Args:
        env_id: a registered ``RecRating-*-v0`` id.
        gym_id: the same, under the name that passes through ``verifiers.load_environment``
            (which takes ``env_id`` itself); it wins when given.
        split: ``train``, ``valid`` or ``test``.
        num_samples: take only the first samples (after a shuffle when ``seed`` is given); None
            or -1 (verifiers' convention): all.
        seed: shuffle the samples with this seed.
        **env_kwargs: passed to ``gymnasium.make`` (``data_dir``, ``max_user_history``, ...).
    """
    try:
        import verifiers as vf
    except ImportError:
        raise ImportError("recgym_verifiers needs verifiers: pip install 'recgym[verifiers]'") from None
    import gymnasium as gym

    import recgym  # noqa: F401  (registers the environments)
    from recgym.integrations.trl import env_to_dataset, reward_function_class, reward_functions

    env_id = gym_id or env_id
    env = gym.make(env_id, split=split, **env_kwargs)
    env_args = {"env_id": env_id, "split": split, "num_samples": num_samples, "seed": seed, **env_kwargs}
    if getattr(env.unwrapped, "multi_turn", False):
        return _tools_environment(vf, env.unwrapped, env_id, split, num_samples, seed, env_args)
    rows = env_to_dataset(env, split, num_samples=num_samples, seed=seed)
    columns = reward_function_class(env).COLUMNS
    dataset = rows.map(
        lambda row: {"answer": _answer(row), "info": _info(row, columns), "task": env_id},
        remove_columns=[c for c in rows.column_names if c != "prompt"],
    )
    funcs = [_per_rollout(f) for f in reward_functions(env)]
    return vf.SingleTurnEnv(
        dataset=dataset,
        eval_dataset=dataset,  # verifiers' evaluate reads this one
        rubric=vf.Rubric(funcs=funcs, weights=[1.0] * len(funcs)),
        env_id=VERIFIERS_ID,
        env_args=env_args,
    )


_SCALE = ("scale_low", "scale_high", "scale_step")


def _answer(row: dict[str, Any]) -> str:
    """The true rating as text; ranking: the true item's label, e.g. ``[3]``."""
    return format(row["target_rating"], "g") if "target_rating" in row else f"[{row['target_position'] + 1}]"


def _info(row: dict[str, Any], columns: tuple[str, ...]) -> dict[str, Any]:
    """A row's reward columns (the scale as ``[low, high, step]``), ``user_id``, ``item_id``, ``index``."""
    info = {k: row[k] for k in columns if k not in _SCALE}
    if "scale_low" in columns:
        info["scale"] = [row[k] for k in _SCALE]
    return {**info, **{k: row[k] for k in ("user_id", "item_id", "index") if k in row}}


def _per_rollout(batch_reward: Callable[..., list[float]]) -> Callable[..., float]:
    """A verifiers reward function (one rollout) from a TRL-style one (a batch of completions)."""

    def reward(completion: Any, info: dict[str, Any], **kwargs: Any) -> float:
        values = {**info, **dict(zip(_SCALE, info.get("scale", ())))}
        return batch_reward([completion], **{k: [values[k]] for k in batch_reward.COLUMNS})[0]

    reward.__name__ = batch_reward.__name__
    return reward


# ---- the multi-turn tool environments ----


def _content(message: Any) -> str:
    return str(message["content"] if isinstance(message, dict) else getattr(message, "content", "") or "")


def _role(message: Any) -> str:
    return str(message["role"] if isinstance(message, dict) else getattr(message, "role", ""))


class _Replay:
    """Replays a rollout's assistant turns through one RecRatingToolsEnv: the tool result of the
    last turn, and the final reward and info. Pure in the turns (a fresh reset each time), so
    concurrent rollouts need no per-rollout environment; the last few replays are cached."""

    def __init__(self, env: Any) -> None:
        self.env = env
        self.cache: dict[tuple[int, tuple[str, ...]], tuple[float, dict[str, Any], bool]] = {}

    def __call__(self, index: int, turns: list[str]) -> tuple[float, dict[str, Any], bool]:
        """``(reward, info, ended)`` after the turns; ``ended`` False: the episode goes on."""
        key = (index, tuple(turns))
        if key not in self.cache:
            if len(self.cache) > 256:
                self.cache.clear()
            self.cache[key] = self._play(index, turns, truncate=False)
        return self.cache[key]

    def final(self, index: int, turns: list[str]) -> tuple[float, dict[str, Any]]:
        """The episode's reward and info; a rollout that stopped before an answer is truncated."""
        reward, info, ended = self(index, turns)
        if not ended:
            reward, info, _ = self._play(index, turns, truncate=True)
        return reward, info

    def _play(self, index: int, turns: list[str], truncate: bool) -> tuple[float, dict[str, Any], bool]:
        self.env.reset(options={"index": index})
        for text in turns:
            _, reward, terminated, truncated, info = self.env.step(text)
            if terminated or truncated:
                return float(reward), info, True
        if not truncate:
            return 0.0, info if turns else {}, False
        _, reward, _, _, info = self.env.end_episode("the rollout stopped before an answer")
        return float(reward), info, True


def _tools_environment(vf: Any, core: Any, env_id: str, split: str, num_samples: int | None, seed: int | None,
                       env_args: dict[str, Any]):
    """A ``verifiers.MultiTurnEnv`` over a RecRatingToolsEnv: prompt = the reset messages, each
    environment turn = the tool result (or error) the Gymnasium environment returns, rubric = the
    environment's reward in three parts (``format_reward``, ``accuracy_reward``, ``tool_cost_reward``,
    weight 1 each) plus ``tool_calls`` and ``tokens_read`` as zero-weight metrics."""
    from datasets import Dataset

    from recgym.integrations.trl import sample_indices

    rows = {"prompt": [], "answer": [], "info": [], "task": []}
    for index in sample_indices(len(core), num_samples, seed):
        _, info = core.reset(options={"index": index})
        target = core.dataset.target(split, index)
        rows["prompt"].append(info["messages"])
        rows["answer"].append(format(target, "g"))
        rows["info"].append({"target_rating": target, "index": index, "user_id": info["user_id"],
                             "item_id": info["item_id"], "scale": [core.scale.low, core.scale.high, core.scale.step]})
        rows["task"].append(env_id)
    dataset = Dataset.from_dict(rows)
    replay = _Replay(core)

    def turns_of(completion: Any) -> list[str]:
        return [_content(m) for m in completion if _role(m) == "assistant"] if isinstance(completion, list) else [str(completion)]

    def part(name: str):
        def reward(completion: Any, info: dict[str, Any], **kwargs: Any) -> float:
            _, final = replay.final(int(info["index"]), turns_of(completion))
            if name in ("tool_calls", "tokens_read"):
                return float(final["num_calls" if name == "tool_calls" else "tokens_read"])
            return float(final["reward_breakdown"][name])

        reward.__name__ = name if name in ("tool_calls", "tokens_read") else f"{name}_reward"
        return reward

    class RecRatingToolsVerifiersEnv(vf.MultiTurnEnv):
        """Each environment turn replays the rollout's assistant turns through the Gymnasium
        environment and returns the last one's tool result; a final answer (or the turn budget)
        ends the rollout with no further message."""

        async def env_response(self, messages: Any, state: Any, **kwargs: Any) -> Any:
            prompt_len = len(state["prompt"])
            turns = [_content(m) for m in messages[prompt_len:] if _role(m) == "assistant"]
            _, info, ended = replay(int(state["info"]["index"]), turns)
            if ended:
                state["final_env_response"] = []
                return []
            return list(info["messages"])

    return RecRatingToolsVerifiersEnv(
        dataset=dataset,
        eval_dataset=dataset,
        max_turns=core.max_turns,
        rubric=vf.Rubric(funcs=[part("format"), part("accuracy"), part("tool_cost"), part("tool_calls"),
                                part("tokens_read")], weights=[1.0, 1.0, 1.0, 0.0, 0.0]),
        env_id=VERIFIERS_ID,
        env_args=env_args,
    )
