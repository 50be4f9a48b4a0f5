"""Environment throughput on the synthetic world, on one core: resets/s, steps/s, reward parses/s.

Target: the environment is never the bottleneck of training (>= 20,000 reward computations/s and
>= 5,000 resets/s on one core of a 2-core x86-64 machine).

    python bench/env_throughput.py
"""

from __future__ import annotations

import os
import time

import gymnasium as gym
from rich.table import Table

import recgym  # noqa: F401
from recgym.console import machine_description, make_console
from recgym.data.schema import RatingScale
from recgym.rewards import FOUR_STEP_TAGS, RANK_TAGS, RatingReward

TARGETS = {"resets/s": 5_000, "reward computations/s": 20_000}


def rate(fn, n: int) -> float:
    fn(min(n, 200))  # warm-up
    start = time.perf_counter()
    fn(n)
    return n / (time.perf_counter() - start)


def main() -> None:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core
    env = gym.make("RecRating-Synthetic-v0").unwrapped
    env.reset(seed=0)
    completion = (
        "".join(f"<{t}>{'The user likes quiet Italian places and dislikes high prices. ' * 6}</{t}>" for t in FOUR_STEP_TAGS[:3])
        + "<rate>3.5</rate>"
    )
    reward = RatingReward()
    scale = RatingScale()

    def resets(n):
        for _ in range(n):
            env.reset()

    def episodes(n):
        for _ in range(n):
            env.reset()
            env.step(completion)

    def rewards(n):
        for _ in range(n):
            reward(completion, 4.0, scale)

    rank_env = gym.make("RecRank-Synthetic-v0").unwrapped
    rank_env.reset(seed=0)
    ranking = "".join(f"<{t}>{'The diner likes quiet Thai places. ' * 6}</{t}>" for t in RANK_TAGS[:3]) + (
        "<rank>" + " ".join(f"[{j}]" for j in range(rank_env.num_candidates, 0, -1)) + "</rank>"
    )
    for n in range(len(rank_env)):  # build every list first: the rate is of reset + step alone
        rank_env.lists[n]

    def rank_episodes(n):
        for _ in range(n):
            rank_env.reset()
            rank_env.step(ranking)

    results = {
        "resets/s": rate(resets, 20_000),
        "steps/s (reset + step)": rate(episodes, 20_000),
        "reward computations/s": rate(rewards, 100_000),
        "RecRank steps/s (reset + step, 20 candidates)": rate(rank_episodes, 5_000),
    }
    table = Table(title=f"RecRating-Synthetic-v0 throughput, one core of a {machine_description()}")
    for column in ("measure", "per second", "target", "ratio to target"):
        table.add_column(column, justify="right")
    for name, value in results.items():
        target = TARGETS.get(name)
        table.add_row(name, f"{value:,.0f}", f"{target:,}" if target else "-", f"{value / target:.1f}x" if target else "-")
    make_console().print(table)
    print(f"completion length: {len(completion)} characters; prompt length: {len(env.reset()[0])} characters")


if __name__ == "__main__":
    main()
