"""``make demo``: scripted reference policies stepped through ``RecRating-Synthetic-v0``."""

from __future__ import annotations

import argparse
import time

import gymnasium as gym
import numpy as np

import recgym  # noqa: F401  (registers the environments)
from recgym.agents.scripted import FormatBreakingPolicy, UserAveragePolicy
from recgym.console import make_console, metrics_table
from recgym.evaluation import evaluate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--split", default="valid")
    parser.add_argument("-n", type=int, default=None, help="samples to evaluate (default: the whole split)")
    args = parser.parse_args(argv)
    console = make_console()
    start = time.perf_counter()
    from recgym.data.synthetic import generate_world

    world = generate_world()
    dataset = world.dataset
    y = dataset.targets(args.split)
    console.print(
        f"[bold]RecRating-Synthetic-v0[/]: {dataset.stats['ratings']} ratings, {dataset.stats['users']} users, "
        f"{dataset.stats['items']} restaurants; {len(y)} {args.split} samples. "
        f"Oracle MAE {np.abs(world.oracle_for(args.split) - y).mean():.3f} "
        f"(the noise-free rating: a floor no policy can beat by much)."
    )
    env = gym.make("RecRating-Synthetic-v0", split=args.split)
    rows = {
        p.name: evaluate(env, p, n=args.n, baselines=False).metrics
        for p in (UserAveragePolicy(), FormatBreakingPolicy())
    }
    console.print(metrics_table(f"Scripted reference policies on the {args.split} split", rows))
    console.print(f"done in {time.perf_counter() - start:.1f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
