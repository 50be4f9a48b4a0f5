"""``make demo``: scripted reference policies stepped through ``RecRating-Synthetic-v0``."""

from __future__ import annotations

import argparse
import time

import gymnasium as gym
import numpy as np
from rich.table import Table

import recgym  # noqa: F401  (registers the environments)
from recgym.agents.scripted import FormatBreakingPolicy, UserAveragePolicy
from recgym.console import make_console
from recgym.evaluation import evaluate
from recgym.metrics import RatingMetrics


def metrics_table(title: str, rows: dict[str, RatingMetrics]) -> Table:
    table = Table(title=title)
    for column in ("policy", "mean reward", "MAE", "RMSE", "MAE (parsed only)", "coverage", "format rate", "n"):
        table.add_column(column, justify="left" if column == "policy" else "right")
    for name, m in rows.items():
        table.add_row(
            name, f"{m.mean_reward:.3f}", f"{m.mae:.3f}", f"{m.rmse:.3f}", f"{m.mae_parsed:.3f}",
            f"{m.coverage:.1%}", f"{m.format_rate:.1%}", str(m.n),
        )
    table.caption = f"scale {next(iter(rows.values())).scale}; MAE/RMSE over all samples use the fallback: {next(iter(rows.values())).fallback}"
    return table


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
