"""The GRPO-family trainer, readable top to bottom (CleanRL style).

One training step:

1. every process takes its own ``prompts_per_step`` training samples (one shuffled pass over the
   split, epoch after epoch; the position is checkpointed) and ``collect``s ``group_size``
   completions each through its policy, with its own sampling seed;
2. the algorithm turns the rollout's rewards into advantages;
3. the learner computes the logprobs of the sampled tokens in micro-batches (each group's prompt
   once, ``shared_prompt``) and takes optimizer steps on the algorithm's loss, gradients averaged
   over processes;
4. the policy gets the new weights (the HF policy shares the learner's module; vLLM receives
   ``update_weights``);
5. every ``eval_interval`` steps the main process evaluates greedily (MAE/RMSE/coverage/format
   rate) on the same validation samples; every ``save_interval`` steps: an atomic checkpoint.

The learner's mechanics (precision, LoRA, weight export) are in :mod:`recgym.agents.learner`,
logprobs in :mod:`recgym.agents.learner.logprobs`, checkpoints in :mod:`recgym.agents.checkpoints`, and
what a run writes in :mod:`recgym.agents.run_log`.

``GRPOTrainer(config).train()`` runs it; ``recgym train grpo --config FILE`` is the same from the
shell, and ``torchrun --nproc_per_node N -m recgym.cli train grpo ...`` runs N data-parallel
processes (the global batch is ``N * prompts_per_step * group_size`` completions). A run writes
``metrics.jsonl`` (one line per step, plus ``eval/*`` lines), ``curves.png``, ``completions.jsonl``
and ``checkpoints/step-XXXXXX/``.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recgym.agents import checkpoints
from recgym.agents.algorithms import LossInputs, get_algorithm
from recgym.agents.algorithms.hook_checks import (
    checked_advantages,
    checked_after_update,
    checked_keep_groups,
    checked_loss,
    checked_shape_rewards,
)
from recgym.agents.collapse_guard import HEALTHY_DIR, CollapseGuard, keep_healthy, save_healthy
from recgym.agents.config import GRPOConfig, plain_values
from recgym.agents.learner.data_parallel import average_gradients
from recgym.agents.learner.host_memory import keep_freed_memory
from recgym.agents.learner.loading import autocast, load_learner, reference_model
from recgym.agents.learner.logprobs import micro_batches, sequence_logprobs
from recgym.agents.learner.weight_export import build_policy, sync_policy
from recgym.agents.rollout.prompt_sampler import PromptSampler
from recgym.agents.run_log import RunLogger, eval_record, is_eval_record, plot_curves
from recgym.agents.types import RolloutBatch, SamplingParams

#: Rollout metrics of multi-turn environments that a training step logs.
MULTI_TURN_METRICS = ("turns_mean", "tool_calls_mean", "invalid_turns_mean", "observation_tokens_mean")


@dataclass
class TrainResult:
    steps: int
    evals: list[dict[str, Any]] = field(default_factory=list)
    """Every evaluation record (``eval/*`` keys), the first before training (with ``eval_on_start``),
    the last after."""
    output_dir: str = ""
    records: list[dict[str, Any]] = field(default_factory=list)
    """Every line of ``metrics.jsonl`` (main process), training steps and evaluations."""
    eval_samples: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    """Per evaluation step, each sample's ``index``, ``target`` and ``prediction_or_fallback``
    (for paired comparisons between steps; this run's evaluations only, not a resumed run's earlier ones)."""


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
        from accelerate.utils import InitProcessGroupKwargs
        from transformers import get_scheduler

        import recgym.envs  # noqa: F401  (registers the environments)
        from recgym.envs.vector import make_group_vec

        self.config = cfg = config
        checkpoints.seed_everything(cfg.seed)
        # the other processes wait in a collective while the main one evaluates
        timeout = InitProcessGroupKwargs(timeout=timedelta(minutes=cfg.process_group_timeout_minutes))
        self.accelerator = Accelerator(cpu=not torch.cuda.is_available(), kwargs_handlers=[timeout])
        self.rank, self.world_size = self.accelerator.process_index, self.accelerator.num_processes
        self.is_main = self.accelerator.is_main_process
        self.device = self.accelerator.device
        if cfg.keep_freed_memory and self.device.type == "cpu":
            keep_freed_memory()

        # the algorithm first: a knob it refuses stops the run before anything loads
        self.algorithm = get_algorithm(cfg.algorithm).from_config(cfg, **cfg.algorithm_kwargs)

        # environments: the training split, and the validation split for evaluation
        self.train_env = make_group_vec(
            cfg.env_id, cfg.prompts_per_step, cfg.group_size, split=cfg.train_split, **cfg.env_kwargs
        )
        self.eval_env = gym.make(cfg.env_id, split=cfg.eval_split, **cfg.env_kwargs)
        self.sampler = PromptSampler.for_env(self.train_env, cfg.prompt_sampling, cfg.seed,
                                             block=cfg.prompts_per_step * self.world_size)

        # learner (float32 trainable weights, + LoRA), the algorithm's modules, reference model for the KL term
        model_given = model is not None
        if not model_given and self.device.type == "cuda":
            self.check_gpu_memory()
        self.model, self.tokenizer = load_learner(cfg, model, tokenizer)
        self.model.to(self.device)
        self.algorithm.setup(self.model, cfg)
        self.ref_model = None
        if self.algorithm.needs_reference and not cfg.use_lora:  # with LoRA: disable the adapter
            self.ref_model = reference_model(self.model, cfg.dtype)

        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(
            self.trainable, lr=cfg.learning_rate, betas=(cfg.adam_beta1, cfg.adam_beta2),
            eps=cfg.adam_epsilon, weight_decay=cfg.weight_decay,
        )
        self.scheduler = get_scheduler(
            cfg.lr_scheduler_type, self.optimizer, num_warmup_steps=cfg.warmup_steps,
            num_training_steps=max(cfg.max_steps * self.updates_per_step, 1),
        )

        # the policy that samples completions; a given model or policy may hold other weights
        self.policy = policy if policy is not None else build_policy(cfg, self.model, self.tokenizer, self.rank)
        if model_given or policy is not None:
            sync_policy(self.policy, self.model)
        self.step = 0
        self.eval_samples: dict[int, list[dict[str, Any]]] = {}
        self.guard = CollapseGuard(cfg.collapse_action, cfg.collapse_format_drop, cfg.collapse_min_prediction_std)
        self.warned: set[str] = set()
        self.warn_off_policy_updates()

    def check_gpu_memory(self) -> None:
        """Print the memory estimate and refuse a config that cannot fit, before loading anything."""
        from recgym.agents.learner.memory import check_memory
        from recgym.agents.models import model_path
        from recgym.console import make_console

        cfg = self.config
        declared = cfg.gpu_memory_gib or torch.cuda.get_device_properties(self.device).total_memory / 2**30
        shape = json.loads((model_path(cfg.model) / "config.json").read_text())
        estimate = check_memory(cfg, shape, gpu_memory_gib=declared)
        if self.is_main:
            make_console().print(estimate.table())

    def warn_off_policy_updates(self) -> None:
        """Where a rollout batch feeds several optimizer updates, what the importance ratio cannot
        correct: a loss without one (every update after the first is off-policy), and dropout."""
        n, name = self.updates_per_step, self.config.algorithm
        if n == 1:
            return
        if not self.algorithm.uses_importance_ratio:
            self.warn_once("off-policy", f"{name} has no importance ratio, yet each rollout batch feeds {n} optimizer "
                           "updates: all but the first learn off-policy uncorrected; for on-policy updates set "
                           "num_inner_epochs 1 and gradient_accumulation_steps 0")
        rate = dropout_rate(self.model)
        if rate > 0:
            self.warn_once("dropout", f"dropout {rate:g} (lora_dropout or the model's) with {n} optimizer updates per "
                           "rollout batch: the old logprobs are the sampling policy's, without dropout, so even the "
                           "first update's ratios are not 1 and some tokens are clipped; lora_dropout 0 (and a model "
                           "without dropout) gives exact ratios")

    def warn_once(self, key: str, message: str) -> None:
        """A warning from the main process, the first time ``key`` comes up in this run."""
        if self.is_main and key not in self.warned:
            self.warned.add(key)
            warnings.warn(message, stacklevel=2)

    # ---- sizes ----
    @property
    def batch_size(self) -> int:
        """Completions per process per step."""
        return self.config.prompts_per_step * self.config.group_size

    @property
    def micro_batch_size(self) -> int:
        """``micro_batch_size``, rounded up to whole groups for an algorithm that compares a group's rows."""
        cfg = self.config
        if self.algorithm.whole_groups:
            return -(-cfg.micro_batch_size // cfg.group_size) * cfg.group_size
        return cfg.micro_batch_size

    @property
    def micro_batches_per_update(self) -> int:
        n = -(-self.batch_size // self.micro_batch_size)
        gas = self.config.gradient_accumulation_steps
        return n if gas == 0 else min(gas, n)

    @property
    def updates_per_step(self) -> int:
        n = -(-self.batch_size // self.micro_batch_size)
        return self.config.num_inner_epochs * -(-n // self.micro_batches_per_update)

    def sampling(self, step: int, refill: int = 0) -> SamplingParams:
        """Per-step, per-process and per-refill seed, so a resumed run samples exactly what an
        uninterrupted one does."""
        cfg = self.config
        return SamplingParams(
            temperature=cfg.temperature, top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens,
            seed=cfg.seed * 1_000_003 + step + 100_003 * self.rank + 10_000_019 * refill,
        )

    # ---- the loop ----
    def train(self, resume: bool = False) -> TrainResult:
        cfg = self.config
        start = checkpoints.check_output_dir(cfg, resume, self.world_size)
        if start is not None:
            self.load_checkpoint(start)
            if self.is_main:  # a kill while the last save pruned leaves one checkpoint too many
                checkpoints.prune_checkpoints(cfg.output_dir, cfg.save_total_limit)
        logger = RunLogger(cfg, resume_step=self.step) if self.is_main else None
        if self.is_main:
            cfg.to_yaml(Path(cfg.output_dir) / "config.yaml")
            logger.print(f"{self.world_size} process(es): {self.world_size * self.batch_size} completions per step "
                         f"({self.world_size} x {cfg.prompts_per_step} prompts x {cfg.group_size})")
        evals = [r for r in logger.records if is_eval_record(r)] if logger else []
        try:
            stop = False
            if self.step == 0 and cfg.eval_on_start:
                evals += self.evaluate(logger, baselines=True)
                stop = self.guard_collapse(evals, logger)
            while self.step < cfg.max_steps and not stop:
                record = self.train_step()
                if logger:
                    logger.log(record)
                due = cfg.eval_interval and self.step % cfg.eval_interval == 0
                if due or self.step == cfg.max_steps:
                    evals += self.evaluate(logger, baselines=self.step == cfg.max_steps)
                    stop = self.guard_collapse(evals, logger)
                if (cfg.save_interval and self.step % cfg.save_interval == 0) or self.step == cfg.max_steps or stop:
                    self.save_checkpoint()
        finally:
            if logger:
                logger.close()
        if cfg.plot and logger:
            baseline = next((r["eval/baseline/user_mean_mae"] for r in evals if "eval/baseline/user_mean_mae" in r), None)
            plot_curves(logger.records, Path(cfg.output_dir) / "curves.png", baseline)
        return TrainResult(steps=self.step, evals=evals, output_dir=cfg.output_dir, eval_samples=self.eval_samples,
                           records=logger.records if logger else [])

    def train_step(self) -> dict[str, Any]:
        cfg = self.config
        t0 = time.perf_counter()
        # 1. rollouts: G completions for each of this process's prompts_per_step training samples
        self.model.eval()
        batch, rollout = self.rollout()
        # 2. advantages, from the rewards the algorithm shapes
        batch = checked_shape_rewards(self.algorithm, batch, cfg.max_new_tokens)
        advantages = checked_advantages(self.algorithm, batch)
        nonfinite = int(self.gather(torch.tensor([float((~np.isfinite(batch.rewards)).sum())])).sum())
        if nonfinite:
            self.warn_once("nonfinite rewards", f"step {self.step + 1}: {nonfinite} of {self.world_size * len(batch)} "
                           "rewards are NaN or inf; those completions get advantage 0 and no baseline counts them "
                           "(logged as nonfinite_rewards each step; warned once)")
        # 3. learning
        t1 = time.perf_counter()
        learn_stats = self.learn(batch, advantages)
        t_learn = time.perf_counter() - t1
        # 4. new weights to the policy
        sync_policy(self.policy, self.model)
        t_sync = time.perf_counter() - t1 - t_learn
        self.step += 1

        components = batch.reward_components
        mask = batch.completion_mask
        # (sum, count) pairs, pooled over the processes: the reward's parts (the first round's, as
        # the env's breakdown names them; ranking: reward/ndcg, reward/rank_of_target) over their
        # finite values, and the entropy over the model's tokens
        pooled = {f"reward/{key}": (float(values[np.isfinite(values)].astype(np.float64).sum()),
                                    int(np.isfinite(values).sum()))
                  for key, values in rollout["reward_components"].items()}
        entropy = (float(-(batch.old_logprobs * mask).sum(dtype=np.float64)), int(mask.sum()))
        local: dict[str, Any] = {
            **dict.fromkeys(pooled),  # in this order in the record, filled in by over_processes
            "format_rate": float(np.mean(components["format_ok"])) if "format_ok" in components else None,
            "zero_std_group_frac": rollout["zero_std_group_frac"],
            "groups_dropped": rollout["groups_dropped"],
            "refill_rounds": rollout["refill_rounds"],
            "entropy": None,
            "advantage_abs": float(np.abs(advantages).mean()),
            "completion_tokens": rollout["completion_len_mean"],
            "truncated_rate": rollout["clipped_ratio"],
            **learn_stats,
            "time/generation": rollout["gen_seconds"],
            "time/reward": rollout["env_seconds"],
            "time/learning": t_learn,
            "time/weight_sync": t_sync,
            "time/step": time.perf_counter() - t0,
            "tokens_per_second": rollout["gen_tokens_per_second"],
            # multi-turn episodes: turns, tool calls and tool-result tokens per episode
            **{key: rollout[key] for key in MULTI_TURN_METRICS if key in rollout},
        }
        rewards = self.gather(torch.as_tensor(rollout["rewards"], dtype=torch.float32))  # as sampled, unshaped
        rewards = rewards[torch.isfinite(rewards)]
        return {
            "step": self.step,
            "reward": float(rewards.mean()),
            "reward_std": float(rewards.std()),
            **({"nonfinite_rewards": nonfinite} if nonfinite else {}),
            **self.over_processes(local, {**pooled, "entropy": entropy}, summed=("groups_dropped",)),
            "learning_rate": float(self.scheduler.get_last_lr()[0]),
            "prompts": self.world_size * cfg.prompts_per_step,
            "sample_indices": self.gather(torch.as_tensor(rollout["indices"])).tolist(),
            "data_position": self.sampler.position,
        }

    def rollout(self) -> tuple[RolloutBatch, dict[str, Any]]:
        """This process's rollout batch. Groups the algorithm does not keep are replaced by groups
        of fresh prompts (up to ``max_refills`` rounds, for as long as any process is short), and any
        shortfall is filled with dropped groups, so every process learns from the same batch size.
        The metrics are the first round's (what the policy produced), plus the drop counts."""
        from recgym.agents.rollout.batch import take_groups
        from recgym.agents.rollout.single_turn import collect

        cfg = self.config
        kept: list[tuple[RolloutBatch, int, int]] = []  # (batch, group id, sample index)
        dropped: list[tuple[RolloutBatch, int, int]] = []
        refills, stats = 0, {}
        while True:
            indices = self.sampler.take_shard(cfg.prompts_per_step, self.rank, self.world_size)
            batch, round_stats = collect(self.train_env, self.policy, sampling=self.sampling(self.step, refills),
                                         indices=indices)
            if not stats:  # copies: the hooks may edit the batch's rewards in place
                stats = {**round_stats, "rewards": batch.rewards.copy(),
                         "reward_components": {k: v.copy() for k, v in batch.reward_components.items()}}
            else:
                stats["gen_seconds"] += round_stats["gen_seconds"]
                stats["env_seconds"] += round_stats["env_seconds"]
            for group, keep in enumerate(checked_keep_groups(self.algorithm, batch)):
                (kept if keep else dropped).append((batch, group, indices[group]))
            short = len(kept) < cfg.prompts_per_step
            if refills == self.algorithm.max_refills or not self.any_process(short):
                break
            refills += 1
        chosen = (kept + dropped)[: cfg.prompts_per_step]
        stats.update(groups_dropped=len(dropped), refill_rounds=refills, indices=[i for _, _, i in chosen])
        if refills == 0 and not dropped:
            return batch, stats
        return take_groups([(b, [g]) for b, g, _ in chosen], pad_token_id=self.tokenizer.pad_token_id or 0), stats

    def learn(self, batch: RolloutBatch, advantages: np.ndarray) -> dict[str, float]:
        """Optimizer steps on the algorithm's loss over the rollout batch (micro-batches, inner epochs)."""
        cfg, device = self.config, self.device
        if self.algorithm.learns_only_from_advantages and not self.any_process(bool(np.any(advantages))):
            self.skip_updates(self.updates_per_step)  # no gradient to compute; the loss is exactly 0
            return {"loss": 0.0, "grad_norm": 0.0, "skipped_updates": float(self.updates_per_step)}
        t = {
            "prompt_ids": torch.as_tensor(batch.prompt_ids, device=device),
            "prompt_mask": torch.as_tensor(batch.prompt_mask, device=device),
            "completion_ids": torch.as_tensor(batch.completion_ids, device=device),
            # every token after the prompt is attended to (a multi-turn episode's tool results too) ...
            "completion_mask": torch.as_tensor(batch.attention_mask, device=device),
        }
        # ... but the loss covers the model's own tokens only
        mask = torch.as_tensor(batch.completion_mask, device=device).float()
        adv = torch.as_tensor(advantages, dtype=torch.float32, device=device)
        group_ids = torch.as_tensor(batch.group_ids, device=device)
        parts = list(micro_batches(len(batch), self.micro_batch_size))
        per = self.micro_batches_per_update
        updates = [parts[first : first + per] for first in range(0, len(parts), per)]  # in one pass
        # each update's loss is normalized by its own rows and tokens; a token-level loss divides by
        # the mean of the processes' token counts, so that averaging their gradients gives the mean
        # over every token of the update
        counts = torch.stack([sum(mask[sl].sum() for sl in update) for update in updates])
        update_tokens = self.gather(counts).reshape(self.world_size, -1).mean(0).tolist()

        def logps(model: torch.nn.Module, sl: slice) -> torch.Tensor:
            with autocast(cfg.dtype, device):
                return sequence_logprobs(
                    model, t["prompt_ids"][sl], t["prompt_mask"][sl], t["completion_ids"][sl],
                    t["completion_mask"][sl], cfg.temperature, shared_prompt=cfg.shared_prompt,
                ).float() * mask[sl]

        # Old logprobs come from the learner itself before any update (not from the policy backend,
        # whose numerics differ). A batch that feeds one update has old == new; one that feeds
        # several must keep them, or every later update would see ratio 1 and no clipping. They are
        # computed in eval mode, as the policy sampled: with dropout, train mode would be a second
        # dropout draw against the new logprobs' (ratio noise x1.4, and no longer the sampler's).
        old = ref = None
        with torch.no_grad():
            if self.updates_per_step > 1:
                old = torch.cat([logps(self.model, sl) for sl in parts])
            if self.algorithm.needs_reference:
                ref = torch.cat([self._ref_logps(logps, sl) for sl in parts])

        self.model.train()
        sums: dict[str, float] = {}
        for _ in range(cfg.num_inner_epochs):
            for update, tokens in zip(updates, update_tokens, strict=True):
                rows = sum(sl.stop - sl.start for sl in update)
                for sl in update:
                    new = logps(self.model, sl)
                    inputs = LossInputs(
                        logprobs=new,
                        old_logprobs=(old[sl] if old is not None else new.detach()),
                        mask=mask[sl], advantages=adv[sl], total_sequences=rows, total_tokens=tokens,
                        ref_logprobs=None if ref is None else ref[sl],
                        max_completion_length=cfg.max_new_tokens, group_ids=group_ids[sl],
                        prompt_ids=t["prompt_ids"][sl], prompt_mask=t["prompt_mask"][sl],
                        completion_ids=t["completion_ids"][sl],
                    )
                    loss, stats = checked_loss(self.algorithm, inputs)
                    loss.backward()
                    for key, value in stats.items():  # the mean over updates
                        sums[key] = sums.get(key, 0.0) + value / self.updates_per_step
                average_gradients(self.trainable, self.world_size)
                norm = float(torch.nn.utils.clip_grad_norm_(
                    self.trainable, cfg.max_grad_norm if cfg.max_grad_norm > 0 else float("inf")))
                sums["grad_norm"] = sums.get("grad_norm", 0.0) + norm
                if not math.isfinite(norm):  # a NaN or inf in the loss: stepping would spoil every weight
                    self.skip_updates(1)
                    sums["nonfinite_grad_updates"] = sums.get("nonfinite_grad_updates", 0.0) + 1
                    self.warn_once("nonfinite gradient", f"step {self.step + 1}: the gradient is not finite (NaN or "
                                   "inf in the loss); the update is skipped (counted in nonfinite_grad_updates; "
                                   "warned once)")
                elif norm > 0:
                    self.optimizer.step()
                    self.scheduler.step()
                else:
                    self.skip_updates(1)
                    sums["skipped_updates"] = sums.get("skipped_updates", 0.0) + 1
                self.optimizer.zero_grad(set_to_none=True)
                for key, value in checked_after_update(self.algorithm).items():
                    sums[key] = sums.get(key, 0.0) + value / self.updates_per_step
        if "grad_norm" in sums:
            sums["grad_norm"] /= self.updates_per_step
        self.model.eval()
        return sums

    def skip_updates(self, n: int) -> None:
        """``n`` updates without signal (a gradient of exactly 0). Adam would still move every weight
        along its momentum from earlier steps, so the weights and the moments stay as they are; the
        schedule moves on, as it would have."""
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)`")
            for _ in range(n):
                self.scheduler.step()

    def _ref_logps(self, logps, sl: slice) -> torch.Tensor:
        if self.ref_model is not None:
            return logps(self.ref_model, sl)
        with self.model.disable_adapter():  # LoRA: the base model is the reference
            return logps(self.model, sl)

    # ---- processes ----
    def any_process(self, flag: bool) -> bool:
        """Whether ``flag`` holds on any process (so that every process takes the same branch)."""
        if self.world_size == 1:
            return flag
        return bool(self.gather(torch.tensor([float(flag)])).max() > 0)

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor`` from every process, concatenated (itself in a one-process run)."""
        return self.accelerator.gather(tensor.to(self.device)).cpu() if self.world_size > 1 else tensor.cpu()

    def over_processes(self, record: dict[str, Any], pooled: dict[str, tuple[float, int]],
                       summed: tuple[str, ...] = ()) -> dict[str, Any]:
        """``record``'s numbers as one process would log them for the union of the processes'
        batches (as many completions on each): the mean of the processes' values, the total for the
        ``summed`` keys (counts), and for each ``pooled`` key, a ``(sum, count)`` pair per process,
        the sum over all processes divided by their count (NaN where it is 0)."""
        keys = sorted(k for k, v in record.items() if isinstance(v, int | float))
        names = sorted(pooled)
        values = [float(record[k]) for k in keys] + [float(x) for k in names for x in pooled[k]]
        rows = self.gather(torch.tensor([values], dtype=torch.float64))
        means, totals = rows.mean(0).tolist(), rows.sum(0).tolist()
        combined = {k: record[k] for k in keys}
        if self.world_size > 1:
            combined = {k: type(record[k])(totals[i]) if k in summed else means[i] for i, k in enumerate(keys)}
        for j, k in enumerate(names):
            total, count = totals[len(keys) + 2 * j : len(keys) + 2 * j + 2]
            combined[k] = total / count if count > 0 else float("nan")
        return {**record, **combined}

    # ---- evaluation ----
    def evaluate(self, logger: RunLogger | None = None, baselines: bool = False) -> list[dict[str, Any]]:
        """Greedy decoding on the first ``eval_size`` validation samples (the same every time), by
        the main process: MAE/RMSE (with the declared fallback where unparsed), coverage, format
        rate, reward. Returns ``[record]`` on the main process, ``[]`` on the others."""
        from recgym.agents.evaluation import evaluate

        cfg = self.config
        self.model.eval()
        records = []
        if self.is_main:
            sampling = SamplingParams(temperature=0.0, max_new_tokens=cfg.eval_max_new_tokens or cfg.max_new_tokens)
            with autocast(cfg.dtype, self.device):
                result = evaluate(self.eval_env, self.policy, n=cfg.eval_size, sampling=sampling, baselines=baselines,
                                  batch_size=cfg.eval_batch_size)
            record = eval_record(result, self.step)
            records.append(record)
            self.eval_samples[self.step] = [{k: r[k] for k in ("index", "target", "prediction_or_fallback")}
                                            for r in result.records]
            if logger is not None:
                logger.log(record)
                logger.log_completions(self.step, result.records[: cfg.log_completions])
        self.accelerator.wait_for_everyone()
        return records

    def guard_collapse(self, evals: list[dict[str, Any]], logger: RunLogger | None) -> bool:
        """The collapse guard on the evaluation just made (``evals[-1]``, main process): logs a
        collapse and acts as ``collapse_action`` says. True when the run must end here; with
        ``restore`` the model then holds the last healthy evaluation's weights, and that evaluation
        is appended as this step's (greedy decoding of the same weights on the same samples)."""
        cfg = self.config
        reason = self.guard.check(evals[-1]) if self.is_main and evals else None
        collapsed = self.any_process(reason is not None)
        healthy_dir = Path(cfg.output_dir) / HEALTHY_DIR
        if not collapsed:
            if cfg.collapse_action == "restore" and self.is_main:
                save_healthy(self.model, cfg.output_dir, self.step)
            return False
        healthy = self.guard.healthy_step if self.is_main else None
        action = cfg.collapse_action
        if action == "restore" and self.is_main and healthy is None:
            action = "stop"  # the first evaluation already collapsed: nothing to go back to
        elif action == "restore" and self.is_main and not keep_healthy(cfg.output_dir, healthy):
            self.warn_once("no_healthy", f"collapse_action restore: no saved weights of step {healthy} in {healthy_dir} "
                           "(a killed run's later evaluation replaced them); stopping instead")
            action = "stop"
        if self.world_size > 1 and cfg.collapse_action == "restore":
            action = "stop" if self.any_process(action != "restore") else "restore"
        if logger:
            logger.log({"step": self.step, "guard/collapse": reason, "guard/action": action,
                        "guard/restored_step": healthy if action == "restore" else None})
            logger.print(f"collapse at step {self.step}: {reason}; "
                         + {"warn": "going on (collapse_action: warn)", "stop": "stopping the run",
                            "restore": f"restoring step {healthy}'s weights and stopping"}[action])
        if action == "warn":
            return False
        if action == "restore":
            self.accelerator.wait_for_everyone()
            checkpoints.load_weights(self.model, healthy_dir)
            sync_policy(self.policy, self.model)
            record = next((r for r in reversed(evals) if r["step"] == healthy and is_eval_record(r)), None)
            if self.is_main and record is not None:
                evals.append({**record, "step": self.step, "eval/restored_from_step": healthy})
                if healthy in self.eval_samples:
                    self.eval_samples[self.step] = self.eval_samples[healthy]
                if logger:
                    logger.log(evals[-1])
        return True

    # ---- checkpoints ----
    def save_checkpoint(self) -> Path:
        from accelerate.utils import gather_object

        cfg = self.config
        rng = [checkpoints.rng_state()]
        rng = gather_object(rng) if self.world_size > 1 else rng
        path = Path(cfg.output_dir) / "checkpoints" / f"{checkpoints.CHECKPOINT_PREFIX}{self.step:06d}"
        if self.is_main:
            path = checkpoints.save_checkpoint(
                cfg.output_dir, self.step, model=self.model, tokenizer=self.tokenizer,
                training_state={"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                                "algorithm": self.algorithm.state_dict()},
                trainer_state={"data_position": self.sampler.position, "config": plain_values(cfg.to_dict()),
                               "collapse_guard": self.guard.state_dict()},
                rng_states=rng, keep=cfg.save_total_limit,
            )
        self.accelerator.wait_for_everyone()
        return path

    def load_checkpoint(self, path: str | Path | None = None) -> bool:
        """Restore model (or adapter), optimizer, scheduler, this process's RNG, step and data position."""
        if path is None:
            found = checkpoints.list_checkpoints(self.config.output_dir)
            if not found:
                return False
            path = found[-1]
        state, training, rng = checkpoints.read_checkpoint(Path(path), self.model, self.rank, self.world_size)
        self.optimizer.load_state_dict(training["optimizer"])
        self.scheduler.load_state_dict(training["scheduler"])
        self.algorithm.load_state_dict(training["algorithm"])
        checkpoints.set_rng_state(rng)
        self.step = int(state["step"])
        self.sampler.position = int(state["data_position"])
        self.guard.load_state_dict(state.get("collapse_guard", {}))
        sync_policy(self.policy, self.model)
        # healthy_model may hold a killed run's weights from evaluations after this checkpoint: kept only
        # where they are the guard's healthy step, rebuilt where that step is the checkpoint's
        restoring = self.is_main and self.config.collapse_action == "restore"
        if restoring and not keep_healthy(self.config.output_dir, self.guard.healthy_step) \
                and self.guard.healthy_step == self.step:
            save_healthy(self.model, self.config.output_dir, self.step)
        return True


def dropout_rate(model: torch.nn.Module) -> float:
    """The largest dropout probability ``model`` applies in train mode (LoRA's ``lora_dropout``, a
    dropout layer, or the attention dropout of the model's config); 0 when there is none."""
    rates = [m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    rates.append(getattr(getattr(model, "config", None), "attention_dropout", 0.0) or 0.0)
    return float(max(rates))


def train(config: GRPOConfig, resume: bool = False, **kwargs: Any) -> TrainResult:
    """``GRPOTrainer(config, **kwargs).train(resume)``."""
    return GRPOTrainer(config, **kwargs).train(resume=resume)
