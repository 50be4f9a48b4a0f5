"""``make demo``: scripted reference policies stepped through ``RecRating-Synthetic-v0``."""

from __future__ import annotations

import argparse
import time

import gymnasium as gym
import numpy as np
from rich.progress import track
from rich.table import Table

import recgym  # noqa: F401  (registers the environments)
from recgym.agents.scripted import FormatBreakingPolicy, UserAveragePolicy
from recgym.console import make_console
from recgym.metrics import RatingMetrics, fallback_predictions, rating_metrics


def evaluate_scripted(policy, env_id: str = "RecRating-Synthetic-v0", split: str = "valid", n: int | None = None, **env_kwargs) -> RatingMetrics:
    """Step ``policy`` through every sample (or the first ``n``) of ``split``."""
    env = gym.make(env_id, split=split, **env_kwargs)
    core = env.unwrapped
    count = len(core) if n is None else min(n, len(core))
    predictions, targets, formats, rewards = [], [], [], []
    for index in track(range(count), description=policy.name[:40], transient=True):
        obs, _ = env.reset(options={"index": index})
        _, reward, _, _, info = env.step(policy.act(obs))
        predictions.append(info["parsed_rating"])
        targets.append(info["target_rating"])
        formats.append(info["reward_breakdown"]["format_ok"])
        rewards.append(reward)
    user_avg, item_avg = core.dataset.prior_averages(split)
    fallbacks = fallback_predictions(user_avg[:count], item_avg[:count], core.dataset.train_mean())
    return rating_metrics(targets, predictions, fallbacks, core.scale, formats, rewards)


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
    rows = {p.name: evaluate_scripted(p, split=args.split, n=args.n) for p in (UserAveragePolicy(), FormatBreakingPolicy())}
    console.print(metrics_table(f"Scripted reference policies on the {args.split} split", rows))
    console.print(f"done in {time.perf_counter() - start:.1f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
