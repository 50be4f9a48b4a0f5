"""``recgym baseline ENV_ID``: classical reference MAE/RMSE (means, biases, biased MF), or for
``RecRank-*`` ids NDCG/HR/MRR of the ranking baselines on the env's candidate lists."""

from __future__ import annotations

import argparse

from rich.table import Table

from recgym.commands import CommandError, given_values
from recgym.commands.data import add_dataset_options, dataset_kwargs, env_kwargs_option
from recgym.console import make_console


def run(args: argparse.Namespace) -> int:
    import gymnasium as gym

    import recgym.envs.real_envs  # noqa: F401  (registers the environments, real-data ids too)
    from recgym.baselines import run_baselines
    from recgym.data.dataset import preparation
    from recgym.data.registry import check_arguments, environment_arguments, load_dataset
    from recgym.data.store import preparation_label

    if args.env_id not in gym.registry:
        raise CommandError(f"unknown environment {args.env_id!r} (see `recgym envs`)")
    if args.limit < 0:
        raise CommandError(f"--limit must be >= 0 (0: every list), got {args.limit}")
    spec = gym.registry[args.env_id]
    env_class = gym.envs.registration.load_env_creator(spec.entry_point)
    ranking = getattr(env_class, "task", "rating") == "ranking"
    if args.limit and not ranking:
        raise CommandError(f"--limit applies to RecRank-* environments (their candidate lists); {args.env_id}'s "
                           "baselines are scored on every sample of each split: leave it out")
    given = env_kwargs_option(args.env_kwargs, "--splits")
    kwargs = {**{k: v for k, v in spec.kwargs.items() if k != "dataset"}, **given}
    env_kwargs = {k: kwargs.pop(k) for k in environment_arguments(env_class) if k in kwargs}  # the rest: the loader's
    with given_values():
        check_arguments(spec.kwargs["dataset"], kwargs, env_class)
        dataset = load_dataset(spec.kwargs["dataset"], **{**kwargs, **dataset_kwargs(args)})
        for split in args.splits:
            dataset.require_samples(split)
    prepared = preparation_label(preparation(dataset))  # options given to `data prepare` are not remembered
    if ranking:
        return _run_ranking(args, dataset, env_class, env_kwargs, prepared)
    results = run_baselines(dataset, splits=args.splits)
    table = Table(title=f"{args.env_id}: classical baselines (scale {dataset.scale.label}, "
                  f"{prepared + ', ' if prepared else ''}fit on train)")
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


def _run_ranking(args: argparse.Namespace, dataset, env_class, env_kwargs: dict, prepared: str) -> int:
    from recgym.baselines import FIT_ON_TRAIN, ranking_baseline_ranks
    from recgym.metrics import ranking_metrics

    for split in args.splits:
        with given_values():
            env = env_class(dataset, split=split, **env_kwargs)
        lists = env.lists[: args.limit] if args.limit else env.lists
        table = Table(title=f"{args.env_id} {split}: ranking baselines on the same {len(lists):,} candidate lists "
                      f"({env.num_candidates} candidates, {env.negatives} negatives, seed {env.candidate_seed}; "
                      f"{env.skipped} samples skipped{'; ' + prepared if prepared else ''})")
        if split == "train":
            table.caption = (f"no {' or '.join(FIT_ON_TRAIN)} row: they are fit on the train split, which holds "
                             "these lists' targets (score them with --splits valid test)")
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
    parser = subparsers.add_parser("baseline", help="MAE/RMSE of classical baselines on an environment's data "
                                   "(RecRank-*: NDCG, HR, MRR on its candidate lists)")
    parser.add_argument("env_id", help="e.g. RecRating-Yelp-v0")
    parser.add_argument("--splits", nargs="+", default=["valid", "test"], choices=("train", "valid", "test"),
                        help="RecRank-*: train lists get no item_knn or bpr row (both are fit on train)")
    parser.add_argument("--limit", type=int, default=0, help="ranking envs: score only the first N lists (0: all)")
    parser.add_argument("--env-kwargs", default=None, help="JSON, as `recgym eval` takes it, e.g. "
                        '\'{"num_candidates": 10, "negatives": "popularity", "candidate_seed": 1}\'')
    add_dataset_options(parser)
    parser.set_defaults(func=run)
