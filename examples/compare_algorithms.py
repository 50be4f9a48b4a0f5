"""Every registered algorithm from one starting checkpoint, with one budget and seed.

    python examples/compare_algorithms.py                       # the demo's cold-start SFT checkpoint, all algorithms
    python examples/compare_algorithms.py --start runs/demo/sft --algorithms grpo dapo --grpo_steps 4

The settings are the demo's (``recgym.demo.DemoSettings``: environment, G, prompts per step,
learning rate, temperature, completion length, validation samples); every algorithm runs
``grpo_steps`` steps through one vLLM engine, from the same checkpoint with the same seed, so the
same prompts are drawn in the same order. The starting checkpoint is evaluated once, on the same
first ``eval_size`` validation samples as every algorithm's final evaluation.

Per algorithm: the share of groups whose rewards were all equal (no gradient for GRPO-type
estimators; DAPO replaces them), the mean training reward, the final validation MAE and format
rate, and the paired change of MAE from the start, ``mean(|err_start| - |err_final|)`` with its
standard error. ``<output_dir>/algorithms.json`` holds the table; each run folder its curves.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from recgym.commands import CommandError
from recgym.demo import (
    DemoSettings,
    add_settings_arguments,
    check_settings,
    cold_start_sft,
    grpo_stage,
    parse_settings,
    sample_errors,
    shared_policy,
)


def compare(settings: DemoSettings, algorithms: list[str], start: str | None) -> dict[str, dict]:
    from rich.table import Table

    from recgym.console import make_console
    from recgym.metrics import paired_difference

    out = Path(settings.output_dir)
    policy = shared_policy(settings)
    start = start or str(cold_start_sft(settings, out, settings.env_kwargs))
    rows: dict[str, dict] = {}
    start_errors = start_record = None
    for algorithm in algorithms:
        t0 = time.perf_counter()
        result = grpo_stage(settings, out / algorithm, start, settings.env_kwargs, policy, settings.grpo_steps,
                            algorithm=algorithm, eval_on_start=start_errors is None)
        if start_errors is None:
            start_errors, start_record = sample_errors(result, 0), result.evals[0]
        steps = [r for r in result.records if "reward" in r]
        final = result.evals[-1]
        gain, se = paired_difference(start_errors, sample_errors(result, result.steps))
        rows[algorithm] = {
            "zero_variance_groups": sum(r["zero_std_group_frac"] for r in steps) / len(steps),
            "groups_dropped": sum(r["groups_dropped"] for r in steps),
            "reward": sum(r["reward"] for r in steps) / len(steps),
            "mae": final["eval/mae"], "format_rate": final["eval/format_rate"], "n": final["eval/n"],
            "mae_gain": gain, "mae_gain_se": se, "seconds": time.perf_counter() - t0,
        }
    summary = {"start": {"checkpoint": start, "mae": start_record["eval/mae"],
                         "format_rate": start_record["eval/format_rate"]},
               "steps": settings.grpo_steps, "algorithms": rows}
    (out / "algorithms.json").write_text(json.dumps(summary, indent=1))

    table = Table(title=f"{settings.env_id}: {settings.grpo_steps} steps of {settings.prompts_per_step} prompts x "
                        f"G={settings.group_size} from {start}; first {settings.eval_size} validation samples, greedy")
    for column in ("algorithm", "zero-variance groups", "mean reward", "format rate", "MAE", "MAE lower by (± SE)", "s"):
        table.add_column(column, justify="left" if column == "algorithm" else "right")
    table.add_row("(start)", "-", "-", f"{start_record['eval/format_rate']:.0%}", f"{start_record['eval/mae']:.3f}", "-", "-")
    for name, r in rows.items():
        table.add_row(name, f"{r['zero_variance_groups']:.0%}", f"{r['reward']:.3f}", f"{r['format_rate']:.0%}",
                      f"{r['mae']:.3f}", f"{r['mae_gain']:+.3f} ± {r['mae_gain_se']:.3f}", f"{r['seconds']:.0f}")
    make_console().print(table)
    return summary


def main(argv: list[str] | None = None) -> int:
    from recgym.agents.algorithms import list_algorithms

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algorithms", nargs="+", choices=sorted(list_algorithms()), default=sorted(list_algorithms()))
    parser.add_argument("--start", default=None, help="checkpoint to start from (default: build the demo's SFT one)")
    add_settings_arguments(parser, output_dir="runs/algorithms")
    settings, args = parse_settings(parser, argv)
    try:  # before the engine starts: a bad setting fails in one line, not minutes in
        check_settings(settings)
    except CommandError as exc:
        parser.error(str(exc))
    if args["start"] is not None and not (Path(args["start"]) / "config.json").is_file():
        parser.error(f"--start {args['start']}: no checkpoint there (a folder with config.json)")
    compare(settings, args["algorithms"], args["start"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
