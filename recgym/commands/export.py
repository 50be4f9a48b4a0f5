"""``recgym export verl``: an environment's samples as verl's parquet dataset files."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from recgym.commands import CommandError, given_values
from recgym.console import make_console


def run_verl(args: argparse.Namespace) -> int:
    import gymnasium as gym
    import pandas as pd
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    import recgym
    import recgym.envs.real_envs  # noqa: F401
    from recgym.integrations.verl import SPLIT_FILES, export_rows, make_env

    if args.env not in gym.registry:
        raise CommandError(f"unknown environment {args.env!r} (see `recgym envs`)")
    if args.n is not None and args.n < 1:
        raise CommandError(f"-n must be >= 1, got {args.n}")
    with given_values("--env-kwargs: "):
        env_kwargs = json.loads(args.env_kwargs) if args.env_kwargs else {}
        if not isinstance(env_kwargs, dict):
            raise TypeError(f"expected a JSON object, got {args.env_kwargs!r}")
    if args.data_dir:
        env_kwargs["data_dir"] = str(Path(args.data_dir).expanduser().resolve())
    out = Path(args.out).expanduser()
    if out.exists() and not out.is_dir():
        raise CommandError(f"--out {out} exists and is not a folder")
    sizes = {}
    for split in args.splits:
        try:
            env = make_env(args.env, split, env_kwargs)
        except (ValueError, TypeError) as exc:
            raise CommandError(f"cannot make {args.env} ({split}): {exc}") from exc
        sizes[split] = len(env.unwrapped) if args.n is None else min(args.n, len(env.unwrapped))
    out.mkdir(parents=True, exist_ok=True)
    console = make_console(stderr=True)
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, disable=args.quiet) as progress:
        for split in args.splits:
            task = progress.add_task(f"{split} -> {SPLIT_FILES[split]}", total=sizes[split])
            rows = export_rows(args.env, split, num_samples=args.n, seed=args.seed, env_kwargs=env_kwargs,
                               progress=lambda n, task=task: progress.advance(task, n))
            pd.DataFrame(rows).to_parquet(out / SPLIT_FILES[split], index=False)
    make_console().print(f"wrote {', '.join(f'{SPLIT_FILES[s]} ({sizes[s]:,} rows)' for s in args.splits)} to {out}")
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser("export", help="write an environment's samples for another trainer (verl)")
    targets = parser.add_subparsers(dest="target", metavar="TARGET", required=True)
    verl = targets.add_parser("verl", help="verl's parquet layout: train.parquet, validation.parquet")
    verl.add_argument("--env", required=True, help="e.g. RecRating-Yelp-v0 or RecRatingTools-Synthetic-v0")
    verl.add_argument("--data-dir", help="the raw data folder the environment reads")
    verl.add_argument("--env-kwargs", default=None, help='JSON passed to gym.make, e.g. \'{"max_user_history": 10}\'')
    verl.add_argument("--out", required=True, help="folder for the parquet files")
    verl.add_argument("--splits", nargs="+", default=["train", "valid"], choices=("train", "valid", "test"))
    verl.add_argument("-n", type=int, default=None, help="the first N samples of each split (default: all)")
    verl.add_argument("--seed", type=int, default=None, help="shuffle the samples with this seed before -n")
    verl.add_argument("--quiet", action="store_true", help="no progress bar")
    verl.set_defaults(func=run_verl)
