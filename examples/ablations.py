"""The paper's ablations in one command, on any RecRating environment, same budget and seed per arm.

    python examples/ablations.py                                   # every arm, synthetic world, CPU budget
    python examples/ablations.py --arms recone reczero --grpo_steps 4 --eval_size 40
    python examples/ablations.py --env_id RecRating-Yelp-v0 --teacher user_average --env_kwargs '{data_dir: ~/yelp}'

Arms (the paper's findings in brackets):

- ``recone``: cold-start SFT on teacher traces, then GRPO [best];
- ``reczero``: GRPO from the base model [second];
- ``sft-only``: the cold-start SFT alone [third];
- ``no-reasoning-template``: RecOne with the ``rate_only`` template (no reasoning steps) [worse];
- ``format-reward-only``: RecOne with the accuracy term's weight 0 [good format, bad accuracy];
- ``accuracy-reward-only``: RecOne with the format term 0 [breaks the format].

Arms with the same template share one SFT checkpoint (the rewards do not change which teacher traces
are kept: format and a rating within 0.5 of the truth). Each arm writes ``<output_dir>/<arm>/``; one table prints every arm beside the classical baselines
on the same validation samples, and ``<output_dir>/ablations.json`` holds it. Where ``recone`` ran,
each other arm's record also holds the paired change ``mean(|err_arm| - |err_recone|)`` over the
same samples (positive: RecOne is better) and its standard error, printed below the table.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
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

ARMS = ("recone", "reczero", "sft-only", "no-reasoning-template", "format-reward-only", "accuracy-reward-only")


def arm_env_kwargs(arm: str, env_kwargs: dict) -> dict:
    from recgym.rewards import RatingReward

    if arm == "no-reasoning-template":
        return {**env_kwargs, "template": "rate_only"}
    if arm == "format-reward-only":
        return {**env_kwargs, "reward": RatingReward(accuracy_weight=0.0)}
    if arm == "accuracy-reward-only":
        return {**env_kwargs, "reward": RatingReward(format_reward=0.0, format_penalty=0.0)}
    return dict(env_kwargs)


def run_ablations(settings: DemoSettings, arms: list[str]) -> dict[str, dict]:
    """Run ``arms``; returns ``{arm: final evaluation record}`` (also written to ``ablations.json``)."""
    from recgym.agents.run_log import comparison_table
    from recgym.console import make_console
    from recgym.metrics import paired_change_text, paired_difference

    out = Path(settings.output_dir)
    policy = shared_policy(settings)
    rows: dict[str, dict] = {}
    errors: dict[str, list[float]] = {}
    sft: dict[str, str] = {}  # template -> checkpoint: the rewards do not change the SFT (same traces kept)
    for arm in arms:
        kwargs = arm_env_kwargs(arm, settings.env_kwargs)
        arm_dir = out / arm
        model = settings.model
        template = str(kwargs.get("template", "think"))
        if arm != "reczero":
            if template not in sft:
                sft[template] = str(cold_start_sft(dataclasses.replace(settings, output_dir=str(arm_dir)), arm_dir, kwargs))
            model = sft[template]
        steps = 0 if arm == "sft-only" else settings.grpo_steps
        result = grpo_stage(settings, arm_dir / "grpo", model, kwargs, policy, steps, eval_on_start=steps == 0)
        rows[arm], errors[arm] = result.evals[-1], sample_errors(result, result.steps)
    lines = []
    for arm in [a for a in rows if "recone" in rows and a != "recone"]:
        gain, se = paired_difference(errors[arm], errors["recone"])
        rows[arm].update({"eval/paired_mae_vs_recone": gain, "eval/paired_se_vs_recone": se})
        lines.append(f"recone vs {arm}: {paired_change_text(gain, se)}")
    (out / "ablations.json").write_text(json.dumps(rows, indent=1))
    console = make_console()
    console.print(comparison_table(rows, title=f"ablations: {settings.env_id}, first {settings.eval_size} "
                                               f"validation samples, {settings.grpo_steps} GRPO steps"))
    console.print("\n".join(lines))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS))
    add_settings_arguments(parser, output_dir="runs/ablations")
    settings, args = parse_settings(parser, argv)
    try:  # before the engine starts: a bad setting fails in one line, not minutes in
        check_settings(settings)
    except CommandError as exc:
        parser.error(str(exc))
    run_ablations(settings, args["arms"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
