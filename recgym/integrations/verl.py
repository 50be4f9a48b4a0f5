"""Run verl's PPO/GRPO trainer on a RecRating, RecRank or RecRatingTools environment.

``export_rows`` renders an environment's samples in verl's dataset layout (``data_source``, chat
``prompt``, ``ability``, ``reward_model``, ``extra_info``); ``recgym export verl`` writes them as
``train.parquet`` / ``validation.parquet``. ``compute_score`` is verl's custom reward function
(``custom_reward_function.path`` = this file): it rebuilds the environment named in ``extra_info``
and scores with the environment's own reward, so verl's reward equals what ``env.step`` gives.

For a tool environment (``RecRatingTools-*``) verl hands ``compute_score`` the whole decoded
response (every assistant turn and every tool result); ``compute_score`` replays its turns through
the environment, so the tool costs count exactly as in ``env.step``. The rollout side lives in
:mod:`recgym.integrations.verl_tools`. Importing this module does not import verl.
"""

from __future__ import annotations

import functools
import json
import re
from typing import Any

import gymnasium as gym

ABILITY = "recommendation"
#: verl's file names per recgym split.
SPLIT_FILES = {"train": "train.parquet", "valid": "validation.parquet", "test": "test.parquet"}
#: How each environment message (a tool result or an error) begins (RecRatingToolsEnv.step).
_OBSERVATION_STARTS = ("Result of ", "Tool call error: ", "This turn is neither")
#: Between an environment message and the next assistant turn in a decoded response: the end of
#: a Hermes tool response and a chat template's assistant header (ChatML with or without its
#: special tokens, as ``decode(skip_special_tokens=True)`` leaves it).
_GLUE_AFTER = re.compile(
    r"^\s*(?:</tool_response>)?\s*(?:<\|im_end\|>)?\s*(?:<\|im_start\|>)?(?:assistant\n)?"
)
_NATIVE_CALL = re.compile(r"<tool_call>\s*(\{.*?\})\s*</tool_call>", re.DOTALL)


def _kwargs_key(env_kwargs: dict[str, Any]) -> str:
    return json.dumps(env_kwargs, sort_keys=True, default=str)


@functools.lru_cache(maxsize=16)
def _env(env_id: str, split: str, env_kwargs_json: str) -> gym.Env:
    import recgym
    import recgym.envs.real_envs  # noqa: F401  (the real-data ids too)

    return gym.make(env_id, split=split, **json.loads(env_kwargs_json))


def make_env(env_id: str, split: str = "train", env_kwargs: dict[str, Any] | str | None = None) -> gym.Env:
    """The environment an exported row names (cached: scoring a batch builds it once)."""
    if not isinstance(env_kwargs, str):
        env_kwargs = _kwargs_key(env_kwargs or {})
    return _env(env_id, split, env_kwargs)


def export_rows(env_id: str, split: str = "train", num_samples: int | None = None,
                seed: int | None = None, env_kwargs: dict[str, Any] | None = None,
                progress: Any = None) -> list[dict[str, Any]]:
    """One verl row per sample of ``split`` (see the module docstring); ``progress(n)`` is called
    after each row. ``ground_truth`` is the true rating (ranking: the true item's position), and
    ``extra_info`` carries the reward's columns (the scale; ranking: ``target_position``,
    ``num_candidates``). A tool environment's rows also carry ``tools_kwargs`` and
    ``interaction_kwargs`` in ``extra_info`` (what verl's multi-turn rollout passes to the tools
    and the interaction)."""
    from recgym.integrations.trl import reward_function_class, sample_rows

    env_kwargs = dict(env_kwargs or {})
    env = make_env(env_id, split, env_kwargs)
    rows = sample_rows(env, num_samples=num_samples, seed=seed)
    columns = reward_function_class(env).COLUMNS
    multi_turn = bool(getattr(env.unwrapped, "multi_turn", False))
    kwargs_json = _kwargs_key(env_kwargs)
    out = []
    for row in rows:
        rebuild = {"env_id": env_id, "split": split, "env_kwargs": kwargs_json, "index": row["index"]}
        extra = {**rebuild, **{c: row[c] for c in columns},
                 **{k: row[k] for k in ("user_id", "item_id") if k in row}, "multi_turn": multi_turn}
        if multi_turn:
            from recgym.envs.tools import TOOL_NAMES

            extra["tools_kwargs"] = {name: {"create_kwargs": rebuild} for name in TOOL_NAMES}
            extra["interaction_kwargs"] = {"name": "recgym", **rebuild}
        out.append({
            "data_source": env_id,
            "prompt": row["prompt"],
            "ability": ABILITY,
            "reward_model": {"style": "rule", "ground_truth": row.get("target_rating", row.get("target_position"))},
            "extra_info": extra,
        })
        if progress is not None:
            progress(1)
    return out


def native_call_to_text(turn: str) -> str:
    """A turn with a Hermes ``<tool_call>{"name": ..., "arguments": ...}</tool_call>`` (the native
    function calling of verl's tool path) as the environment's ``<call>`` text; others unchanged."""
    from recgym.envs.tools import CALL_OPEN, call_text

    match = _NATIVE_CALL.search(turn)
    if CALL_OPEN in turn or match is None:
        return turn
    try:
        call = json.loads(match.group(1))
        return call_text(str(call["name"]), call.get("arguments") or {})
    except (json.JSONDecodeError, KeyError, TypeError):
        return turn


def _candidate_turns(text: str, following: str) -> list[str]:
    """The turn as decoded, and, for a chat template that does not render tool calls (verl keeps
    them beside the message text), the turn with the call that the result names."""
    from recgym.envs.tools import CALL_CLOSE, CALL_OPEN

    turn = native_call_to_text(text)
    header = re.match(r"Result of (\w+\(.*?\)):\n", following)
    if CALL_OPEN in turn or header is None:
        return [turn]
    return [turn, f"{turn}{CALL_OPEN}{header.group(1)}{CALL_CLOSE}"]


def split_turns(env: gym.Env, index: int, response: str) -> list[str]:
    """The assistant turns of a decoded multi-turn response, found by replaying it: each
    environment message is the one the environment gives for the turns before it."""
    from recgym_verifiers import _Replay

    replay = _Replay(env.unwrapped)
    turns: list[str] = []
    pos = 0
    while True:
        cut = None
        starts = {m.start() for s in _OBSERVATION_STARTS for m in re.finditer(re.escape(s), response[pos:])}
        for start in sorted(starts):
            for turn in _candidate_turns(response[pos : pos + start], response[pos + start :]):
                _, info, ended = replay(index, [*turns, turn])
                if not ended and response[pos + start :].startswith(info["messages"][0]["content"]):
                    cut = (turn, pos + start + len(info["messages"][0]["content"]))
                    break
            if cut is not None:
                break
        if cut is None:
            return [*turns, native_call_to_text(response[pos:])]
        turns.append(cut[0])
        pos = cut[1] + _GLUE_AFTER.match(response[cut[1] :]).end()


def compute_score(data_source: str, solution_str: str, ground_truth: Any,
                  extra_info: dict[str, Any] | None = None, **kwargs: Any) -> dict[str, Any]:
    """verl's custom reward function: ``{"score": total, "format": ..., "accuracy": ...}`` (plus
    ``tool_cost``, ``num_calls`` for a tool environment; ranking: ``{"score", "format", "ndcg"}``
    with the true position as ``ground_truth``; a custom reward callable: the parts it gives), exactly
    what ``env.step`` gives for the same completion. ``extra_info`` is the exported row's; without it
    the env id is ``data_source`` and the reward is the default template's on its scale (ranking: its
    ``num_candidates``)."""
    extra = dict(extra_info or {})
    env = make_env(extra.get("env_id", data_source), extra.get("split", "train"), extra.get("env_kwargs", "{}"))
    core = env.unwrapped
    if getattr(core, "multi_turn", False) and "index" in extra:
        from recgym_verifiers import _Replay

        index = int(extra["index"])
        _, info = _Replay(core).final(index, split_turns(env, index, solution_str))
        parts = info["reward_breakdown"]
        return {"score": float(parts["total"]), "format": float(parts["format"]),
                "accuracy": float(parts["accuracy"]), "tool_cost": float(parts["tool_cost"]),
                "num_calls": float(info["num_calls"])}
    from recgym.data.schema import RatingScale

    if getattr(core, "task", "rating") == "ranking":
        parts = core.reward_fn(solution_str, int(ground_truth), int(extra.get("num_candidates", core.num_candidates)))
        # a custom reward callable need not give the parts
        return {"score": float(parts["total"]), **{k: float(parts[k]) for k in ("format", "ndcg") if k in parts}}
    scale = core.scale
    if "scale_low" in extra:
        scale = RatingScale(float(extra["scale_low"]), float(extra["scale_high"]), float(extra["scale_step"]))
    breakdown = core.reward_fn(solution_str, float(ground_truth), scale)
    return {"score": float(breakdown.total), "format": float(breakdown.format),
            "accuracy": float(breakdown.accuracy)}
