"""``recgym data prepare NAME`` (raw files -> cached prepared dataset) and ``recgym data info NAME``."""

from __future__ import annotations

import argparse
import functools
import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from recgym.commands import CommandError, given_values
from recgym.console import make_console


def add_dataset_options(parser: argparse.ArgumentParser) -> None:
    """Where the raw data is and how to prepare it (shared by ``data prepare``, ``baseline`` and ``eval``).
    An option not given is not set (``argparse.SUPPRESS``): the dataset's own default applies, and each
    help says which it is."""
    add = functools.partial(parser.add_argument, default=argparse.SUPPRESS)
    add("--data-dir", help="folder with the raw files as published (default: $RECGYM_DATA_DIR/<name>, else the "
                           "folder it was prepared from)")
    add("--path", help="custom: the ratings file")
    add("--columns", help="custom: user=COL,item=COL,rating=COL,timestamp=COL[,review=COL,...]")
    add("--scale", type=float, nargs="+", metavar="X", help="custom: LOW HIGH [STEP] (default: 1 5)")
    add("--reviews-file", help="amazon*: the review file, where the folder holds several")
    add("--meta-file", help="amazon*: the metadata file, where the folder holds several")
    add("--kcore", type=int, metavar="K", help="keep users and items with at least K ratings (default: 0, all)")
    add("--split-method", choices=("leave_last_out", "time"),
        help="leave_last_out: each user's last rating is test, the second-last valid; time: a global cutoff "
             "(default: leave_last_out)")
    add("--valid-fraction", type=float, help="time split: share of ratings in valid (default: 0.1)")
    add("--test-fraction", type=float, help="time split: share of ratings in test (default: 0.1)")
    add("--keep-cold-samples", action="store_true",
        help="keep samples whose user has no prior rating (default: off, they are left out)")
    add("--skip-bad-records", action="store_true",
        help="skip malformed/invalid records (counted per reason in the manifest) instead of failing (default: off)")
    add("--cache-dir", help="cache root (default: $RECGYM_CACHE, else ~/.cache/recgym)")


def dataset_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """Loader keyword arguments for the options the user actually gave."""
    names = ("data_dir", "path", "reviews_file", "meta_file", "kcore", "split_method", "valid_fraction", "test_fraction",
             "keep_cold_samples", "skip_bad_records", "cache_dir")
    kwargs = {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}
    if getattr(args, "columns", None):
        parts = [[side.strip() for side in part.split("=", 1)] for part in args.columns.split(",") if part.strip()]
        if any(len(part) != 2 or not all(part) for part in parts):
            raise CommandError(f"--columns {args.columns!r}: expected user=COL,item=COL,rating=COL,timestamp=COL")
        repeated = sorted({key for key, _ in parts if [k for k, _ in parts].count(key) > 1})
        if repeated:
            raise CommandError(f"--columns {args.columns!r}: {', '.join(repeated)} given twice")
        kwargs["columns"] = dict(parts)
    if getattr(args, "scale", None):
        kwargs["scale"] = tuple(args.scale)
    return kwargs


def env_kwargs_option(text: str | None, split_option: str) -> dict[str, Any]:
    """``--env-kwargs``: a JSON object of environment keyword arguments, without ``split`` (which the
    command's ``split_option`` gives)."""
    with given_values("--env-kwargs: "):
        kwargs = json.loads(text) if text else {}
    if not isinstance(kwargs, dict):
        raise CommandError(f"--env-kwargs: expected a JSON object such as '{{\"max_user_history\": 10}}', got {text}")
    if "split" in kwargs:
        raise CommandError(f"--env-kwargs cannot set split: use {split_option}")
    return kwargs


def yaml_mapping_option(text: str | None, flag: str) -> dict[str, Any]:
    """A config-style mapping option (``--env_kwargs '{max_user_history: 4}'``, YAML as the config
    fields' overrides are): a dict, or a :class:`CommandError` naming ``flag``."""
    import yaml

    try:
        value = yaml.safe_load(text) if text else {}
    except yaml.YAMLError as exc:
        raise CommandError(f"{flag} {text!r} is not YAML: {' '.join(str(exc).split())}") from exc
    if not isinstance(value, dict):
        raise CommandError(f"{flag}: expected a mapping such as '{{max_user_history: 4}}', got {text!r}")
    return value


def _manifests(name: str, cache_dir: str | None) -> list[tuple[Path, dict]]:
    from recgym.cache import cache_dir as recgym_cache_dir

    root = Path(cache_dir).expanduser() if cache_dir else recgym_cache_dir(create=False)
    found = sorted((root / "datasets" / name).glob("*/manifest.json"), key=lambda p: p.stat().st_mtime)
    return [(p.parent, json.loads(p.read_text())) for p in found]


def print_manifest(console: Console, directory: Path, manifest: dict) -> None:
    table = Table(title=f"{manifest['dataset']}  ({directory})", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    table.add_row("scale", json.dumps(manifest["scale"]))
    table.add_row("files", "\n".join(f"{f['path']} ({f['size']:,} B)" for f in manifest["files"]))
    table.add_row("reader", json.dumps(manifest["reader"]))
    table.add_row("config", json.dumps(manifest["config"]))
    skipped = manifest["bad_records"]["skipped"]
    table.add_row("bad records skipped", json.dumps(skipped) if skipped else "none")
    repaired = manifest["bad_records"].get("repaired")
    table.add_row("records repaired", json.dumps(repaired) if repaired else "none")
    for key, value in manifest["counts"].items():
        table.add_row(key, f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value))
    table.add_row("timings (s)", json.dumps(manifest["timings_s"]))
    table.add_row("size on disk", f"{manifest['size_bytes'] / 2**20:,.1f} MiB")
    console.print(table)


def run_prepare(args: argparse.Namespace) -> int:
    from recgym.data import loaders

    console = make_console()
    kwargs = dataset_kwargs(args)
    with given_values():
        source = loaders.make_source(args.name, kwargs.pop("data_dir", None), kwargs.get("cache_dir"), path=kwargs.pop("path", None),
                                     columns=kwargs.pop("columns", None), scale=kwargs.pop("scale", (1, 5)),
                                     reviews_file=kwargs.pop("reviews_file", None),
                                     meta_file=kwargs.pop("meta_file", None))
        ds = loaders.prepare(args.name, source, rebuild=args.rebuild, **kwargs)
    directory = Path(ds.stats["cache_dir"])
    print_manifest(console, directory, json.loads((directory / "manifest.json").read_text()))
    return 0


def run_info(args: argparse.Namespace) -> int:
    console = make_console()
    found = _manifests(args.name, args.cache_dir)
    if not found:
        how = ("--path FILE --columns user=COL,item=COL,rating=COL,timestamp=COL" if args.name == "custom"
               else "--data-dir DIR")
        raise CommandError(f"dataset {args.name!r} is not prepared yet: run `recgym data prepare {args.name} {how}`")
    for directory, manifest in found:
        print_manifest(console, directory, manifest)
    return 0


def register(subparsers) -> None:
    from recgym.data.loaders import REAL_DATASETS

    parser = subparsers.add_parser("data", help="prepare real datasets and inspect prepared ones")
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    prepare = sub.add_parser("prepare", help="read raw files, dedupe, filter, split, index, cache")
    prepare.add_argument("name", choices=REAL_DATASETS)
    add_dataset_options(prepare)
    prepare.add_argument("--rebuild", action="store_true", help="prepare again even when cached")
    prepare.set_defaults(func=run_prepare)
    info = sub.add_parser("info", help="print the manifest(s) of a prepared dataset")
    info.add_argument("name", choices=REAL_DATASETS)
    info.add_argument("--cache-dir", help="cache root (default $RECGYM_CACHE)")
    info.set_defaults(func=run_info)
