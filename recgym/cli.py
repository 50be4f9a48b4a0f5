"""The ``recgym`` command. Each sub-command lives in ``recgym/commands/<name>.py`` and exposes
``register(subparsers)``, which adds its parser and sets ``func`` to the handler.

An expected failure (see :func:`expected_errors`) ends as one line on stderr and exit status 2;
``--debug`` or ``RECGYM_DEBUG=1`` shows its traceback instead. Anything else is a bug and keeps
its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings

from recgym.commands import CommandError

COMMANDS = ("envs", "data", "baseline", "eval", "compare", "train", "sft", "algorithms", "export", "reproduce")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="recgym", description="LLM rating-prediction reasoning as RL environments."
    )
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of an expected failure too (or set RECGYM_DEBUG=1)")
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


def expected_errors() -> tuple[type[BaseException], ...]:
    """The exception types that report a user's input or setup, not a bug in recgym."""
    import gymnasium as gym

    from recgym.agents.algorithms.hook_checks import PluginError
    from recgym.agents.models import ModelNotFoundError
    from recgym.agents.policies.base import PromptTooLongError
    from recgym.agents.policies.openai import EndpointError
    from recgym.data.readers import BadRecordError, MissingDataError

    return (CommandError, MissingDataError, BadRecordError, ModelNotFoundError, EndpointError,
            PromptTooLongError, gym.error.Error, FileNotFoundError, PermissionError, IsADirectoryError,
            NotADirectoryError, FileExistsError, PluginError)


def one_line(exc: BaseException) -> str:
    """The exception's message on one line."""
    return " ".join(part.strip() for part in str(exc).splitlines() if part.strip()) or type(exc).__name__


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"recgym: warning: {one_line(message)}", file=sys.stderr if file is None else file)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = args.debug or os.environ.get("RECGYM_DEBUG", "").lower() not in ("", "0", "false")
    try:
        with warnings.catch_warnings():
            if not debug:
                warnings.showwarning = _show_warning
            return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if debug or not isinstance(exc, expected_errors()):
            raise
        print(f"recgym {args.command}: error: {one_line(exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
