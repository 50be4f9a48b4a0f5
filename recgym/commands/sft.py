"""``recgym sft make-data ...`` (teacher traces) and ``recgym sft train ...`` (completion-only SFT)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from recgym.commands import CommandError, check_output_path, given_values


def register(subparsers) -> None:
    from recgym.agents.sft import SFTTrainConfig
    from recgym.agents.teachers.cold_start import ColdStartConfig
    from recgym.commands.train import add_config_options

    parser = subparsers.add_parser("sft", help="RecOne cold start: make reasoning traces, then fine-tune")
    sub = parser.add_subparsers(dest="sft_command", metavar="STEP", required=True)
    for name, cls, fn, help_text in (
        ("make-data", ColdStartConfig, run_make_data, "teacher traces: kept / rationalized / dropped -> JSONL"),
        ("train", SFTTrainConfig, run_train, "TRL SFTTrainer on the traces, loss on completions only"),
    ):
        p = sub.add_parser(name, help=help_text, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        p.add_argument("--config", help="YAML file of config fields")
        if name == "train":
            p.add_argument("--resume", action="store_true",
                           help="continue the interrupted run in output_dir from its newest checkpoint-N (save_steps)")
            p.add_argument("--overwrite", action="store_true",
                           help="replace the finished or interrupted SFT run in output_dir (removed when this one starts)")
        else:
            p.add_argument("--resume", action="store_true",
                           help="continue the run that wrote output (same settings): keep its traces, ask only the "
                                "samples it did not finish")
            p.add_argument("--overwrite", action="store_true",
                           help="replace the traces in output (emptied when this run starts)")
        add_config_options(p, cls)
        p.set_defaults(func=fn)


def run_make_data(args) -> int:
    from recgym.agents.policies import POLICIES
    from recgym.agents.teachers.cold_start import (
        ColdStartConfig,
        check_cold_start_output,
        count_traces,
        progress_path,
        run_cold_start,
        scripted_teacher,
    )
    from recgym.commands.train import check_env, check_env_id, config_from_args

    config = config_from_args(args, ColdStartConfig)
    check_env_id(config.env_id)
    if config.teacher_policy not in (*POLICIES, "scripted"):
        raise CommandError(f"unknown policy {config.teacher_policy!r} for teacher_policy; choose one of "
                           f"{', '.join(POLICIES)}, scripted")
    if config.teacher_policy == "scripted":
        with given_values():
            scripted_teacher(config.teacher)
    check_output_path(config.output, "output")
    with given_values():
        check_cold_start_output(config, args.resume, args.overwrite)
    check_env(config.env_id, config.env_kwargs, config.split)  # before the teacher loads
    try:
        report = run_cold_start(config, resume=args.resume)
    except BaseException as exc:
        interrupted = isinstance(exc, KeyboardInterrupt)
        if interrupted or count_traces(config.output):
            print(f"make-data {'interrupted' if interrupted else 'stopped by an error'}: {config.output} holds "
                  f"{count_traces(config.output)} traces; continue it with the same settings plus --resume",
                  file=sys.stderr, flush=True)
        raise
    if not report.kept + report.rationalized:
        Path(config.output).unlink(missing_ok=True)
        progress_path(config.output).unlink(missing_ok=True)
        raise CommandError(f"no trace kept of {report.total} samples ({report.dropped} dropped), nothing written to "
                           f"{config.output}: raise --tolerance (now {config.tolerance:g}) or --num_samples, or use "
                           "another teacher")
    print(report.summary())
    return 0


def run_train(args) -> int:
    from recgym.agents.sft import SFTTrainConfig, check_report_to, check_sft_output_dir, train_sft
    from recgym.agents.sft_data import SFTDataError, check_splits, read_sft_rows
    from recgym.commands.train import check_layers_fit, check_schedule, config_from_args

    config = config_from_args(args, SFTTrainConfig)
    if args.resume and args.overwrite:
        raise CommandError("--resume continues the run in output_dir and --overwrite replaces it: give one of them")
    check_output_path(config.output_dir, "output_dir", folder=True)
    with given_values():
        check_sft_output_dir(config, args.resume, args.overwrite)
        check_report_to(config.report_to)
    check_schedule(config.lr_scheduler_type)
    if not Path(config.data).is_file():
        raise CommandError(f"SFT data {config.data} does not exist: make it with `recgym sft make-data` "
                           "(or `python examples/train_recone.py`)")
    with given_values():  # a file without training rows, a malformed row, rows of the evaluation splits
        check_splits(config.data, read_sft_rows(config.data), config.allow_eval_splits)
    check_layers_fit(config.model, config.trainable_layers)
    try:
        out = train_sft(config, resume=args.resume, overwrite=args.overwrite)
    except SFTDataError as exc:  # every row too long: measured with the tokenizer before the model loads
        raise CommandError(str(exc)) from exc
    print(f"SFT checkpoint: {out}  (start GRPO from it with --model {out}; score it with `recgym eval ENV_ID "
          f"--model {out}`)")
    return 0
