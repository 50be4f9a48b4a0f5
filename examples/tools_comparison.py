"""The single-turn and the tool-using scripted agents on the same samples, at the same budget of
tokens read (the README's table).

    python examples/tools_comparison.py [--n 300] [--split test] [--out comparison.json]

The tool agent (:class:`~recgym.agents.teachers.scripted.SimilarItemsToolPolicy`) plays
``RecRatingTools-Synthetic-v0``: one ``similar_items`` call, then the answer. The single-turn
reasoner (:class:`~recgym.agents.teachers.scripted.SyntheticReasonerPolicy`) plays
``RecRating-SyntheticLong-v0`` (the same samples) with as many of the newest reviews pasted in as
fit the tool agent's mean budget of tokens read, then with the default 10, then with the whole
history. Tokens are SmolLM2's, counted on what each agent reads: the task message (and the
history pasted into it) plus every tool result.

    python examples/tools_comparison.py recone [--config FILE] [--FIELD VALUE ...]

RecOne for the tool agent (:class:`RecOneToolsSettings`): the base model, then after a multi-turn
SFT cold start on the scripted tool agent's episodes, then after GRPO
(``examples/configs/recone_tools_synthetic.yaml``), each evaluated greedily on the first ``n``
validation samples, beside the scripted rows above on the same samples, with paired standard errors.
"""


import argparse
import dataclasses
import json
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

import recgym  # noqa: F401  (registers the environments)
from recgym.agents.config import ConfigMixin
from recgym.agents.evaluation import evaluate, read_records
from recgym.agents.teachers.scripted import (
    SimilarItemsToolPolicy,
    SyntheticReasonerPolicy,
    UserAveragePolicy,
)
from recgym.commands import CommandError


def token_counter():
    from recgym.agents.models import load_tokenizer

    tokenizer = load_tokenizer("smollm2-135m-instruct")
    return lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])


def single_turn_tokens(env, n: int, count) -> float:
    """Mean tokens of the user message (task + pasted history) over the first ``n`` samples."""
    return float(np.mean([count(env.reset(options={"index": i})[1]["messages"][1]["content"]) for i in range(n)]))


def row(name: str, result, tokens: float, calls: float) -> dict:
    m = result.metrics
    return {"agent": name, "n": m.n, "mae": m.mae, "rmse": m.rmse, "coverage": m.coverage,
            "format_rate": m.format_rate, "tool_calls": calls, "tokens_read": tokens}


def sample_errors(result) -> np.ndarray:
    """Per sample, in index order: the prediction (its fallback where unparseable) minus the truth."""
    return np.array([r["prediction_or_fallback"] - r["target"] for r in sorted(result.records, key=lambda r: r["index"])])


SPLITS = ("train", "valid", "test")


def check_samples(n: int, split: str) -> None:
    """The first ``n`` samples of ``split`` exist in the tool env (every row is measured on them),
    checked before anything runs."""
    if split not in SPLITS:
        raise CommandError(f"split {split!r}: choose one of {', '.join(SPLITS)}")
    size = len(gym.make("RecRatingTools-Synthetic-v0", split=split).unwrapped)
    if not 1 <= n <= size:
        raise CommandError(f"n {n}: the {split} split has {size} samples, give 1 to {size}")


def main(n: int = 300, split: str = "test", count=None, errors: dict[str, np.ndarray] | None = None) -> list[dict]:
    """The scripted rows; ``errors`` (when given) receives each agent's :func:`sample_errors`."""
    count = count or token_counter()
    errors = {} if errors is None else errors
    rows = []
    tools_env = gym.make("RecRatingTools-Synthetic-v0", split=split, token_counter=count)
    tool = evaluate(tools_env, SimilarItemsToolPolicy(), n=n, batch_size=50)
    budget = tool.episode_stats["tokens_read_mean"]
    rows.append(row("tools: similar_items(limit=3), then rate", tool, budget, tool.episode_stats["tool_calls_mean"]))
    errors[rows[-1]["agent"]] = sample_errors(tool)

    def single(history: int):
        return gym.make("RecRating-SyntheticLong-v0", split=split, max_user_history=history, max_item_history=0)

    # the most pasted reviews whose prompt fits the tool agent's budget
    fits = max(h for h in range(49) if h == 0 or single_turn_tokens(single(h), min(n, 50), count) <= budget)
    for history, label in ((fits, "same budget"), (10, "default cut"), (48, "whole history")):
        env = single(history)
        tokens = single_turn_tokens(env, n, count)
        for policy in (SyntheticReasonerPolicy(), UserAveragePolicy()):
            result = evaluate(env, policy, n=n, baselines=False)
            rows.append(row(f"single turn, newest {history} reviews ({label}): {policy.name}", result, tokens, 0.0))
            errors[rows[-1]["agent"]] = sample_errors(result)
    for name, scores in tool.baselines.items():
        rows.append({"agent": f"baseline: {name}", "n": scores["n"], "mae": scores["mae"], "rmse": scores["rmse"],
                     "coverage": 1.0, "format_rate": None, "tool_calls": None, "tokens_read": None})
    return rows


def markdown(rows: list[dict]) -> str:
    def f(value, spec):
        return "–" if value is None else format(value, spec)

    lines = ["| agent | n | MAE | RMSE | coverage | format rate | tool calls | tokens read |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['agent']} | {r['n']} | {r['mae']:.3f} | {r['rmse']:.3f} | {r['coverage']:.0%} | "
                     f"{f(r['format_rate'], '.0%')} | {f(r['tool_calls'], '.2f')} | {f(r['tokens_read'], '.0f')} |")
    return "\n".join(lines)


@dataclass
class RecOneToolsSettings(ConfigMixin):
    """RecOne on the tool env, measured (``python examples/tools_comparison.py recone``)."""

    grpo_config: str = "examples/configs/recone_tools_synthetic.yaml"
    """The GRPO stage: its ``env_id`` is the tool env, its ``model`` where the SFT checkpoint goes."""
    base_model: str = "smollm2-135m-instruct"
    policy: str = "vllm"
    """One engine (built with the GRPO config's ``policy_kwargs``) samples every stage and evaluation
    (``hf`` for tests)."""
    n: int = 200
    """The first ``n`` samples of ``split`` that every row is evaluated on."""
    split: str = "valid"
    cold_start_samples: int = 64
    """Training samples the scripted tool agent plays (those within ``tolerance`` are kept)."""
    tolerance: float = 0.5
    sft_epochs: float = 3.0
    sft_learning_rate: float = 5e-5
    sft_max_length: int = 1024
    """Tokens per SFT episode (SmolLM2's tool episodes are about 750)."""
    grpo_overrides: dict[str, Any] = field(default_factory=dict)
    """GRPOConfig fields replacing the file's (a smoke run: ``{max_steps: 1, group_size: 2}``)."""
    eval_batch_size: int = 50
    single_turn_run: str = ""
    """A ``python -m recgym.demo`` run on ``RecRating-SyntheticLong-v0`` evaluated on the first ``n``
    samples of ``split`` (``--eval_size n``): its trained rows (``predictions.jsonl``) join the table,
    paired with the trained tool agent on the same samples."""
    output: str = "runs/recone_tools/summary.json"
    """Also where the stages' evaluations go (``eval_{base,sft,grpo}.jsonl``): a rerun reuses every
    finished one, and skips the training when the trained model's evaluation is complete."""


def trained_steps(run: Path) -> int:
    """The last training step a GRPO run's ``metrics.jsonl`` records."""
    return max((r["step"] for r in read_records(run / "metrics.jsonl") if "reward" in r), default=0)


def single_turn_rows(run: Path, n: int, split: str, count, errors: dict[str, np.ndarray],
                     targets: np.ndarray) -> list[dict]:
    """The ``sft`` and ``grpo`` rows of a demo run on the single-turn env (``python -m recgym.demo
    --env_id RecRating-SyntheticLong-v0 --eval_size n``), on the same samples as ``targets``;
    ``errors`` receives their per-sample errors."""
    from recgym.agents.config import GRPOConfig
    from recgym.demo import read_predictions

    config = GRPOConfig.from_yaml(run / "grpo" / "config.yaml")
    env = gym.make(config.env_id, split=split, **config.env_kwargs)
    summary = {r["name"]: r for r in json.loads((run / "summary.json").read_text())["rows"]}
    history = config.env_kwargs.get("max_user_history", "default")
    tokens = single_turn_tokens(env, n, count)
    rows = []
    for stage, label in (("sft", "after SFT"), ("grpo", f"after SFT + {trained_steps(run / 'grpo')} GRPO steps")):
        records = read_predictions(run / "predictions.jsonl", stage)
        if config.eval_split != split or [r["index"] for r in records] != list(range(n)):
            raise CommandError(f"{run} evaluated {len(records)} {config.eval_split} samples; the table needs the first "
                             f"{n} of {split}: run the demo with --eval_split {split} --eval_size {n}")
        truth = np.array([r["target"] for r in records])
        if not np.allclose(truth, targets):
            raise CommandError(f"{run}'s samples are not the tool env's ({config.env_id} vs the tool env's world)")
        err = np.array([r["prediction"] for r in records]) - truth
        name = f"single turn, newest {history} reviews, trained: {label} ({run})"
        errors[name] = err
        rows.append({"agent": name, "n": n, "mae": float(np.abs(err).mean()), "rmse": float(np.sqrt((err**2).mean())),
                     "coverage": summary[stage]["coverage"], "format_rate": summary[stage]["format_rate"],
                     "tool_calls": 0.0, "tokens_read": tokens})
    return rows


SFT_STAGE_FIELDS = ("env_id", "env_kwargs", "model", "dtype", "seed", "eval_max_new_tokens", "policy_kwargs")
"""The GRPO config's fields that also decide the base and SFT rows."""


def check_same_run(path: Path, s: RecOneToolsSettings, config) -> bool:
    """Record in ``path`` the settings that decide the measured rows. Refuse a folder whose base and
    SFT rows were measured under other settings; return True when only the GRPO stage's changed
    (its row is measured again from the saved SFT checkpoint)."""
    settings = {k: v for k, v in s.to_dict().items()
                if k not in ("single_turn_run", "eval_batch_size", "output", "grpo_config", "grpo_overrides")}
    grpo = config.to_dict()
    current = json.loads(json.dumps({"sft": {**settings, **{k: grpo[k] for k in SFT_STAGE_FIELDS}}, "grpo": grpo},
                                    default=str))
    saved = json.loads(path.read_text()) if path.is_file() else current
    if saved.get("sft") != current["sft"]:
        raise CommandError(f"{path.parent} holds evaluations measured under other settings (see {path}): "
                           "give another --output, or delete that folder to measure again")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(current, indent=1))
    return saved["grpo"] != current["grpo"]


def recone_tools(s: RecOneToolsSettings, count=None) -> dict[str, Any]:
    """Base, SFT and GRPO rows on the tool env beside the scripted rows, with paired SEs; also
    written to ``s.output``."""
    from recgym.agents.config import GRPOConfig
    from recgym.agents.policies import make_policy
    from recgym.agents.sft import SFTTrainConfig, train_sft
    from recgym.agents.teachers.cold_start import ColdStartConfig, run_cold_start
    from recgym.agents.trainer import GRPOTrainer
    from recgym.agents.types import SamplingParams
    from recgym.console import make_console
    from recgym.metrics import paired_change_text, paired_difference

    console = make_console()
    count = count or token_counter()
    config = dataclasses.replace(GRPOConfig.from_yaml(s.grpo_config), policy=s.policy, **s.grpo_overrides)
    out = Path(s.output).parent
    env = gym.make(config.env_id, split=s.split, token_counter=count, **config.env_kwargs)
    greedy = SamplingParams(temperature=0.0, max_new_tokens=config.eval_max_new_tokens)
    errors: dict[str, np.ndarray] = {}
    truth = np.zeros(0)  # the samples' ratings, in index order (the same for every stage)
    rows: list[dict] = []

    def measure(name: str, stage: str, policy) -> None:
        nonlocal truth
        result = evaluate(env, policy, n=s.n, sampling=greedy, batch_size=s.eval_batch_size, baselines=False,
                          out=out / f"eval_{stage}.jsonl", resume=policy is None or stage == "base")
        stats = result.episode_stats
        rows.append(row(name, result, stats["tokens_read_mean"], stats["tool_calls_mean"]))
        errors[name] = sample_errors(result)
        truth = np.array([r["target"] for r in sorted(result.records, key=lambda r: r["index"])])
        console.print(f"{name}: MAE {result.metrics.mae:.3f}, format rate {result.metrics.format_rate:.0%}, "
                      f"{stats['tool_calls_mean']:.2f} calls, {stats['tokens_read_mean']:.0f} tokens read")

    def finished(stage: str) -> bool:
        path = out / f"eval_{stage}.jsonl"
        return path.is_file() and len({r["index"] for r in read_records(path) if r.get("index", s.n) < s.n}) == s.n

    def load(path: str, policy):
        """The engine takes the checkpoint's weights (HF: a new policy on it)."""
        if hasattr(policy, "update_weights"):
            from transformers import AutoModelForCausalLM

            policy.update_weights(AutoModelForCausalLM.from_pretrained(path))
            return policy
        return make_policy(s.policy, path, **config.policy_kwargs)

    grpo_changed = check_same_run(out / "run_settings.json", s, config)
    sft_done = finished("sft") and (Path(config.model) / "config.json").is_file()
    grpo_done = sft_done and finished("grpo") and not grpo_changed
    engine = not (finished("base") and grpo_done)
    policy = make_policy(s.policy, s.base_model, **config.policy_kwargs) if engine else None
    console.rule("[bold]1/3 base model on the tool env")
    measure("SmolLM2 base, tools", "base", policy)
    earlier = Path(s.output)
    cold_start = json.loads(earlier.read_text()).get("cold_start") if earlier.is_file() else None
    if sft_done:
        console.print(f"the SFT evaluation in {out} is complete: reusing it and the checkpoint {config.model}")
        measure("after multi-turn SFT, tools", "sft", None)
        if not grpo_done:
            policy = load(config.model, policy)
    else:
        console.rule("[bold]2/3 cold start: scripted tool-agent episodes, then multi-turn SFT")
        report = run_cold_start(ColdStartConfig(
            env_id=config.env_id, env_kwargs=config.env_kwargs, num_samples=s.cold_start_samples,
            teacher_policy="scripted", teacher="similar_items", samples_per_prompt=1, tolerance=s.tolerance,
            output=str(out / "cold_start.jsonl"), seed=config.seed))
        cold_start = report.summary()
        console.print(f"cold start: {cold_start}")
        sft_dir = train_sft(SFTTrainConfig(
            data=report.path, model=s.base_model, output_dir=config.model, num_train_epochs=s.sft_epochs,
            learning_rate=s.sft_learning_rate, max_length=s.sft_max_length, lr_scheduler_type="constant",
            dtype=config.dtype, seed=config.seed))
        policy = load(str(sft_dir), policy)
        measure("after multi-turn SFT, tools", "sft", policy)
    if grpo_done:
        steps = trained_steps(Path(config.output_dir))
        console.print(f"the GRPO evaluation in {out} is complete: reusing it ({steps} GRPO steps)")
        measure(f"after SFT + {steps} GRPO steps, tools", "grpo", None)
    else:
        if grpo_changed:
            console.print("the GRPO stage's settings changed: training it again from the saved SFT checkpoint")
        shutil.rmtree(Path(config.output_dir) / "checkpoints", ignore_errors=True)  # an earlier, unfinished stage's
        console.rule(f"[bold]3/3 GRPO: {config.max_steps} steps from the SFT checkpoint")
        trainer = GRPOTrainer(config, policy=policy if hasattr(policy, "update_weights") else None)
        result = trainer.train()
        measure(f"after SFT + {result.steps} GRPO steps, tools", "grpo", trainer.policy)

    rows += main(s.n, s.split, count, errors)
    if s.single_turn_run:
        rows += single_turn_rows(Path(s.single_turn_run), s.n, s.split, count, errors, truth)
    names = [r["agent"] for r in rows]
    trained, scripted_tool = names[2], names[3]
    pairs = [(names[0], names[1]), (names[1], trained), (scripted_tool, trained),
             *[(name, trained) for name in names[4:] if name in errors]]
    comparisons = []
    for a, b in pairs:
        gain, se = paired_difference(errors[a], errors[b])
        comparisons.append({"a": a, "b": b, "gain": gain, "se": se})
    summary = {"settings": s.to_dict(), "grpo_config": config.to_dict(), "cold_start": cold_start,
               "rows": rows, "paired": comparisons}
    Path(s.output).write_text(json.dumps(summary, indent=1, default=str))
    console.print(markdown(rows))
    for c in comparisons:
        console.print(f"{c['a']} -> {c['b']}: {paired_change_text(c['gain'], c['se'])}")
    return summary


def check_settings(s: RecOneToolsSettings) -> None:
    """What a later stage would refuse (the policy, the samples, the base model), before anything runs."""
    from recgym.agents.policies import POLICIES
    from recgym.commands.train import check_model

    if s.policy not in POLICIES:
        raise CommandError(f"policy {s.policy!r}: choose one of {', '.join(POLICIES)}")
    check_samples(s.n, s.split)
    check_model(s.base_model)


def recone_main(argv: list[str]) -> int:
    from recgym.commands.train import add_config_options, config_from_args

    parser = argparse.ArgumentParser(prog="tools_comparison.py recone", description=RecOneToolsSettings.__doc__)
    parser.add_argument("--config", help="YAML file of RecOneToolsSettings fields")
    add_config_options(parser, RecOneToolsSettings)
    try:  # a bad setting fails in one line, before anything runs
        settings = config_from_args(parser.parse_args(argv), RecOneToolsSettings)
        check_settings(settings)
    except CommandError as exc:
        parser.error(str(exc))
    try:
        recone_tools(settings)
    except (CommandError, FileNotFoundError) as exc:  # settings that do not fit the saved runs
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def scripted_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--split", default="test", choices=SPLITS)
    parser.add_argument("--out", default=None, help="also write the rows as JSON")
    args = parser.parse_args(argv)
    try:
        check_samples(args.n, args.split)
    except CommandError as exc:
        parser.error(str(exc))
    table = main(args.n, args.split)
    print(markdown(table))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(table, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(recone_main(sys.argv[2:]) if sys.argv[1:2] == ["recone"] else scripted_main(sys.argv[1:]))
