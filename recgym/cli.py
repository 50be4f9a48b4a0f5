"""The ``recgym`` command. Each sub-command lives in ``recgym/commands/<name>.py`` and exposes
``register(subparsers)``, which adds its parser and sets ``func`` to the handler."""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = ("envs", "data", "baseline", "eval", "train", "sft", "algorithms")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="recgym", description="LLM rating-prediction reasoning as RL environments."
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"recgym.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"recgym.commands.{name}":
                raise
            continue
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
