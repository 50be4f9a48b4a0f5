"""Every registered algorithm from one starting checkpoint, with one budget and seed.

    python examples/compare_algorithms.py                       # the demo's cold-start SFT checkpoint, all algorithms
    python examples/compare_algorithms.py --start runs/demo/sft --algorithms grpo dapo --grpo_steps 4
    python examples/compare_algorithms.py --algorithms grpo ppo examples/custom_algorithm.py:MedianGRPO \\
        --algorithm_kwargs 'ppo={critic_learning_rate: 1e-4}' --algorithm_kwargs 'MedianGRPO={truncation_penalty: 0.2}'

The settings are the demo's (``recgym.demo.DemoSettings``: environment, G, prompts per step,
learning rate, temperature, completion length, validation samples); every algorithm runs
``grpo_steps`` steps through one vLLM engine, from the same checkpoint with the same seed, so the
same prompts are drawn in the same order. ``--algorithms`` takes registered names and your own
classes (``path/to/file.py:Class``, whose runs are named by the class); ``--algorithm_kwargs
NAME=MAPPING``, once per algorithm, gives that one its knobs, over the demo's own for its algorithm
(``dapo``: ``{overlong_buffer: 0}``). The starting checkpoint is evaluated once, on the same
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
from typing import Any

from recgym.commands import CommandError
from recgym.demo import (
    DemoSettings,
    add_settings_arguments,
    check_settings,
    cold_start_sft,
    grpo_config,
    grpo_stage,
    parse_settings,
    sample_errors,
    shared_policy,
)


def algorithm_runs(settings: DemoSettings, names: list[str], knobs: list[str]) -> dict[str, dict[str, Any]]:
    """Each algorithm's run (folder) name -> its ``grpo_stage`` overrides (``algorithm``,
    ``algorithm_kwargs``), checked against the algorithm's knobs; a ValueError or TypeError (one line)
    for a name, a ``NAME=MAPPING`` or a knob it refuses."""
    import yaml

    from recgym.agents.algorithms import get_algorithm

    labels = {name: name.rpartition(":")[2] for name in names}  # a plug-in's folder: its class
    if len(set(labels.values())) < len(names):
        raise ValueError(f"--algorithms: two runs would share a name: {' '.join(names)}")
    runs = {label: {"algorithm": name, "algorithm_kwargs": dict(settings.algorithm_kwargs)
                    if name == settings.algorithm else {}} for name, label in labels.items()}
    for item in knobs:
        name, _, text = item.partition("=")
        try:
            mapping = yaml.safe_load(text) if text else None
        except yaml.YAMLError:
            mapping = None
        if not isinstance(mapping, dict):
            raise TypeError(f"--algorithm_kwargs {item}: expected NAME=MAPPING, e.g. 'ppo={{critic_updates: 2}}'")
        label = labels.get(name, name)
        if label not in runs:
            raise ValueError(f"--algorithm_kwargs {name}: {name} is not among --algorithms")
        runs[label]["algorithm_kwargs"].update(mapping)
    out = Path(settings.output_dir)
    for label, run in runs.items():
        try:
            algorithm = get_algorithm(run["algorithm"])
        except KeyError as exc:
            raise ValueError(f"--algorithms: {exc.args[0]}") from None
        try:
            config = grpo_config(settings, out / label, settings.model, settings.env_kwargs, 1, **run)
            algorithm.from_config(config, **config.algorithm_kwargs)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"--algorithm_kwargs {label}: {exc}") from None
    return runs


def compare(settings: DemoSettings, runs: dict[str, dict[str, Any]], start: str | None) -> dict[str, dict]:
    from rich.table import Table

    from recgym.console import make_console
    from recgym.metrics import paired_difference

    out = Path(settings.output_dir)
    policy = shared_policy(settings)
    start = start or str(cold_start_sft(settings, out, settings.env_kwargs))
    rows: dict[str, dict] = {}
    start_errors = start_record = None
    for algorithm, run in runs.items():
        t0 = time.perf_counter()
        result = grpo_stage(settings, out / algorithm, start, settings.env_kwargs, policy, settings.grpo_steps,
                            eval_on_start=start_errors is None, **run)
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
    parser.add_argument("--algorithms", nargs="+", default=sorted(list_algorithms()), metavar="NAME",
                        help="registered names or path/to/file.py:Class (default: every registered one)")
    parser.add_argument("--algorithm_kwargs", dest="knobs", action="append", default=[], metavar="NAME=MAPPING",
                        help="one algorithm's knobs, e.g. 'ppo={critic_updates: 2}' (once per algorithm)")
    parser.add_argument("--start", default=None, help="checkpoint to start from (default: build the demo's SFT one)")
    add_settings_arguments(parser, output_dir="runs/algorithms", without=("resume", "algorithm", "algorithm_kwargs"))
    settings, args = parse_settings(parser, argv)
    try:  # before the engine starts: a bad setting fails in one line, not minutes in
        check_settings(settings)
        runs = algorithm_runs(settings, args["algorithms"], args["knobs"])
    except (CommandError, ValueError, TypeError) as exc:
        parser.error(str(exc))
    if args["start"] is not None and not (Path(args["start"]) / "config.json").is_file():
        parser.error(f"--start {args['start']}: no checkpoint there (a folder with config.json)")
    compare(settings, runs, args["start"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
