"""``recgym sft make-data ...`` (teacher traces) and ``recgym sft train ...`` (completion-only SFT)."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    from recgym.agents.sft import ColdStartConfig, SFTTrainConfig
    from recgym.commands.train import add_config_options

    parser = subparsers.add_parser("sft", help="RecOne cold start: make reasoning traces, then fine-tune")
    sub = parser.add_subparsers(dest="sft_command", metavar="STEP", required=True)
    for name, cls, fn, help_text in (
        ("make-data", ColdStartConfig, run_make_data, "teacher traces: kept / rationalized / dropped -> JSONL"),
        ("train", SFTTrainConfig, run_train, "TRL SFTTrainer on the traces, loss on completions only"),
    ):
        p = sub.add_parser(name, help=help_text, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        p.add_argument("--config", help="YAML file of config fields")
        add_config_options(p, cls)
        p.set_defaults(func=fn)


def run_make_data(args) -> int:
    from recgym.agents.sft import ColdStartConfig, run_cold_start
    from recgym.commands.train import config_from_args

    report = run_cold_start(config_from_args(args, ColdStartConfig))
    print(report.summary())
    return 0 if report.kept + report.rationalized else 1


def run_train(args) -> int:
    from recgym.agents.sft import SFTTrainConfig, train_sft
    from recgym.commands.train import config_from_args

    out = train_sft(config_from_args(args, SFTTrainConfig))
    print(f"SFT checkpoint: {out}  (start GRPO from it with --model {out})")
    return 0
