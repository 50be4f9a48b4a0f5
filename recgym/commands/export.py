"""``recgym export verl``: an environment's samples as verl's parquet dataset files."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from recgym.commands import CommandError
from recgym.commands.data import add_dataset_options, dataset_kwargs, env_kwargs_option
from recgym.console import make_console

#: Beside the parquet files: the export that wrote them (what the next export into the folder checks).
MANIFEST = "recgym_export.json"
#: Loader arguments that name files or folders relative to the working directory (``reviews_file``
#: and ``meta_file`` are relative to ``data_dir``).
PATH_KWARGS = ("data_dir", "path", "cache_dir")


def absolute_paths(env_id: str, env_kwargs: dict[str, Any]) -> dict[str, Any]:
    """``env_kwargs`` with its paths absolute and the data folder pinned (``data_dir`` defaults to
    ``$RECGYM_DATA_DIR/<name>`` or the folder the cache prepared it from), so the reward rebuilds
    the environment from any working directory or process (verl's Ray workers)."""
    import gymnasium as gym

    from recgym.data.loaders import REAL_DATASETS, default_data_dir

    dataset = gym.spec(env_id).kwargs.get("dataset")
    if dataset in REAL_DATASETS and dataset != "custom" and env_kwargs.get("data_dir") is None:
        env_kwargs = {**env_kwargs, "data_dir": default_data_dir(dataset, None, env_kwargs.get("cache_dir"))}
    return {k: str(Path(v).expanduser().resolve()) if k in PATH_KWARGS else v
            for k, v in env_kwargs.items() if k not in PATH_KWARGS or v is not None}


def check_out(out: Path, manifest: dict[str, Any]) -> None:
    """Refuse an ``--out`` whose parquet files would not all be this export's afterwards: files
    of another environment or ``env_kwargs``, of unknown origin, or splits it does not write."""
    if out.exists() and not out.is_dir():
        raise CommandError(f"--out {out} exists and is not a folder")
    found = sorted(p.name for p in out.glob("*.parquet")) if out.is_dir() else []
    if not found:
        return
    try:
        saved = json.loads((out / MANIFEST).read_text())
    except (OSError, ValueError):
        saved = None
    stale = [name for name in found if name not in manifest["files"]]
    if not isinstance(saved, dict):
        what = f"{', '.join(found)} not written by `recgym export verl`"
    elif (saved.get("env"), saved.get("env_kwargs")) != (manifest["env"], manifest["env_kwargs"]):
        what = f"an export of {saved.get('env')} with env_kwargs {saved.get('env_kwargs')}"
    elif stale:
        what = f"{', '.join(stale)} of an earlier export, which this one would not replace"
    else:
        return
    raise CommandError(f"--out {out} holds {what}: use another --out, or remove its .parquet files")


def launch_problem(data: str, config: str, overrides: list[str]) -> str | None:
    """Why verl should not start on the export in folder ``data`` with the Hydra config file
    ``config`` and the command line's ``overrides`` (``key=value``), or None: verl 0.4.1 drops no
    over-long prompt, so the export must have dropped those over the config's
    ``data.max_prompt_length``, counted with the trained model's tokenizer."""
    import yaml

    given = dict(o.split("=", 1) for o in overrides if "=" in o)
    settings = yaml.safe_load(Path(config).read_text()) or {}
    length = given.get("data.max_prompt_length", (settings.get("data") or {}).get("max_prompt_length"))
    model = given.get("actor_rollout_ref.model.path",
                      ((settings.get("actor_rollout_ref") or {}).get("model") or {}).get("path"))
    try:
        manifest = json.loads((Path(data) / MANIFEST).read_text())
    except (OSError, ValueError):
        return f"{data} holds no {MANIFEST}: export there first with `recgym export verl --out {data} ...`"
    again = f"export again with --max-prompt-tokens {length} --tokenizer {model}"
    if manifest.get("max_prompt_tokens") is None:
        return f"{data} was exported without --max-prompt-tokens, and verl stops at the first prompt over {length} tokens: {again}"
    if int(manifest["max_prompt_tokens"]) > int(length):
        return (f"{data} keeps prompts of up to {manifest['max_prompt_tokens']} tokens, over data.max_prompt_length "
                f"{length}: {again}")
    if manifest.get("tokenizer") != model:
        return f"{data}'s prompts were counted with {manifest.get('tokenizer')}'s tokenizer, the run trains {model}: {again}"
    return None


def main(argv: list[str]) -> int:
    """``python -m recgym.commands.export DATA CONFIG [OVERRIDES...]`` (the verl launch script's
    check): exit 2 with ``launch_problem``'s line, else 0."""
    problem = launch_problem(argv[0], argv[1], argv[2:])
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    return 0


def prompt_counter(name: str):
    """``messages -> tokens``: a prompt's length as verl's ``RLHFDataset`` measures it (the chat
    template with the generation prompt, then the tokenizer without special tokens), with the
    tokenizer of the model ``name`` (see ``recgym.agents.models.model_path``)."""
    from recgym.agents.models import load_tokenizer
    from recgym.commands.train import check_model

    tokenizer = load_tokenizer(check_model(name))

    def count(messages: list[dict[str, Any]]) -> int:
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    return count


def run_verl(args: argparse.Namespace) -> int:
    import gymnasium as gym
    import pandas as pd
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    import recgym
    import recgym.envs.real_envs  # noqa: F401
    from recgym.agents.models import DEFAULT_MODEL
    from recgym.agents.run_log import write_text_atomic
    from recgym.integrations.verl import SPLIT_FILES, export_rows, make_env

    if args.env not in gym.registry:
        raise CommandError(f"unknown environment {args.env!r} (see `recgym envs`)")
    if args.n is not None and args.n < 1:
        raise CommandError(f"-n must be >= 1, got {args.n}")
    if args.seed is not None and args.seed < 0:
        raise CommandError(f"--seed must be >= 0, got {args.seed}")
    if args.max_prompt_tokens is not None and args.max_prompt_tokens < 1:
        raise CommandError(f"--max-prompt-tokens must be >= 1, got {args.max_prompt_tokens}")
    if args.tokenizer is not None and args.max_prompt_tokens is None:
        raise CommandError("--tokenizer counts prompt tokens for --max-prompt-tokens: give both, or neither")
    limit, tokenizer = args.max_prompt_tokens, args.tokenizer or DEFAULT_MODEL
    count_tokens = prompt_counter(tokenizer) if limit is not None else None
    env_kwargs = env_kwargs_option(args.env_kwargs, "--splits")
    env_kwargs = absolute_paths(args.env, {**env_kwargs, **dataset_kwargs(args)})
    out = Path(args.out).expanduser()
    manifest = json.loads(json.dumps({"env": args.env, "env_kwargs": env_kwargs, "splits": args.splits,
                                      "files": [SPLIT_FILES[s] for s in args.splits], "n": args.n,
                                      "seed": args.seed, "max_prompt_tokens": limit,
                                      "tokenizer": tokenizer if limit is not None else None}))
    check_out(out, manifest)
    sizes = {}
    for split in args.splits:
        try:
            env = make_env(args.env, split, env_kwargs)
        except (ValueError, TypeError) as exc:
            raise CommandError(f"cannot make {args.env} ({split}): {exc}") from exc
        sizes[split] = len(env.unwrapped) if args.n is None else min(args.n, len(env.unwrapped))
    out.mkdir(parents=True, exist_ok=True)
    # every split under a temporary name, renamed once all are written, the manifest last: an
    # interrupted export leaves the folder's earlier export whole (and the next one replaces a
    # temporary file that a killed export left)
    temporary = {split: out / f".{SPLIT_FILES[split]}.tmp" for split in args.splits}
    dropped = dict.fromkeys(args.splits, 0)
    console = make_console(stderr=True)
    try:
        with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console, disable=args.quiet) as progress:
            for split in args.splits:
                task = progress.add_task(f"{split} -> {SPLIT_FILES[split]}", total=sizes[split])
                rows = export_rows(args.env, split, num_samples=args.n, seed=args.seed, env_kwargs=env_kwargs,
                                   progress=lambda n, task=task: progress.advance(task, n))
                if count_tokens is not None:
                    kept = [row for row in rows if count_tokens(row["prompt"]) <= limit]
                    if not kept:
                        raise CommandError(f"all {len(rows)} {split} prompts are over {limit} tokens with {tokenizer}'s "
                                           "chat template: raise --max-prompt-tokens")
                    dropped[split], rows = len(rows) - len(kept), kept
                sizes[split] = len(rows)
                pd.DataFrame(rows).to_parquet(temporary[split], index=False)
        (out / MANIFEST).unlink(missing_ok=True)
        for split in args.splits:
            os.replace(temporary[split], out / SPLIT_FILES[split])
    finally:
        for path in temporary.values():
            path.unlink(missing_ok=True)
    write_text_atomic(out / MANIFEST, json.dumps({**manifest, "dropped": dropped}, indent=1))
    wrote = f"wrote {', '.join(f'{SPLIT_FILES[s]} ({sizes[s]:,} rows)' for s in args.splits)} to {out}"
    if limit is not None:
        wrote += (f"; dropped the prompts over {limit} tokens ({tokenizer}): "
                  + ", ".join(f"{s} {dropped[s]:,}" for s in args.splits))
    make_console().print(wrote)
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser("export", help="write an environment's samples for another trainer (verl)")
    targets = parser.add_subparsers(dest="target", metavar="TARGET", required=True)
    verl = targets.add_parser("verl", help="verl's parquet layout: train.parquet, validation.parquet")
    verl.add_argument("--env", required=True, help="e.g. RecRating-Yelp-v0, RecRank-Yelp-v0 or RecRatingTools-Yelp-v0")
    verl.add_argument("--env-kwargs", default=None, help='JSON passed to gym.make, e.g. \'{"max_user_history": 10}\'')
    verl.add_argument("--out", required=True, help=f"folder for the parquet files (and {MANIFEST}, which a later "
                      "export into it checks)")
    verl.add_argument("--splits", nargs="+", default=["train", "valid"], choices=("train", "valid", "test"))
    verl.add_argument("-n", type=int, default=None, help="the first N samples of each split (default: all)")
    verl.add_argument("--seed", type=int, default=None, help="shuffle the samples with this seed before -n")
    verl.add_argument("--max-prompt-tokens", type=int, default=None, metavar="N",
                      help="leave out the samples whose chat prompt is over N tokens (verl's data.max_prompt_length: "
                      "verl 0.4.1's own filter_overlong_prompts keeps every prompt under transformers 5)")
    verl.add_argument("--tokenizer", default=None, help="the model whose tokenizer and chat template count "
                      "--max-prompt-tokens: a name, local path or hub id, as verl's actor_rollout_ref.model.path "
                      "(default: smollm2-135m-instruct)")
    verl.add_argument("--quiet", action="store_true", help="no progress bar")
    add_dataset_options(verl)
    verl.set_defaults(func=run_verl)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
