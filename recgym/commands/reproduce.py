"""``recgym reproduce --config FILE [--estimate-memory] [--field value ...]``: the paper's table in one run.

Every ``ReproduceConfig`` field is also an option (``--eval_size 5 --grpo_steps 1`` for a smoke run;
give it another ``--output_dir``: results made under other settings are refused, never mixed).
``--estimate-memory`` prints the GPU memory estimate of the GRPO arms (the peak) and exits, as
``recgym train grpo --estimate-memory`` does.
"""

from __future__ import annotations

import argparse

from recgym.commands import given_values


def register(subparsers) -> None:
    from recgym.commands.train import add_config_options
    from recgym.reproduce import ReproduceConfig

    parser = subparsers.add_parser(
        "reproduce", help="the paper's table: baselines, zero-shot, SFT, RecZero, RecOne on each dataset",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--config", help="YAML file of ReproduceConfig fields (examples/configs/reproduce_*.yaml)")
    parser.add_argument("--estimate-memory", action="store_true",
                        help="print the GPU memory estimate of the GRPO arms against gpu_memory_gib and exit "
                             "(0: fits, 2: does not); loads no weights and no data")
    add_config_options(parser, ReproduceConfig)
    parser.set_defaults(func=run)


def run(args) -> int:
    from recgym.commands.train import check_config, check_schedule, config_from_args, estimate
    from recgym.reproduce import ReproduceConfig, Reproduction

    config = config_from_args(args, ReproduceConfig)
    if args.estimate_memory:
        return estimate(config.grpo_config(config.dataset_specs()[0]))
    reproduction = Reproduction(config)
    with given_values():
        reproduction.prepare()
        grpo_configs = [config.grpo_config(spec) for spec in config.dataset_specs()]
    check_schedule(config.sft_lr_scheduler_type, "sft_lr_scheduler_type")
    for grpo in grpo_configs:  # what the GRPO arms would refuse after the baselines and SFT; the model
        check_config(grpo, model_hint="")
    reproduction.run()
    return 0
