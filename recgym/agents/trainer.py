"""The GRPO-family trainer, readable top to bottom (CleanRL style).

One training step:

1. take ``prompts_per_step`` training samples (a shuffled pass over the split; the position is
   checkpointed) and ``collect`` ``group_size`` completions each through the policy;
2. the algorithm turns the rollout's rewards into advantages;
3. the learner (a transformers model, optionally LoRA via peft, wrapped by ``accelerate``) computes
   the new logprobs of the sampled tokens in micro-batches and takes optimizer steps on the
   algorithm's loss;
4. the policy gets the new weights (the HF policy shares the learner's module; vLLM receives
   ``update_weights``);
5. every ``eval_interval`` steps: greedy evaluation (MAE/RMSE/coverage/format rate) on the same
   validation samples; every ``save_interval`` steps: an atomic checkpoint.

``GRPOTrainer(config).train()`` runs it; ``recgym train grpo --config FILE`` is the same from the
shell. A run writes ``metrics.jsonl`` (one line per step, plus ``eval/*`` lines), ``curves.png``,
``completions.jsonl`` and ``checkpoints/step-XXXXXX/``.
"""

from __future__ import annotations

import copy
import json
import random
import shutil
import time
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recgym.agents.algorithms import LossInputs, get_algorithm
from recgym.agents.config import GRPOConfig, plain_values
from recgym.agents.types import RolloutBatch, SamplingParams
from recgym.cache import atomic_directory

CHECKPOINT_PREFIX = "step-"


# --------------------------------------------------------------------------------------------
# Data position: a shuffled pass over the training split, epoch after epoch.
# --------------------------------------------------------------------------------------------
@dataclass
class PromptSampler:
    """Yields sample indices from a fresh permutation per epoch; ``position`` is all its state."""

    num_samples: int
    seed: int
    position: int = 0

    def take(self, n: int) -> list[int]:
        out = []
        for _ in range(n):
            epoch, offset = divmod(self.position, self.num_samples)
            out.append(int(np.random.default_rng([self.seed, epoch]).permutation(self.num_samples)[offset]))
            self.position += 1
        return out


# --------------------------------------------------------------------------------------------
# The learner's logprobs of sampled tokens.
# --------------------------------------------------------------------------------------------
def completion_logprobs(
    model: torch.nn.Module,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Logprob of each completion token under ``model`` (``[b, C]``; 0 on padding).

    Prompts are left-padded and completions right-padded, so position ids come from the
    attention mask (as in generation) and only the last ``C + 1`` positions' logits are kept.
    """
    input_ids = torch.cat([prompt_ids, completion_ids], dim=1)
    attention = torch.cat([prompt_mask, completion_mask], dim=1).long()
    position_ids = (attention.cumsum(-1) - 1).clamp(min=0)
    c = completion_ids.shape[1]
    logits = model(
        input_ids=input_ids, attention_mask=attention, position_ids=position_ids, logits_to_keep=c + 1
    ).logits[:, :-1, :].float()
    if temperature > 0 and temperature != 1.0:
        logits = logits / temperature
    logps = torch.log_softmax(logits, dim=-1).gather(-1, completion_ids.unsqueeze(-1)).squeeze(-1)
    return logps * completion_mask


def micro_batches(batch_size: int, micro_batch_size: int) -> Iterator[slice]:
    for start in range(0, batch_size, micro_batch_size):
        yield slice(start, min(start + micro_batch_size, batch_size))


# --------------------------------------------------------------------------------------------
# Checkpoints: written to a temporary folder, then renamed (atomic on one filesystem).
# --------------------------------------------------------------------------------------------
def list_checkpoints(output_dir: str | Path) -> list[Path]:
    root = Path(output_dir) / "checkpoints"
    if not root.is_dir():
        return []
    done = [p for p in root.iterdir() if p.name.startswith(CHECKPOINT_PREFIX) and (p / "trainer_state.json").exists()]
    return sorted(done, key=lambda p: int(p.name[len(CHECKPOINT_PREFIX):]))


def rng_state() -> dict[str, Any]:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# --------------------------------------------------------------------------------------------
# Logging: metrics.jsonl always, a rich live table, optional trackers, the plot at the end.
# --------------------------------------------------------------------------------------------
class RunLogger:
    """Writes one JSON line per step/evaluation and mirrors it to the display and trackers."""

    def __init__(self, config: GRPOConfig, resume_step: int = 0) -> None:
        self.dir = Path(config.output_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / "metrics.jsonl"
        self.records: list[dict[str, Any]] = []
        if resume_step and self.path.exists():  # keep what the checkpoint had seen, drop the rest
            for line in self.path.read_text().splitlines():
                record = json.loads(line)
                if record["step"] <= resume_step:
                    self.records.append(record)
        self.path.write_text("".join(json.dumps(r) + "\n" for r in self.records))
        self.trackers = [_make_tracker(name, config) for name in config.report_to]
        self.live = None
        if config.live_display:
            from rich.live import Live

            self.live = Live(self._table(), refresh_per_second=2, transient=False)
            self.live.start()

    def log(self, record: dict[str, Any]) -> None:
        record = {k: _jsonable(v) for k, v in record.items()}
        self.records.append(record)
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        for tracker in self.trackers:
            tracker(record)
        if self.live is not None:
            self.live.update(self._table())
        else:
            print(_one_line(record), flush=True)

    def print(self, *args: Any) -> None:
        if self.live is not None:
            self.live.console.print(*args)
        else:
            print(*args, flush=True)

    def _table(self):
        from rich.table import Table

        table = Table(title="recgym GRPO training", expand=False)
        columns = [
            ("step", "step", "{:d}"), ("reward", "reward", "{:.3f}"), ("format", "reward/format", "{:+.3f}"),
            ("accuracy", "reward/accuracy", "{:.3f}"), ("format rate", "format_rate", "{:.0%}"),
            ("val MAE", "eval/mae", "{:.3f}"), ("val coverage", "eval/coverage", "{:.0%}"),
            ("tok/s", "tokens_per_second", "{:.0f}"), ("gen s", "time/generation", "{:.1f}"),
            ("learn s", "time/learning", "{:.1f}"),
        ]
        for title, _, _ in columns:
            table.add_column(title, justify="right")
        last_eval: dict[str, Any] = {}
        rows = []
        for r in self.records:
            if "eval/mae" in r:
                last_eval = r
            if "reward" in r:
                rows.append({**{k: v for k, v in last_eval.items() if k.startswith("eval/")}, **r})
        for r in rows[-12:]:
            table.add_row(*[_fmt(r.get(key), fmt) for _, key, fmt in columns])
        return table

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()
        for tracker in self.trackers:
            getattr(tracker, "close", lambda: None)()


def _fmt(value: Any, fmt: str) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "-"
    return fmt.format(int(value) if fmt == "{:d}" else value)


def _one_line(record: dict[str, Any]) -> str:
    keys = ("step", "reward", "format_rate", "eval/mae", "eval/coverage", "eval/format_rate", "time/step")
    return " ".join(f"{k}={record[k]:.4g}" if isinstance(record[k], float) else f"{k}={record[k]}"
                    for k in keys if k in record)


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


class _Tracker:
    def __init__(self, log, close=lambda: None) -> None:
        self._log, self.close = log, close

    def __call__(self, record: dict[str, Any]) -> None:
        numbers = {k: v for k, v in record.items() if isinstance(v, int | float) and k != "step"}
        self._log(numbers, int(record["step"]))


def _make_tracker(name: str, config: GRPOConfig) -> _Tracker:
    """TensorBoard / W&B / trackio, by the names transformers' ``report_to`` uses."""
    try:
        if name == "tensorboard":
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(Path(config.output_dir) / "tensorboard"))
            return _Tracker(lambda m, s: [writer.add_scalar(k, v, s) for k, v in m.items()], writer.close)
        if name in ("wandb", "trackio"):
            module = __import__(name)
            run = module.init(project="recgym", config=config.to_dict())
            return _Tracker(lambda m, s: module.log(m, step=s), getattr(run, "finish", lambda: None))
    except ImportError as exc:
        raise ImportError(f"report_to={name!r} needs the {exc.name!r} package: pip install {exc.name}") from exc
    raise ValueError(f"unknown report_to target {name!r} (tensorboard, wandb, trackio)")


def plot_curves(records: list[dict[str, Any]], path: str | Path, baseline_mae: float | None = None) -> Path | None:
    """Reward (and its parts), format rate, validation MAE and coverage against steps."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    train = [r for r in records if "reward" in r]
    evals = [r for r in records if "eval/mae" in r]
    fig, axes = plt.subplots(2, 2, figsize=(10, 7))

    def series(rows, key):
        pts = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
        return ([p[0] for p in pts], [p[1] for p in pts])

    ax = axes[0, 0]
    for key, label in (("reward", "total"), ("reward/format", "format"), ("reward/accuracy", "accuracy")):
        ax.plot(*series(train, key), marker=".", label=label)
    ax.set_title("training reward"), ax.legend()
    ax = axes[0, 1]
    ax.plot(*series(train, "format_rate"), marker=".", label="train (sampled)")
    ax.plot(*series(evals, "eval/format_rate"), marker="o", label="validation (greedy)")
    ax.set_title("format rate"), ax.set_ylim(-0.05, 1.05), ax.legend()
    ax = axes[1, 0]
    ax.plot(*series(evals, "eval/mae"), marker="o", label="model (fallback where unparsed)")
    if baseline_mae is not None:
        ax.axhline(baseline_mae, color="grey", linestyle="--", label="user-average baseline")
    ax.set_title("validation MAE"), ax.legend()
    ax = axes[1, 1]
    ax.plot(*series(evals, "eval/coverage"), marker="o")
    ax.set_title("validation coverage (rating parsed)"), ax.set_ylim(-0.05, 1.05)
    for ax in axes.flat:
        ax.set_xlabel("step")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


# --------------------------------------------------------------------------------------------
# The trainer.
# --------------------------------------------------------------------------------------------
@dataclass
class TrainResult:
    steps: int
    evals: list[dict[str, Any]] = field(default_factory=list)
    """Every evaluation record (``eval/*`` keys), the first before training, the last after."""
    output_dir: str = ""


class GRPOTrainer:
    """Trains a causal LM on a RecRating environment with a registered algorithm.

    ``model``/``tokenizer``/``policy`` may be given (tests pass tiny ones); otherwise they are
    built from ``config.model`` and ``config.policy``.
    """

    def __init__(
        self,
        config: GRPOConfig,
        *,
        model: torch.nn.Module | None = None,
        tokenizer: Any | None = None,
        policy: Any | None = None,
    ) -> None:
        import gymnasium as gym
        from accelerate import Accelerator
        from transformers import get_scheduler

        import recgym  # noqa: F401  (registers the environments)
        from recgym.envs.vector import make_group_vec

        self.config = cfg = config
        seed_everything(cfg.seed)
        self.accelerator = Accelerator(cpu=not torch.cuda.is_available())

        # environments: the training split, and the validation split for evaluation
        self.train_env = make_group_vec(
            cfg.env_id, cfg.prompts_per_step, cfg.group_size, split=cfg.train_split, **cfg.env_kwargs
        )
        self.eval_env = gym.make(cfg.env_id, split=cfg.eval_split, **cfg.env_kwargs)
        self.sampler = PromptSampler(len(self.train_env), cfg.seed)

        # learner (+ LoRA), reference model for the KL term, algorithm
        if model is None or tokenizer is None:
            model, tokenizer = load_learner(cfg.model, cfg.dtype)
        if cfg.gradient_checkpointing:
            model.gradient_checkpointing_enable()
        if cfg.use_lora:
            model = add_lora(model, cfg)
        self.tokenizer = tokenizer
        self.algorithm = get_algorithm(cfg.algorithm).from_config(cfg, **cfg.algorithm_kwargs)
        self.ref_model = None
        if self.algorithm.needs_reference and not cfg.use_lora:  # with LoRA: disable the adapter
            self.ref_model = copy.deepcopy(model).eval().requires_grad_(False)

        trainable = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(
            trainable, lr=cfg.learning_rate, betas=(cfg.adam_beta1, cfg.adam_beta2),
            weight_decay=cfg.weight_decay,
        )
        scheduler = get_scheduler(
            cfg.lr_scheduler_type, optimizer, num_warmup_steps=cfg.warmup_steps,
            num_training_steps=max(cfg.max_steps * self.updates_per_step, 1),
        )
        self.model, self.optimizer, self.scheduler = self.accelerator.prepare(model, optimizer, scheduler)
        if self.ref_model is not None:
            self.ref_model = self.ref_model.to(self.accelerator.device)

        # the policy that samples completions
        self.policy = policy if policy is not None else build_policy(cfg, self.unwrapped_model, tokenizer)
        self.step = 0

    # ---- sizes ----
    @property
    def batch_size(self) -> int:
        return self.config.prompts_per_step * self.config.group_size

    @property
    def micro_batches_per_update(self) -> int:
        n = -(-self.batch_size // self.config.micro_batch_size)
        gas = self.config.gradient_accumulation_steps
        return n if gas == 0 else min(gas, n)

    @property
    def updates_per_step(self) -> int:
        n = -(-self.batch_size // self.config.micro_batch_size)
        return self.config.num_inner_epochs * -(-n // self.micro_batches_per_update)

    @property
    def unwrapped_model(self) -> torch.nn.Module:
        return self.accelerator.unwrap_model(self.model)

    def sampling(self, step: int) -> SamplingParams:
        """Per-step seed, so a resumed run samples exactly what an uninterrupted one does."""
        cfg = self.config
        return SamplingParams(
            temperature=cfg.temperature, top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens,
            seed=cfg.seed * 1_000_003 + step,
        )

    # ---- the loop ----
    def train(self, resume: bool = False) -> TrainResult:
        cfg = self.config
        if resume:
            self.load_checkpoint()
        logger = RunLogger(cfg, resume_step=self.step)
        cfg.to_yaml(Path(cfg.output_dir) / "config.yaml")
        evals = [r for r in logger.records if "eval/mae" in r]
        try:
            if self.step == 0:
                evals.append(self.evaluate(logger, baselines=True))
            while self.step < cfg.max_steps:
                record = self.train_step()
                logger.log(record)
                due = cfg.eval_interval and self.step % cfg.eval_interval == 0
                if due or self.step == cfg.max_steps:
                    evals.append(self.evaluate(logger, baselines=self.step == cfg.max_steps))
                if (cfg.save_interval and self.step % cfg.save_interval == 0) or self.step == cfg.max_steps:
                    self.save_checkpoint()
        finally:
            logger.close()
        if cfg.plot:
            baseline = next((r["eval/baseline/user_mean_mae"] for r in evals if "eval/baseline/user_mean_mae" in r), None)
            plot_curves(logger.records, Path(cfg.output_dir) / "curves.png", baseline)
        return TrainResult(steps=self.step, evals=evals, output_dir=cfg.output_dir)

    def train_step(self) -> dict[str, Any]:
        from recgym.agents.rollout import collect

        cfg = self.config
        t0 = time.perf_counter()
        # 1. rollouts: G completions for each of prompts_per_step training samples
        self.model.eval()
        indices = self.sampler.take(cfg.prompts_per_step)
        batch, rollout = collect(self.train_env, self.policy, sampling=self.sampling(self.step), indices=indices)
        # 2. advantages
        advantages = self.algorithm.advantages(batch)
        # 3. learning
        t1 = time.perf_counter()
        learn_stats = self.learn(batch, advantages)
        t_learn = time.perf_counter() - t1
        # 4. new weights to the policy
        sync_policy(self.policy, self.unwrapped_model)
        t_sync = time.perf_counter() - t1 - t_learn
        self.step += 1

        components = batch.reward_components
        record: dict[str, Any] = {
            "step": self.step,
            "reward": float(batch.rewards.mean()),
            "reward_std": float(batch.rewards.std()),
            "reward/format": rollout.get("reward/format"),
            "reward/accuracy": rollout.get("reward/accuracy"),
            "format_rate": float(np.mean(components["format_ok"])) if "format_ok" in components else None,
            "zero_std_group_frac": rollout["zero_std_group_frac"],
            "advantage_abs": float(np.abs(advantages).mean()),
            "completion_tokens": rollout["completion_len_mean"],
            "truncated_rate": rollout["clipped_ratio"],
            "learning_rate": float(self.scheduler.get_last_lr()[0]),
            **learn_stats,
            "time/generation": rollout["gen_seconds"],
            "time/reward": rollout["env_seconds"],
            "time/learning": t_learn,
            "time/weight_sync": t_sync,
            "time/step": time.perf_counter() - t0,
            "tokens_per_second": rollout["gen_tokens_per_second"],
            "data_position": self.sampler.position,
        }
        return record

    def learn(self, batch: RolloutBatch, advantages: np.ndarray) -> dict[str, float]:
        """Optimizer steps on the algorithm's loss over the rollout batch (micro-batches, inner epochs)."""
        cfg, device = self.config, self.accelerator.device
        t = {
            "prompt_ids": torch.as_tensor(batch.prompt_ids, device=device),
            "prompt_mask": torch.as_tensor(batch.prompt_mask, device=device),
            "completion_ids": torch.as_tensor(batch.completion_ids, device=device),
            "completion_mask": torch.as_tensor(batch.completion_mask, device=device),
        }
        mask = t["completion_mask"].float()
        adv = torch.as_tensor(advantages, dtype=torch.float32, device=device)
        total_sequences, total_tokens = len(batch), int(mask.sum())
        parts = list(micro_batches(len(batch), cfg.micro_batch_size))

        def logps(model: torch.nn.Module, sl: slice) -> torch.Tensor:
            return completion_logprobs(
                model, t["prompt_ids"][sl], t["prompt_mask"][sl], t["completion_ids"][sl],
                t["completion_mask"][sl], cfg.temperature,
            )

        # Logprobs at rollout time come from the learner itself before any update (not from the
        # policy backend, whose numerics differ); with one inner epoch they equal the new ones.
        old = ref = None
        with torch.no_grad():
            if cfg.num_inner_epochs > 1:
                old = torch.cat([logps(self.model, sl) for sl in parts])
            if self.algorithm.needs_reference:
                ref = torch.cat([self._ref_logps(logps, sl) for sl in parts])

        self.model.train()
        sums: dict[str, float] = {}
        updates = 0
        for _ in range(cfg.num_inner_epochs):
            for first in range(0, len(parts), self.micro_batches_per_update):
                group = parts[first : first + self.micro_batches_per_update]
                # the loss shares are normalized over the whole rollout batch; rescale to this update
                scale = total_sequences / sum(sl.stop - sl.start for sl in group)
                for k, sl in enumerate(group):
                    new = logps(self.model, sl)
                    inputs = LossInputs(
                        logprobs=new,
                        old_logprobs=(old[sl] if old is not None else new.detach()),
                        mask=mask[sl], advantages=adv[sl], total_sequences=total_sequences,
                        total_tokens=total_tokens, ref_logprobs=None if ref is None else ref[sl],
                        max_completion_length=cfg.max_new_tokens,
                    )
                    loss, stats = self.algorithm.loss(inputs)
                    sync = k == len(group) - 1
                    with self.accelerator.no_sync(self.model) if not sync else nullcontext():
                        self.accelerator.backward(loss * scale)
                    for key, value in stats.items():
                        sums[key] = sums.get(key, 0.0) + value / cfg.num_inner_epochs
                if cfg.max_grad_norm > 0:
                    norm = self.accelerator.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm)
                    sums["grad_norm"] = sums.get("grad_norm", 0.0) + float(norm)
                self.optimizer.step()
                self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
                updates += 1
        if "grad_norm" in sums:
            sums["grad_norm"] /= updates
        self.model.eval()
        return sums

    def _ref_logps(self, logps, sl: slice) -> torch.Tensor:
        if self.ref_model is not None:
            return logps(self.ref_model, sl)
        with self.unwrapped_model.disable_adapter():  # LoRA: the base model is the reference
            return logps(self.model, sl)

    # ---- evaluation ----
    def evaluate(self, logger: RunLogger | None = None, baselines: bool = False) -> dict[str, Any]:
        """Greedy decoding on the first ``eval_size`` validation samples (the same every time):
        MAE/RMSE (with the declared fallback where unparsed), coverage, format rate, reward."""
        from recgym.evaluation import evaluate

        cfg = self.config
        self.model.eval()
        sampling = SamplingParams(temperature=0.0, max_new_tokens=cfg.eval_max_new_tokens or cfg.max_new_tokens)
        result = evaluate(self.eval_env, self.policy, n=cfg.eval_size, sampling=sampling, baselines=baselines)
        record = eval_record(result, self.step)
        if logger is not None:
            logger.log(record)
            with (Path(cfg.output_dir) / "completions.jsonl").open("a") as f:
                for r in result.records[: cfg.log_completions]:
                    f.write(json.dumps({"step": self.step, "index": r["index"], "target": r["target"],
                                        "completion": r["completions"][0]}) + "\n")
        return record

    # ---- checkpoints ----
    def save_checkpoint(self) -> Path:
        cfg = self.config
        root = Path(cfg.output_dir) / "checkpoints"
        final = root / f"{CHECKPOINT_PREFIX}{self.step:06d}"
        with atomic_directory(final, replace=True) as tmp:  # a crash inside keeps the previous checkpoint
            self.unwrapped_model.save_pretrained(tmp / "model", safe_serialization=True)
            self.tokenizer.save_pretrained(tmp / "model")
            torch.save(
                {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                 "rng": rng_state()},
                tmp / "training_state.pt",
            )
            state = {"step": self.step, "data_position": self.sampler.position, "config": plain_values(cfg.to_dict())}
            (tmp / "trainer_state.json").write_text(json.dumps(state, indent=1))
        for old in list_checkpoints(cfg.output_dir)[: -cfg.save_total_limit or None]:
            shutil.rmtree(old, ignore_errors=True)
        return final

    def load_checkpoint(self, path: str | Path | None = None) -> bool:
        """Restore model (or adapter), optimizer, scheduler, RNG, step and data position."""
        if path is None:
            found = list_checkpoints(self.config.output_dir)
            if not found:
                return False
            path = found[-1]
        path = Path(path)
        state = json.loads((path / "trainer_state.json").read_text())
        load_weights(self.unwrapped_model, path / "model")
        training = torch.load(path / "training_state.pt", weights_only=False)
        self.optimizer.load_state_dict(training["optimizer"])
        self.scheduler.load_state_dict(training["scheduler"])
        set_rng_state(training["rng"])
        self.step = int(state["step"])
        self.sampler.position = int(state["data_position"])
        sync_policy(self.policy, self.unwrapped_model)
        return True


# --------------------------------------------------------------------------------------------
# Model, LoRA, policy plumbing.
# --------------------------------------------------------------------------------------------
def load_learner(name: str, dtype: str = "float32"):
    """A recgym model name, HF id or local path -> (model, tokenizer) for training."""
    from recgym.agents.models import load_model

    model, tokenizer = load_model(name, dtype=dtype)
    return model, tokenizer


def add_lora(model: torch.nn.Module, cfg: GRPOConfig) -> torch.nn.Module:
    from peft import LoraConfig, get_peft_model

    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    targets = [t for t in cfg.lora_target_modules if t in names]
    if not targets:
        raise ValueError(f"none of lora_target_modules {cfg.lora_target_modules} is in the model")
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=targets, task_type="CAUSAL_LM")
    return get_peft_model(model, lora)


def load_weights(model: torch.nn.Module, directory: Path) -> None:
    """Load a checkpoint's weights (full model or LoRA adapter) into ``model`` in place."""
    from safetensors.torch import load_file

    if (directory / "adapter_model.safetensors").exists():
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(model, load_file(str(directory / "adapter_model.safetensors")))
        return
    state: dict[str, torch.Tensor] = {}
    for file in sorted(directory.glob("*.safetensors")):
        state.update(load_file(str(file)))
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if "lm_head" not in k]  # tied embeddings are saved once
    if missing or unexpected:
        raise RuntimeError(f"checkpoint {directory} does not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]}")


def policy_weights(model: torch.nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """The learner's weights under the base model's names (LoRA merged in), for a vLLM push."""
    if hasattr(model, "merge_adapter"):
        model.merge_adapter()
        try:
            for name, tensor in model.get_base_model().state_dict().items():
                if "lora_" in name:
                    continue
                yield name.replace(".base_layer", ""), tensor.detach()
        finally:
            model.unmerge_adapter()
    else:
        yield from ((n, p.detach()) for n, p in model.state_dict().items())


def sync_policy(policy: Any, model: torch.nn.Module) -> None:
    """Give the policy the learner's current weights (no-op where they are shared)."""
    if hasattr(policy, "update_weights") and getattr(policy, "model", None) is not model:
        policy.update_weights(list(policy_weights(model)))


def build_policy(cfg: GRPOConfig, model: torch.nn.Module, tokenizer: Any):
    """The generation backend: HF shares the learner's module; vLLM loads the same weights."""
    from recgym.agents.models import model_path
    from recgym.agents.policies import make_policy

    if cfg.policy == "hf":
        return make_policy("hf", model=model, tokenizer=tokenizer, **cfg.policy_kwargs)
    return make_policy("vllm", model=str(model_path(cfg.model)), seed=cfg.seed, **cfg.policy_kwargs)


def train(config: GRPOConfig, resume: bool = False, **kwargs: Any) -> TrainResult:
    """``GRPOTrainer(config, **kwargs).train(resume)``."""
    return GRPOTrainer(config, **kwargs).train(resume=resume)


def eval_record(result: Any, step: int) -> dict[str, Any]:
    """A flat ``eval/*`` record from a :class:`recgym.evaluation.EvalResult`."""
    return {
        "step": step,
        **{f"eval/{k}": v for k, v in result.metrics.as_dict().items() if isinstance(v, int | float)},
        "eval/seconds": result.seconds,
        **{f"eval/baseline/{name}_mae": m["mae"] for name, m in result.baselines.items()},
    }


def comparison_table(rows: dict[str, dict[str, Any]], title: str = "validation, greedy decoding"):
    """A rich table of evaluation records (``eval/*`` keys) side by side, plus the classical
    baselines found in the last record, all on the same samples."""
    from rich.table import Table

    table = Table(title=title)
    for column in ("predictor", "n", "mean reward", "format rate", "coverage", "MAE", "RMSE", "MAE parsed"):
        table.add_column(column, justify="left" if column == "predictor" else "right", no_wrap=True)
    last: dict[str, Any] = {}
    for name, r in rows.items():
        table.add_row(
            name, _fmt(r.get("eval/n"), "{:d}"), _fmt(r.get("eval/mean_reward"), "{:.3f}"),
            _fmt(r.get("eval/format_rate"), "{:.0%}"), _fmt(r.get("eval/coverage"), "{:.0%}"),
            _fmt(r.get("eval/mae"), "{:.3f}"), _fmt(r.get("eval/rmse"), "{:.3f}"),
            _fmt(r.get("eval/mae_parsed"), "{:.3f}"),
        )
        last = r
    for key, value in last.items():
        if key.startswith("eval/baseline/"):
            name = key.removeprefix("eval/baseline/").removesuffix("_mae")
            table.add_row(f"[dim]{name} (baseline)[/]", _fmt(last.get("eval/n"), "{:d}"), "-", "-", "100%",
                          _fmt(value, "{:.3f}"), "-", "-")
    table.caption = "MAE/RMSE use the user's prior average (else item's, else global mean) where no rating parsed"
    return table
