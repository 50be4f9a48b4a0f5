"""``recgym train grpo --config FILE [--resume] [--estimate-memory] [--field value ...]``: GRPO-family training.

``--estimate-memory`` prints the config's GPU memory estimate (:mod:`recgym.agents.memory`) and
exits: 0 when it fits the declared ``gpu_memory_gib``, 2 (with what to change) when it does not.
It reads only the model's ``config.json`` shape: no weights, no GPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing


def add_config_options(parser: argparse.ArgumentParser, config_cls: type) -> None:
    """One ``--field`` option per config field (values are parsed as YAML, typed by the field)."""
    group = parser.add_argument_group("config overrides (any field; YAML values)")
    hints = typing.get_type_hints(config_cls)
    for f in dataclasses.fields(config_cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        kind = getattr(hints[f.name], "__name__", str(hints[f.name]))
        group.add_argument(f"--{f.name}", dest=f"cfg__{f.name}", default=None, metavar="V",
                           help=f"{kind}, default {default!r}")


def config_from_args(args: argparse.Namespace, config_cls: type):
    """``--config FILE`` (or the defaults) with the given ``--field`` overrides applied."""
    overrides = []
    for key, value in vars(args).items():
        if key.startswith("cfg__") and value is not None:
            overrides += [f"--{key[5:]}", value]
    if args.config:
        return config_cls.from_yaml(args.config, overrides)
    return config_cls().with_overrides(overrides)


def register(subparsers) -> None:
    from recgym.agents.config import GRPOConfig

    parser = subparsers.add_parser("train", help="train an LLM policy with RL (grpo, dr_grpo, rloo, reinforce, ...)")
    sub = parser.add_subparsers(dest="trainer", metavar="TRAINER", required=True)
    grpo = sub.add_parser("grpo", help="the GRPO-family trainer (the algorithm is a config field)",
                          formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    grpo.add_argument("--config", help="YAML file of config fields (examples/configs/*.yaml)")
    grpo.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in output_dir")
    grpo.add_argument("--estimate-memory", action="store_true",
                      help="print the GPU memory estimate against gpu_memory_gib and exit (0: fits, 2: does not); "
                           "loads no weights")
    add_config_options(grpo, GRPOConfig)
    grpo.set_defaults(func=run)


def estimate(config) -> int:
    """Print the memory table; 0 when it fits, 2 (advice on stderr) when not or when it cannot be made."""
    import sys

    from recgym.agents.memory import estimate_memory
    from recgym.console import make_console

    try:
        result = estimate_memory(config)
    except ValueError as exc:
        print(f"recgym train grpo --estimate-memory: {exc}", file=sys.stderr)
        return 2
    make_console().print(result.table())
    if result.fits:
        print(result.summary())
        return 0
    print(result.summary(), file=sys.stderr)
    print("change one of: " + "; ".join(result.advice()), file=sys.stderr)
    return 2


def run(args) -> int:
    from recgym.agents.config import GRPOConfig

    config = config_from_args(args, GRPOConfig)
    if args.estimate_memory:
        return estimate(config)

    from recgym.agents.run_log import comparison_table
    from recgym.agents.trainer import train
    from recgym.console import make_console

    result = train(config, resume=args.resume)
    if result.evals:  # the main process's; the others of a multi-process run print nothing
        rows = {f"step {result.evals[0]['step']}": result.evals[0]}
        if len(result.evals) > 1:
            rows[f"step {result.evals[-1]['step']}"] = result.evals[-1]
        make_console().print(comparison_table(rows))
        print(f"metrics: {config.output_dir}/metrics.jsonl, plot: {config.output_dir}/curves.png")
    return 0
