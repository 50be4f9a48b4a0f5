"""``recgym reproduce --config FILE``: the paper's main table (rows = methods, columns = datasets) in one run.

For each dataset of the config, every arm is evaluated greedily on the same first ``eval_size``
samples of ``eval_split``:

- ``baselines``: the classical references of :mod:`recgym.baselines` (fit on the training split);
- ``zero_shot``: the base model;
- ``sft``: the base model after the cold-start SFT (traces of a scripted teacher);
- ``reczero``: ``grpo_steps`` GRPO steps from the base model (RecZero);
- ``recone``: ``grpo_steps`` GRPO steps from the SFT checkpoint (RecOne).

The stages are the demo's (:mod:`recgym.demo`: one vLLM engine for every arm and dataset, each
checkpoint's weights pushed into it). Each arm's result is written atomically to
``<output_dir>/<dataset>/<arm>.json`` as soon as it is done; a rerun loads those and runs only
what is missing (an arm killed half way starts again; a base or SFT evaluation resumes per
sample from its ``eval.jsonl``). ``<output_dir>/table.json`` and ``table.md`` hold the table.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from recgym.agents.config import ConfigMixin, changed_fields, plain_values
from recgym.demo import write_json_atomic

ARMS = ("baselines", "zero_shot", "sft", "reczero", "recone")
LABELS = {"zero_shot": "zero-shot", "sft": "SFT only", "reczero": "RecZero (GRPO)", "recone": "RecOne (SFT + GRPO)"}
SHORT = {"zero_shot": "zero-shot", "sft": "SFT", "reczero": "RecZero", "recone": "RecOne"}
#: The paired comparisons the table reports: ``(arm, against)``; a positive gain: ``arm`` has the lower MAE.
PAIRS = (("recone", "sft"), ("reczero", "zero_shot"))
#: Fields that change how a run goes but not what it measures (a rerun may change them).
RUNTIME_FIELDS = ("datasets", "arms", "output_dir", "kv_cache_gib", "gpu_memory_gib", "live_display", "keep_checkpoints")
#: ``GRPOConfig`` fields that reproduce sets for both GRPO arms (so ``grpo_kwargs`` may not) beside the
#: ``ReproduceConfig`` fields of the same name, with the fields that set them (None: none does). The
#: arms train on the training split and are evaluated once, at the end, under the rows' token budget:
#: nothing is chosen on the reported samples.
GRPO_SET = {"env_id": "datasets", "env_kwargs": "datasets", "max_steps": "grpo_steps",
            "policy_kwargs": "max_model_len, kv_cache_gib", "eval_batch_size": None, "train_split": None,
            "eval_interval": None, "eval_on_start": None, "eval_max_new_tokens": "max_new_tokens"}
#: Prompts per policy call of the zero-shot and SFT evaluations, by backend: each call's records reach the
#: JSONL when it ends, so a killed evaluation keeps them (HF's ``generate`` runs batches of 16 anyway;
#: vLLM is faster with more at once).
EVAL_BATCH_SIZE = {"hf": 16, "vllm": 64}


@dataclass(frozen=True)
class DatasetSpec:
    """One column of the table (an entry of ``ReproduceConfig.datasets``)."""

    name: str
    """The column's title, also the folder of its results (``<output_dir>/<name>/``)."""
    env_id: str
    """A registered ``RecRating-*-v0`` id (``recgym envs``)."""
    data_dir: str | None = None
    """The raw files' folder (relative to the working directory); None for the synthetic worlds."""
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    """Other ``gym.make`` keyword arguments (``skip_bad_records``, ``max_user_history``, ...)."""

    def make_kwargs(self) -> dict[str, Any]:
        """``gym.make`` keyword arguments for every split and stage."""
        extra = {"data_dir": str(Path(self.data_dir).expanduser())} if self.data_dir is not None else {}
        return {**self.env_kwargs, **extra}


@dataclass
class ReproduceConfig(ConfigMixin):
    """Everything ``recgym reproduce`` needs. Defaults are the demo's settings (chosen on the
    synthetic world's training-split behaviour, never on reported samples)."""

    datasets: list[dict[str, Any]] = field(default_factory=list)
    """The table's columns: ``{name, env_id, data_dir, env_kwargs}`` each (:class:`DatasetSpec`)."""
    arms: list[str] = field(default_factory=lambda: list(ARMS))
    """The table's rows, any of ``baselines, zero_shot, sft, reczero, recone`` (RecOne trains the SFT
    checkpoint first whether or not ``sft`` is a row)."""
    model: str = "smollm2-135m-instruct"
    """The base model (a recgym model name, Hugging Face id or checkpoint path)."""
    policy: str = "vllm"
    """Generation backend: ``vllm`` (one engine for all arms) or ``hf`` (tests, machines without vLLM)."""
    max_model_len: int = 2048
    """vLLM's context length (prompt plus completion)."""
    kv_cache_gib: float | None = 2.0
    """vLLM's KV cache in GiB (None: vLLM's ``gpu_memory_utilization`` share)."""
    eval_split: str = "valid"
    """The split every arm is reported on, once."""
    eval_size: int = 100
    """Samples every arm is evaluated on (the first ones of ``eval_split``, the same for all)."""
    max_new_tokens: int = 128
    """Generation cap, in training and evaluation."""
    teacher: str = "user_average"
    """Cold-start teacher: ``user_average`` (any data; ``user-average`` too) or ``reasoner`` (reads the synthetic world's text only)."""
    cold_start_samples: int = 96
    """Training samples the teacher writes traces for (those within 0.5 of the truth are kept)."""
    sft_epochs: float = 1.0
    sft_learning_rate: float = 5e-5
    grpo_steps: int = 6
    """GRPO steps of RecZero and of RecOne alike (so their difference is the cold start)."""
    algorithm: str = "dapo"
    """The RL algorithm (``recgym algorithms``)."""
    algorithm_kwargs: dict[str, Any] = field(default_factory=lambda: {"overlong_buffer": 0})
    """The algorithm's own knobs (the demo's: DAPO's overlong penalty off)."""
    group_size: int = 8
    prompts_per_step: int = 4
    learning_rate: float = 5e-5
    lr_scheduler_type: str = "constant"
    temperature: float = 1.0
    """GRPO's sampling temperature (evaluation is greedy)."""
    dtype: str = "auto"
    """Learner precision: ``float32``, ``bfloat16`` or ``auto`` (:func:`recgym.demo.learner_dtype`; results
    record what it resolved to)."""
    use_lora: bool = False
    """LoRA adapters (``GRPOConfig.lora_*`` defaults) for SFT and GRPO, merged into each checkpoint."""
    gpu_memory_gib: float | None = None
    """One GPU's memory, for ``--estimate-memory`` and the trainer's check."""
    collapse_action: str = "warn"
    """``GRPOConfig.collapse_action`` of both GRPO arms."""
    trainable_layers: int = 0
    """Both GRPO arms train only the top this many transformer blocks (0: every weight; not with LoRA)."""
    sft_lr_scheduler_type: str = "constant"
    """The SFT stage's schedule (``constant``, ``linear``, ``cosine``, ...)."""
    grpo_kwargs: dict[str, Any] = field(default_factory=dict)
    """Other ``GRPOConfig`` fields of both GRPO arms (``gradient_checkpointing``, ``lora_r``, ``warmup_steps``, ...);
    ``gradient_checkpointing`` also holds for the SFT stage."""
    live_display: bool = True
    """The trainer's live table where the output is a terminal."""
    keep_checkpoints: bool = False
    """Keep each GRPO arm's final checkpoint (weights and optimizer state: 1.6 GB for SmolLM2) once its
    result is saved; the SFT checkpoint is always kept (RecOne starts from it)."""
    output_dir: str = "runs/reproduce"
    seed: int = 0

    def __post_init__(self) -> None:
        unknown = sorted(set(self.arms) - set(ARMS))
        if unknown:
            raise ValueError(f"unknown arm(s) {', '.join(unknown)}; arms are {', '.join(ARMS)}")
        if not self.arms:
            raise ValueError("arms is empty; give any of " + ", ".join(ARMS))
        if self.policy not in ("vllm", "hf"):
            raise ValueError(f"policy must be vllm or hf, got {self.policy!r}")
        from recgym.agents.teachers.cold_start import teacher_key

        self.teacher = teacher_key(self.teacher)
        if self.teacher not in ("user_average", "reasoner"):
            raise ValueError(f"teacher must be user_average or reasoner, got {self.teacher!r}")
        if self.eval_size < 2:
            raise ValueError(f"eval_size must be >= 2 (the paired comparisons need two samples), got {self.eval_size}")
        for name in ("max_new_tokens", "cold_start_samples", "group_size", "prompts_per_step"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.grpo_steps < 1:
            raise ValueError(f"grpo_steps must be >= 1, got {self.grpo_steps}")
        from recgym.agents.config import GRPOConfig

        fixed = {**{name: name for name in set(GRPOConfig.field_names()) & set(self.field_names())}, **GRPO_SET}
        if taken := sorted(set(self.grpo_kwargs) & fixed.keys()):
            instead = ", ".join(dict.fromkeys(fixed[k] for k in taken if fixed[k]))
            raise ValueError(f"grpo_kwargs cannot set {', '.join(taken)}: reproduce sets these for both GRPO arms"
                             + (f" (set {instead} instead)" if instead else ""))
        self.dataset_specs()

    def dataset_specs(self) -> list[DatasetSpec]:
        """``datasets`` as :class:`DatasetSpec` entries; a malformed entry is a one-line ``ValueError``."""
        if not self.datasets:
            raise ValueError("datasets is empty: give at least one {name, env_id, data_dir}")
        known = [f.name for f in fields(DatasetSpec)]
        specs = []
        for i, entry in enumerate(self.datasets):
            if not isinstance(entry, dict):
                raise TypeError(f"datasets[{i}]: expected a mapping of {', '.join(known)}, got {entry!r}")
            unknown = sorted(set(entry) - set(known))
            if unknown:
                raise ValueError(f"datasets[{i}]: unknown key(s) {', '.join(unknown)} (known: {', '.join(known)})")
            missing = [k for k in ("name", "env_id") if not entry.get(k)]
            if missing:
                raise ValueError(f"datasets[{i}]: {' and '.join(missing)} missing")
            if not isinstance(entry.get("env_kwargs", {}), dict):
                raise TypeError(f"datasets[{i}] ({entry['name']}): env_kwargs must be a mapping")
            specs.append(DatasetSpec(**{**entry, "name": str(entry["name"])}))
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise ValueError(f"dataset names repeat: {', '.join(names)}")
        if self.teacher == "reasoner" and {"sft", "recone"} & set(self.arms):
            for spec in specs:
                if not spec.env_id.startswith("RecRating-Synthetic"):
                    raise ValueError(f"teacher reasoner reads the synthetic world only, not {spec.env_id} "
                                     f"({spec.name}); use teacher: user_average")
        return specs

    def stage_settings(self, spec: DatasetSpec) -> Any:
        """The demo's settings (:class:`recgym.demo.DemoSettings`) for ``spec``'s stages."""
        from recgym.demo import DemoSettings

        shared = {f.name for f in fields(DemoSettings)} & set(self.field_names()) - {"output_dir"}
        return DemoSettings(env_id=spec.env_id, eval_interval=0, output_dir=self.output_dir,
                            **{name: getattr(self, name) for name in shared})

    def grpo_overrides(self) -> dict[str, Any]:
        """``GRPOConfig`` fields of both GRPO arms beyond the demo's stage settings."""
        policy_kwargs = {"max_model_len": self.max_model_len, "kv_cache_gib": self.kv_cache_gib}
        return {"policy": self.policy, "eval_split": self.eval_split, "eval_on_start": False, "use_lora": self.use_lora,
                "gpu_memory_gib": self.gpu_memory_gib, "live_display": self.live_display and _is_terminal(),
                "policy_kwargs": policy_kwargs if self.policy == "vllm" else {}, **self.grpo_kwargs}

    def grpo_config(self, spec: DatasetSpec, start: str | None = None, out: Path | None = None) -> Any:
        """The ``GRPOConfig`` of a GRPO arm on ``spec`` from the checkpoint ``start`` (default: the base
        model) into ``out`` (default: the dataset's folder; the arms run in ``<arm>-<protocol_key>`` under
        it); the RecZero arm's is what ``--estimate-memory`` checks."""
        from recgym.demo import grpo_config

        return grpo_config(self.stage_settings(spec), out or Path(self.output_dir) / spec.name, start or self.model,
                           spec.make_kwargs(), self.grpo_steps, **self.grpo_overrides())

    def protocol(self, spec: DatasetSpec, data_key: str) -> dict[str, Any]:
        """What a saved result of ``spec`` was measured under (a rerun must match it to reuse it), with
        ``data_key``, the prepared data's :func:`recgym.agents.evaluation.dataset_key`, and ``dtype``
        resolved (:func:`recgym.demo.learner_dtype`: ``auto`` differs between machines)."""
        from recgym.demo import learner_dtype

        values = {k: v for k, v in self.to_dict().items() if k not in RUNTIME_FIELDS}
        return plain_values({**values, "dtype": learner_dtype(self.dtype), "dataset": spec.__dict__,
                             "dataset_key": data_key})

    def changed_since(self, saved: dict[str, Any], spec: DatasetSpec, data_key: str) -> list[str]:
        """The fields whose values differ from a saved result's ``protocol``; a field the saved one
        lacks (added to recgym later) counts as unchanged at its default."""
        return changed_fields(type(self), self.protocol(spec, data_key), saved)

    def protocol_key(self, spec: DatasetSpec, data_key: str) -> str:
        """A short hash of :meth:`protocol`, naming the partial files of a run under it."""
        import hashlib

        return hashlib.sha1(json.dumps(self.protocol(spec, data_key), sort_keys=True).encode()).hexdigest()[:8]


def _is_terminal() -> bool:
    from recgym.console import make_console

    return make_console().is_terminal


def check_datasets(config: ReproduceConfig) -> dict[str, Any]:
    """Make every dataset's evaluation environment before anything slow (a missing folder, an unknown
    id, a bad keyword argument or a split of fewer than 2 samples fails here, as a one-line
    ``ValueError``); returns them by name."""
    import gymnasium as gym

    import recgym.envs  # noqa: F401  (registers the environments)

    envs = {}
    for spec in config.dataset_specs():
        try:
            gym.spec(spec.env_id)
        except gym.error.Error as exc:
            raise ValueError(f"dataset {spec.name}: unknown env_id {spec.env_id}: {exc} (see `recgym envs`)") from exc
        if spec.data_dir is not None and not Path(spec.data_dir).expanduser().is_dir():
            raise ValueError(f"dataset {spec.name}: data_dir {spec.data_dir} is not a folder "
                             f"(relative paths are from {Path.cwd()})")
        try:
            env = gym.make(spec.env_id, split=config.eval_split, **spec.make_kwargs())
        except (gym.error.Error, OSError, ValueError, TypeError) as exc:
            raise ValueError(f"dataset {spec.name} ({spec.env_id}): {' '.join(str(exc).split())}") from exc
        if len(env.unwrapped) < 2:
            raise ValueError(f"dataset {spec.name}: its {config.eval_split} split has {len(env.unwrapped)} sample(s); "
                             "the paired comparisons need at least 2 (use another eval_split or more data)")
        envs[spec.name] = env
    return envs


class Reproduction:
    """Runs the arms of every dataset, reusing the results already on disk."""

    def __init__(self, config: ReproduceConfig) -> None:
        from recgym.console import make_console

        self.config = config
        self.console = make_console()
        self.out = Path(config.output_dir)
        self.policy: Any = None
        self.loaded: str | None = None
        """The checkpoint whose weights the shared vLLM engine holds (None: a trainer's last weights)."""
        self.ran: list[tuple[str, str]] = []
        self.reused: list[tuple[str, str]] = []
        self.envs: dict[str, Any] | None = None
        self.data_keys: dict[str, str] = {}
        """Each dataset's :func:`recgym.agents.evaluation.dataset_key`, part of its results' protocol."""
        self.saved: dict[tuple[str, str], dict[str, Any]] = {}

    def prepare(self) -> None:
        """Check every dataset (:func:`check_datasets`) and load the results already on disk; a bad
        dataset, or a saved result measured under other settings, is a one-line ``ValueError``."""
        from recgym.agents.evaluation import dataset_key
        from recgym.demo import learner_dtype

        cfg = self.config
        self.envs = check_datasets(cfg)
        self.data_keys = {name: dataset_key(env.unwrapped.dataset) for name, env in self.envs.items()}
        for spec in cfg.dataset_specs():
            for arm in cfg.arms:
                path = self.out / spec.name / f"{arm}.json"
                if path.exists():
                    saved = json.loads(path.read_text())
                    if saved.get("protocol", {}).get("dtype") == "auto":
                        raise ValueError(f"{path} was saved with dtype auto before recgym recorded what auto resolved "
                                         f"to, so whether its precision matches this run's {learner_dtype(cfg.dtype)} "
                                         "cannot be known; use another output_dir or remove it")
                    changed = cfg.changed_since(saved.get("protocol", {}), spec, self.data_keys[spec.name])
                    if changed:
                        raise ValueError(f"{path} was measured under other settings ({', '.join(changed)}); "
                                         "use another output_dir or remove it")
                    self.saved[spec.name, arm] = saved

    # ---- the run ----
    def run(self) -> dict[str, Any]:
        cfg = self.config
        if self.envs is None:
            self.prepare()
        envs = self.envs
        start = time.perf_counter()
        specs = cfg.dataset_specs()
        todo = [(spec, arm) for spec in specs for arm in ARMS if arm in cfg.arms]
        results: dict[str, dict[str, Any]] = {spec.name: {} for spec in specs}
        try:
            for k, (spec, arm) in enumerate(todo, 1):
                path = self.out / spec.name / f"{arm}.json"
                label = LABELS.get(arm, "classical baselines")
                if (spec.name, arm) in self.saved:
                    self.console.print(f"[dim][{k}/{len(todo)}] {spec.name}: {label}: done before, loaded {path}[/]")
                    self.reused.append((spec.name, arm))
                    results[spec.name][arm] = self.saved[spec.name, arm]
                    continue
                self.console.rule(f"[bold][{k}/{len(todo)}] {spec.name}: {label}[/] "
                                  f"({(time.perf_counter() - start) / 60:.1f} min so far)")
                arm_start = time.perf_counter()
                result = getattr(self, f"arm_{arm}")(spec, envs[spec.name])
                result.update(protocol=cfg.protocol(spec, self.data_keys[spec.name]),
                              seconds=time.perf_counter() - arm_start)
                write_json_atomic(path, result)
                if arm in ("reczero", "recone") and not cfg.keep_checkpoints:
                    shutil.rmtree(Path(result["model"]) / "checkpoints", ignore_errors=True)
                self.console.print(f"{spec.name}: {label}: {_arm_line(result)} ({result['seconds']:.0f} s) -> {path}")
                self.ran.append((spec.name, arm))
                results[spec.name][arm] = result
        finally:
            if self.policy is not None:
                self.policy.close()
        table = build_table(cfg, envs, results)
        table["seconds"] = time.perf_counter() - start
        write_json_atomic(self.out / "table.json", table)
        (self.out / "table.md").write_text(markdown_table(table))
        self.console.print(rich_table(table))
        self.console.print(f"table: {self.out / 'table.md'}, {self.out / 'table.json'}; "
                           f"{len(self.ran)} arm(s) run, {len(self.reused)} loaded; "
                           f"{table['seconds'] / 60:.1f} min")
        return {**table, "ran": self.ran, "reused": self.reused}

    # ---- the arms ----
    def arm_baselines(self, spec: DatasetSpec, env: Any) -> dict[str, Any]:
        from recgym.agents.evaluation import baseline_predictions
        from recgym.baselines import error_metrics

        core = env.unwrapped
        indices = list(range(min(self.config.eval_size, len(core))))
        predictions, targets, note = baseline_predictions(core.dataset, core.split, indices)
        if not predictions:
            raise ValueError(f"dataset {spec.name}: {note}")
        return {"baselines": {name: error_metrics(p, targets) for name, p in predictions.items()}, "indices": indices,
                "predictions": {name: p.tolist() for name, p in predictions.items()}, "targets": targets.tolist()}

    def arm_zero_shot(self, spec: DatasetSpec, env: Any) -> dict[str, Any]:
        return self._evaluate(spec, env, "zero_shot", self.config.model)

    def arm_sft(self, spec: DatasetSpec, env: Any) -> dict[str, Any]:
        return self._evaluate(spec, env, "sft", str(self.sft_checkpoint(spec)))

    def arm_reczero(self, spec: DatasetSpec, env: Any) -> dict[str, Any]:
        return self._grpo(spec, "reczero", self.config.model)

    def arm_recone(self, spec: DatasetSpec, env: Any) -> dict[str, Any]:
        return self._grpo(spec, "recone", str(self.sft_checkpoint(spec)))

    # ---- stages ----
    def sft_checkpoint(self, spec: DatasetSpec) -> Path:
        """The cold-start SFT checkpoint of ``spec`` (made once: a complete one is reused)."""
        from recgym.demo import cold_start_sft

        out = self.out / spec.name / f"cold_start-{self._key(spec)}"
        checkpoint = out / "sft"
        if (checkpoint / "sft_log.json").exists():  # train_sft writes it last
            return checkpoint
        shutil.rmtree(checkpoint, ignore_errors=True)
        self._eval_path(spec, "sft").unlink(missing_ok=True)  # scored on a checkpoint that is gone
        s = self.config.stage_settings(spec)
        return cold_start_sft(s, out, spec.make_kwargs(), use_lora=self.config.use_lora,
                              gradient_checkpointing=bool(self.config.grpo_kwargs.get("gradient_checkpointing", False)))

    def shared_policy(self, weights: str | None) -> Any:
        """The generation backend holding ``weights`` (a checkpoint; None: whatever it holds)."""
        from recgym.agents.policies import make_policy

        cfg = self.config
        if cfg.policy == "hf":
            return None if weights is None else make_policy("hf", weights)
        if self.policy is None:
            from recgym.demo import shared_policy

            self.policy = shared_policy(cfg.stage_settings(cfg.dataset_specs()[0]), max_model_len=cfg.max_model_len,
                                        kv_cache_gib=cfg.kv_cache_gib)
            self.loaded = cfg.model
        if weights is not None and weights != self.loaded:
            import torch

            from recgym.agents.learner.weight_export import sync_policy
            from recgym.agents.models import load_model

            model, _ = load_model(weights, dtype="bfloat16" if torch.cuda.is_available() else "float32")
            sync_policy(self.policy, model)
            del model
            self.loaded = weights
        return self.policy

    def _key(self, spec: DatasetSpec) -> str:
        return self.config.protocol_key(spec, self.data_keys[spec.name])

    def _eval_path(self, spec: DatasetSpec, arm: str) -> Path:
        return self.out / spec.name / f"{arm}_eval-{self._key(spec)}.jsonl"

    def _evaluate(self, spec: DatasetSpec, env: Any, arm: str, weights: str) -> dict[str, Any]:
        from rich import progress as bars

        from recgym.agents.evaluation import evaluate
        from recgym.agents.run_log import eval_record
        from recgym.agents.types import SamplingParams
        from recgym.demo import sample_arrays

        cfg = self.config
        policy = self.shared_policy(weights)
        n = min(cfg.eval_size, len(env.unwrapped))
        with bars.Progress(bars.TextColumn("[bold]{task.description}"), bars.BarColumn(), bars.MofNCompleteColumn(),
                           bars.TextColumn("{task.fields[running]}"), bars.TimeElapsedColumn(),
                           console=self.console) as progress:
            task = progress.add_task(f"{spec.name} {LABELS[arm]}: greedy", total=n, running="")

            def on_record(record, running):
                progress.update(task, completed=running["done"],
                                running=f"MAE {running['mae']:.3f}  coverage {running['coverage']:.0%}")

            result = evaluate(env, policy, n=n, sampling=SamplingParams(temperature=0.0, max_new_tokens=cfg.max_new_tokens),
                              batch_size=min(n, EVAL_BATCH_SIZE[cfg.policy]), baselines=False,
                              out=self._eval_path(spec, arm),
                              header={"model": weights}, on_record=on_record)
        if cfg.policy == "hf":
            policy.close()
        predictions, targets = sample_arrays(result.records)
        return {"record": eval_record(result, step=0), "indices": [r["index"] for r in result.records],
                "predictions": predictions.tolist(), "targets": targets.tolist(), "model": weights}

    def _grpo(self, spec: DatasetSpec, arm: str, start: str) -> dict[str, Any]:
        from recgym.agents.trainer import GRPOTrainer
        from recgym.demo import sample_arrays

        config = self.config.grpo_config(spec, start, self.out / spec.name / f"{arm}-{self._key(spec)}")
        out = config.output_dir
        shutil.rmtree(out, ignore_errors=True)  # a run killed half way starts again
        result = GRPOTrainer(config, policy=self.shared_policy(None)).train()
        self.loaded = None
        samples = result.eval_samples[result.steps]
        predictions, targets = sample_arrays(samples)
        return {"record": result.evals[-1], "indices": [r["index"] for r in samples], "predictions": predictions.tolist(),
                "targets": targets.tolist(), "model": str(out), "steps": result.steps}


def _arm_line(result: dict[str, Any]) -> str:
    if "baselines" in result:
        return "MAE " + ", ".join(f"{name} {m['mae']:.3f}" for name, m in result["baselines"].items())
    r = result["record"]
    return (f"MAE {r['eval/mae']:.3f}, RMSE {r['eval/rmse']:.3f}, coverage {r['eval/coverage']:.0%}, "
            f"format {r['eval/format_rate']:.0%}")


def run_reproduce(config: ReproduceConfig) -> dict[str, Any]:
    """Run (or finish) the reproduction; returns the table (also in ``table.json``), plus which
    ``(dataset, arm)`` pairs ``ran`` this time and which were ``reused`` from disk."""
    return Reproduction(config).run()


# ---- the table ----
def build_table(config: ReproduceConfig, envs: dict[str, Any], results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """``table.json``'s content: per dataset, its scale and sample count, each arm's figures
    (LLM arms with coverage and format rate), each baseline's, and the paired comparisons."""
    from recgym.metrics import paired_difference

    out: dict[str, Any] = {"model": config.model, "eval_split": config.eval_split, "arms": list(config.arms),
                           "datasets": {}}
    for spec in config.dataset_specs():
        name, arms, core = spec.name, results[spec.name], envs[spec.name].unwrapped
        column: dict[str, Any] = {"env_id": spec.env_id, "scale": core.scale.label,
                                  "n": min(config.eval_size, len(core)), "rows": {}, "paired": {}}
        for baseline, scores in arms.get("baselines", {}).get("baselines", {}).items():
            column["rows"][baseline] = {"kind": "baseline", **{k: scores[k] for k in ("mae", "rmse", "n")}}
        for arm in ARMS[1:]:
            if arm in arms:
                r = arms[arm]["record"]
                column["rows"][arm] = {"kind": "llm", **{k: r.get(f"eval/{k}") for k in
                                                         ("mae", "rmse", "coverage", "format_rate", "mae_parsed", "n")}}
        for arm, against in PAIRS:
            if arm in arms and against in arms:
                a, b = arms[against], arms[arm]
                if a["indices"] != b["indices"]:
                    raise ValueError(f"{name}: {arm} and {against} were evaluated on different samples")
                errors = [np.asarray(x["predictions"]) - np.asarray(x["targets"]) for x in (a, b)]
                gain, se = paired_difference(*errors)
                column["paired"][f"{arm}_vs_{against}"] = {"gain": gain, "se": se}
        out["datasets"][name] = column
    return out


def _rows(table: dict[str, Any]) -> list[tuple[str, str, list[tuple[str, str, str]]]]:
    """``(label, kind, cells)`` per row; each dataset's cell is ``(MAE, RMSE, coverage/format)`` text."""
    columns = list(table["datasets"].values())
    keys: list[str] = []
    for column in columns:
        keys += [k for k in column["rows"] if k not in keys]
    rows = []

    def num(v: float | None, spec: str = ".3f") -> str:
        return "-" if v is None or not np.isfinite(v) else format(v, spec)

    for key in keys:
        kind = next(c["rows"][key]["kind"] for c in columns if key in c["rows"])
        cells = []
        for column in columns:
            r = column["rows"].get(key)
            if r is None:
                cells.append(("", "", ""))
            elif kind == "llm":
                cells.append((num(r["mae"]), num(r["rmse"]), f"{num(r['coverage'], '.0%')} / {num(r['format_rate'], '.0%')}"))
            else:
                cells.append((num(r["mae"]), num(r["rmse"]), ""))
        rows.append((LABELS.get(key, key), kind, cells))
    for arm, against in PAIRS:
        key = f"{arm}_vs_{against}"
        if any(key in c["paired"] for c in columns):
            cells = [(f"{c['paired'][key]['gain']:+.3f} ± {c['paired'][key]['se']:.3f}", "", "") if key in c["paired"]
                     else ("", "", "") for c in columns]
            rows.append((f"{SHORT[arm]} vs {SHORT[against]}: gain ± SE", "paired", cells))
    return rows


def _caption(table: dict[str, Any]) -> str:
    return (f"{table['model']}, greedy, the first n {table['eval_split']} samples of each dataset (the same for every row); "
            "MAE/RMSE use the user's prior average (else item's, else global mean) where no rating parsed; "
            "cov / fmt: share parsed / share in the four-step format; gain ± SE: mean paired MAE gain of the first arm "
            "over the second on the same samples (> 0: the first is better) and its standard error. "
            "Each column is on its own scale: columns are never averaged.")


def rich_table(table: dict[str, Any]):
    from rich.table import Table

    sizes = ", ".join(f"{name} n={c['n']}" for name, c in table["datasets"].items())
    t = Table(title=f"recgym reproduce ({sizes})", caption=_caption(table))
    t.add_column("arm", no_wrap=True)
    for name, column in table["datasets"].items():
        t.add_column(f"{name}\n{column['scale']}\nMAE", justify="right", no_wrap=True)
        t.add_column("\n\nRMSE", justify="right", no_wrap=True)
        t.add_column("\n\ncov / fmt", justify="right", no_wrap=True)
    for label, kind, cells in _rows(table):
        t.add_row(f"[dim]{label}[/]" if kind == "baseline" else label, *[text for cell in cells for text in cell])
    return t


def markdown_table(table: dict[str, Any]) -> str:
    header = ["arm"]
    for name, column in table["datasets"].items():
        header += [f"{name} MAE ({column['scale']}, n={column['n']})", "RMSE", "coverage / format"]
    lines = ["| " + " | ".join(header) + " |", "|---" + "|---:" * (len(header) - 1) + "|"]
    for label, _, cells in _rows(table):
        lines.append("| " + " | ".join([label, *[text for cell in cells for text in cell]]) + " |")
    return "\n".join(lines) + "\n\n" + _caption(table) + "\n"
