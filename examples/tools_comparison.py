"""The single-turn and the tool-using scripted agents on the same samples, at the same budget of
tokens read (the README's table).

    python examples/tools_comparison.py [--n 300] [--split test] [--out comparison.json]

The tool agent (:class:`~recgym.agents.teachers.scripted.SimilarItemsToolPolicy`) plays
``RecRatingTools-Synthetic-v0``: one ``similar_items`` call, then the answer. The single-turn
reasoner (:class:`~recgym.agents.teachers.scripted.SyntheticReasonerPolicy`) plays
``RecRating-SyntheticLong-v0`` (the same samples) with as many of the newest reviews pasted in as
fit the tool agent's mean budget of tokens read, then with the default 10, then with the whole
history. Tokens are SmolLM2's, counted on what each agent reads: the task message (and the
history pasted into it) plus every tool result.
"""

from __future__ import annotations

import argparse
import json

import gymnasium as gym
import numpy as np

import recgym  # noqa: F401  (registers the environments)
from recgym.agents.evaluation import evaluate
from recgym.agents.teachers.scripted import (
    SimilarItemsToolPolicy,
    SyntheticReasonerPolicy,
    UserAveragePolicy,
)


def token_counter():
    from recgym.agents.models import load_tokenizer

    tokenizer = load_tokenizer("smollm2-135m-instruct")
    return lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])


def single_turn_tokens(env, n: int, count) -> float:
    """Mean tokens of the user message (task + pasted history) over the first ``n`` samples."""
    return float(np.mean([count(env.reset(options={"index": i})[1]["messages"][1]["content"]) for i in range(n)]))


def row(name: str, result, tokens: float, calls: float) -> dict:
    m = result.metrics
    return {"agent": name, "n": m.n, "mae": m.mae, "rmse": m.rmse, "coverage": m.coverage,
            "format_rate": m.format_rate, "tool_calls": calls, "tokens_read": tokens}


def main(n: int = 300, split: str = "test", count=None) -> list[dict]:
    count = count or token_counter()
    rows = []
    tools_env = gym.make("RecRatingTools-Synthetic-v0", split=split, token_counter=count)
    tool = evaluate(tools_env, SimilarItemsToolPolicy(), n=n, batch_size=50)
    budget = tool.episode_stats["tokens_read_mean"]
    rows.append(row("tools: similar_items(limit=3), then rate", tool, budget, tool.episode_stats["tool_calls_mean"]))

    def single(history: int):
        return gym.make("RecRating-SyntheticLong-v0", split=split, max_user_history=history, max_item_history=0)

    # the most pasted reviews whose prompt fits the tool agent's budget
    fits = max(h for h in range(49) if h == 0 or single_turn_tokens(single(h), min(n, 50), count) <= budget)
    for history, label in ((fits, "same budget"), (10, "default cut"), (48, "whole history")):
        env = single(history)
        tokens = single_turn_tokens(env, n, count)
        for policy in (SyntheticReasonerPolicy(), UserAveragePolicy()):
            result = evaluate(env, policy, n=n, baselines=False)
            rows.append(row(f"single turn, newest {history} reviews ({label}): {policy.name}", result, tokens, 0.0))
    for name, scores in tool.baselines.items():
        rows.append({"agent": f"baseline: {name}", "n": scores["n"], "mae": scores["mae"], "rmse": scores["rmse"],
                     "coverage": 1.0, "format_rate": None, "tool_calls": None, "tokens_read": None})
    return rows


def markdown(rows: list[dict]) -> str:
    def f(value, spec):
        return "–" if value is None else format(value, spec)

    lines = ["| agent | n | MAE | RMSE | coverage | format rate | tool calls | tokens read |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['agent']} | {r['n']} | {r['mae']:.3f} | {r['rmse']:.3f} | {r['coverage']:.0%} | "
                     f"{f(r['format_rate'], '.0%')} | {f(r['tool_calls'], '.2f')} | {f(r['tokens_read'], '.0f')} |")
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--split", default="test")
    parser.add_argument("--out", default=None, help="also write the rows as JSON")
    args = parser.parse_args()
    table = main(args.n, args.split)
    print(markdown(table))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(table, f, indent=2)
