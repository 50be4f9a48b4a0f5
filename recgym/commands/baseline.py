"""``recgym baseline ENV_ID``: classical reference MAE/RMSE (means, biases, biased MF)."""

from __future__ import annotations

import argparse

from rich.table import Table

from recgym.commands import CommandError, given_values
from recgym.commands.data import add_dataset_options, dataset_kwargs
from recgym.console import make_console


def run(args: argparse.Namespace) -> int:
    import gymnasium as gym

    import recgym.envs.real_envs  # noqa: F401  (registers the environments, real-data ids too)
    from recgym.baselines import run_baselines
    from recgym.data.registry import load_dataset

    if args.env_id not in gym.registry:
        raise CommandError(f"unknown environment {args.env_id!r} (see `recgym envs`)")
    spec = gym.registry[args.env_id]
    kwargs = {**{k: v for k, v in spec.kwargs.items() if k != "dataset"}, **dataset_kwargs(args)}
    with given_values():
        dataset = load_dataset(spec.kwargs["dataset"], **kwargs)
        for split in args.splits:
            dataset.require_samples(split)
    if getattr(gym.envs.registration.load_env_creator(spec.entry_point), "task", "rating") == "ranking":
        return _run_ranking(args, dataset)
    results = run_baselines(dataset, splits=args.splits)
    table = Table(title=f"{args.env_id}: classical baselines (scale {dataset.scale.label}, fit on train)")
    table.add_column("baseline")
    for split in args.splits:
        n = next(iter(results.values()))[split]["n"]
        table.add_column(f"{split} MAE (n={n:,})", justify="right")
        table.add_column(f"{split} RMSE", justify="right")
    for name, per_split in results.items():
        cells = [f"{per_split[s][m]:.4f}" for s in args.splits for m in ("mae", "rmse")]
        table.add_row(name, *cells)
    make_console().print(table)
    return 0


def _run_ranking(args: argparse.Namespace, dataset) -> int:
    from recgym.baselines import ranking_baseline_ranks
    from recgym.envs.rec_rank import RecRankEnv
    from recgym.metrics import ranking_metrics

    for split in args.splits:
        env = RecRankEnv(dataset, split=split)
        lists = env.lists[: args.limit] if args.limit else env.lists
        table = Table(title=f"{args.env_id} {split}: ranking baselines on the same {len(lists):,} candidate lists "
                      f"({env.num_candidates} candidates, {env.negatives} negatives; {env.skipped} samples skipped)")
        columns = ("ndcg@5", "ndcg@10", "hr@1", "hr@5", "hr@10", "mrr")
        table.add_column("baseline")
        for column in columns:
            table.add_column(column.upper(), justify="right")
        for name, ranks in ranking_baseline_ranks(dataset, split, lists).items():
            metrics = ranking_metrics(ranks)
            table.add_row(name, *(f"{metrics[c]:.4f}" for c in columns))
        make_console().print(table)
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser("baseline", help="MAE/RMSE of classical baselines on an environment's data")
    parser.add_argument("env_id", help="e.g. RecRating-Yelp-v0")
    parser.add_argument("--splits", nargs="+", default=["valid", "test"], choices=("train", "valid", "test"))
    parser.add_argument("--limit", type=int, default=0, help="ranking envs: score only the first N lists (0: all)")
    add_dataset_options(parser)
    parser.set_defaults(func=run)
