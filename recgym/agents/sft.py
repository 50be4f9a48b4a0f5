"""RecOne's cold start: reasoning traces from a teacher, then supervised fine-tuning.

**Data** (:func:`make_cold_start_data`). For each training sample a teacher (any
:class:`~recgym.agents.types.Policy`: a larger local model, an OpenAI-compatible endpoint, or
offline the base model itself with several samples) writes the four-step reasoning. A trace is
*kept* when its format holds and its rating is within ``tolerance`` of the truth. Otherwise the
teacher is asked again with the true rating given as a hint (*rationalization*); a valid answer is
stored with the hint removed from the prompt. Samples with neither are *dropped*. Every row of
the JSONL output carries its provenance (kept / rationalized, teacher, sample index, env).

**Training** (:func:`train_sft`). TRL's ``SFTTrainer`` on the prompt/completion pairs, with the
loss on the completion tokens only, computed from logits of the completion positions alone (the
GRPO learner's :func:`~recgym.agents.logprobs.sequence_logprobs`): the same loss as TRL's, without
the ``[rows, prompt + completion, vocab]`` logits and per-token entropy and accuracy it builds
(``bench/sft_step.py``). The output directory is a full checkpoint that the GRPO trainer starts
from (``model: <output_dir>``).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from recgym.agents.config import ConfigMixin
from recgym.agents.types import Policy, SamplingParams

HINT = (
    "\n\nHint for writing this example: the user's actual rating was {rating:g}. Reason step by step "
    "towards it in the required format, as if you did not know it, and give {rating:g} in <{tag}>."
)


@dataclass
class ColdStartConfig(ConfigMixin):
    """Settings for ``recgym sft make-data``."""

    env_id: str = "RecRating-Synthetic-v0"
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    split: str = "train"
    num_samples: int = 64
    """Training samples to write traces for (a seeded random subset)."""
    teacher: str = "smollm2-135m-instruct"
    """Teacher model name/path (hf, vllm) or served model name (openai)."""
    teacher_policy: str = "hf"
    """hf, vllm or openai (an OpenAI-compatible server; set ``teacher_kwargs: {base_url: ...}``)."""
    teacher_kwargs: dict[str, Any] = field(default_factory=dict)
    samples_per_prompt: int = 4
    """Teacher attempts per sample (the first valid one is kept)."""
    tolerance: float = 0.5
    """A trace is kept when ``|rating - truth| <= tolerance`` and its format holds."""
    rationalize: bool = True
    """Ask again with the true rating as a hint when no attempt is kept."""
    temperature: float = 0.8
    max_new_tokens: int = 384
    output: str = "runs/sft/cold_start.jsonl"
    seed: int = 0


@dataclass
class ColdStartReport:
    path: str
    kept: int
    rationalized: int
    dropped: int
    seconds: float

    @property
    def total(self) -> int:
        return self.kept + self.rationalized + self.dropped

    def summary(self) -> str:
        n = max(self.total, 1)
        return (
            f"{self.total} samples: {self.kept} kept ({self.kept / n:.0%}), {self.rationalized} rationalized "
            f"({self.rationalized / n:.0%}), {self.dropped} dropped ({self.dropped / n:.0%}) -> {self.path}"
        )


def with_hint(messages: list[dict[str, str]], rating: float, tag: str) -> list[dict[str, str]]:
    """The prompt with the true rating appended to the last user message."""
    out = [dict(m) for m in messages]
    for m in reversed(out):
        if m["role"] == "user":
            m["content"] += HINT.format(rating=rating, tag=tag)
            break
    return out


def _first_valid(env: Any, index: int, completions: list[Any], tolerance: float) -> tuple[Any, dict] | None:
    """The first completion whose format holds and whose rating is within ``tolerance``."""
    for completion in completions:
        env.reset(options={"index": index})
        _, reward, _, _, info = env.step(completion.text)
        breakdown = info["reward_breakdown"]
        if breakdown["format_ok"] and info["abs_error"] is not None and info["abs_error"] <= tolerance:
            return completion, {**info, "reward": reward}
    return None


def make_cold_start_data(
    env: Any,
    teacher: Policy,
    indices: list[int],
    output: str | Path,
    *,
    samples_per_prompt: int = 4,
    tolerance: float = 0.5,
    rationalize: bool = True,
    sampling: SamplingParams | None = None,
    provenance: dict[str, Any] | None = None,
    batch_size: int = 8,
) -> ColdStartReport:
    """Write kept and rationalized traces for ``indices`` of ``env`` to ``output`` (JSONL)."""
    start = time.perf_counter()
    sampling = sampling or SamplingParams(temperature=0.8, max_new_tokens=384)
    core = env.unwrapped
    tag = core.template.tags[-1]
    targets = np.asarray(core.dataset.targets(core.split), dtype=float)
    counts: Counter[str] = Counter()
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".tmp")
    with tmp.open("w") as f:
        for first in range(0, len(indices), batch_size):
            chunk = indices[first : first + batch_size]
            prompts = [env.reset(options={"index": i})[1]["messages"] for i in chunk]
            attempts = teacher.generate(prompts, n=samples_per_prompt, sampling=sampling)
            pending = []
            for index, messages, completions in zip(chunk, prompts, attempts):
                found = _first_valid(env, index, completions, tolerance)
                if found is not None:
                    f.write(_row(index, messages, found, "kept", core, provenance) + "\n")
                    counts["kept"] += 1
                else:
                    pending.append((index, messages))
            if rationalize and pending:
                hinted = [with_hint(m, targets[i], tag) for i, m in pending]
                retries = teacher.generate(hinted, n=samples_per_prompt, sampling=sampling)
                for (index, messages), completions in zip(pending, retries):
                    found = _first_valid(env, index, completions, tolerance)
                    if found is not None:  # stored with the hint-free prompt
                        f.write(_row(index, messages, found, "rationalized", core, provenance) + "\n")
                        counts["rationalized"] += 1
                    else:
                        counts["dropped"] += 1
            else:
                counts["dropped"] += len(pending)
    tmp.replace(output)
    return ColdStartReport(str(output), counts["kept"], counts["rationalized"], counts["dropped"],
                           time.perf_counter() - start)


def _row(index: int, messages: list, found: tuple[Any, dict], how: str, core: Any, provenance: dict | None) -> str:
    completion, info = found
    return json.dumps({
        "prompt": messages,
        "completion": [{"role": "assistant", "content": completion.text}],
        "target_rating": info["target_rating"],
        "parsed_rating": info["parsed_rating"],
        "reward": info["reward"],
        "provenance": how,
        "index": int(index),
        "split": core.split,
        "dataset": core.dataset.name,
        **(provenance or {}),
    })


def run_cold_start(config: ColdStartConfig, teacher: Policy | None = None) -> ColdStartReport:
    """``recgym sft make-data``: build the env and teacher from ``config`` and write the JSONL."""
    import gymnasium as gym

    import recgym  # noqa: F401  (registers the environments)

    env = gym.make(config.env_id, split=config.split, **config.env_kwargs)
    n = len(env.unwrapped)
    rng = np.random.default_rng(config.seed)
    indices = sorted(rng.choice(n, size=min(config.num_samples, n), replace=False).tolist())
    if teacher is None:
        from recgym.agents.policies import make_policy

        teacher = make_policy(config.teacher_policy, config.teacher, **config.teacher_kwargs)
    sampling = SamplingParams(temperature=config.temperature, max_new_tokens=config.max_new_tokens, seed=config.seed)
    return make_cold_start_data(
        env, teacher, indices, config.output, samples_per_prompt=config.samples_per_prompt,
        tolerance=config.tolerance, rationalize=config.rationalize, sampling=sampling,
        provenance={"teacher": config.teacher, "teacher_policy": config.teacher_policy, "env_id": config.env_id},
    )


@dataclass
class SFTTrainConfig(ConfigMixin):
    """Settings for ``recgym sft train`` (TRL ``SFTTrainer``, loss on completions only)."""

    data: str = "runs/sft/cold_start.jsonl"
    """JSONL with ``prompt`` and ``completion`` chat-message columns (``sft make-data`` output)."""
    model: str = "smollm2-135m-instruct"
    output_dir: str = "runs/sft/model"
    """Where the fine-tuned checkpoint goes (use it as ``model:`` in the GRPO config)."""
    num_train_epochs: float = 2.0
    max_steps: int = -1
    """Overrides the epochs when > 0."""
    learning_rate: float = 1e-5
    lr_scheduler_type: str = "cosine"
    warmup_steps: float = 0.0
    """Warm-up steps, or a fraction of all steps when < 1."""
    per_device_train_batch_size: int = 4
    gradient_accumulation_steps: int = 1
    max_length: int = 2048
    """Longer prompt+completion pairs are truncated (from the right)."""
    dtype: str = "float32"
    """float32, or bfloat16 as mixed precision (float32 master weights and optimizer state, bfloat16
    autocast); float16 is refused (it needs loss scaling)."""
    use_lora: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    logging_steps: int = 1
    report_to: list[str] = field(default_factory=list)
    seed: int = 0


def load_sft_data(path: str | Path):
    """The cold-start JSONL as a ``datasets.Dataset`` with just ``prompt`` and ``completion``."""
    from datasets import Dataset

    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    if not rows:
        raise ValueError(f"{path} holds no training rows (did make-data keep any?)")
    return Dataset.from_dict({"prompt": [r["prompt"] for r in rows], "completion": [r["completion"] for r in rows]})


def split_prompt_completion(input_ids, attention_mask, labels, pad_token_id: int = 0):
    """Right-padded SFT rows (``labels`` -100 on the prompt) in the learner's layout: left-padded
    prompts, right-padded completions (from the first labelled token to the last), and the mask of
    the completion tokens that carry a label."""
    import torch

    labelled = (labels != -100) & attention_mask.bool()
    rows = range(len(input_ids))
    first = [int(labelled[i].nonzero()[0]) if labelled[i].any() else int(attention_mask[i].sum()) for i in rows]
    last = [int(labelled[i].nonzero()[-1]) + 1 if labelled[i].any() else first[i] for i in rows]
    width_p, width_c = max(first), max(max(e - b for b, e in zip(first, last)), 1)
    prompt_ids = input_ids.new_full((len(first), width_p), pad_token_id)
    prompt_mask = torch.zeros_like(prompt_ids, dtype=torch.bool)
    completion_ids = input_ids.new_full((len(first), width_c), pad_token_id)
    completion_mask = torch.zeros_like(completion_ids, dtype=torch.bool)
    scored = torch.zeros_like(completion_mask)
    for i, (b, e) in enumerate(zip(first, last)):
        prompt_ids[i, width_p - b:] = input_ids[i, :b]
        prompt_mask[i, width_p - b:] = attention_mask[i, :b].bool()
        completion_ids[i, : e - b] = input_ids[i, b:e]
        completion_mask[i, : e - b] = True
        scored[i, : e - b] = labelled[i, b:e]
    return prompt_ids, prompt_mask, completion_ids, completion_mask, scored


def _completion_logits_sft_trainer():
    """TRL's ``SFTTrainer`` whose loss reads logits at the completion positions only."""
    import torch
    from trl import SFTTrainer

    from recgym.agents.logprobs import sequence_logprobs

    class CompletionLogitsSFTTrainer(SFTTrainer):
        """The negative log-likelihood of the labelled completion tokens, summed and divided by
        their count over the whole accumulated batch, as TRL's own ``nll`` loss; it logs
        ``num_tokens`` but not TRL's per-token entropy and accuracy (they need every logit)."""

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if return_outputs:  # evaluation that wants logits: TRL's own path
                return super().compute_loss(model, inputs, True, num_items_in_batch)
            attention = inputs["attention_mask"]
            pad = getattr(self.processing_class, "pad_token_id", None) or 0
            prompt_ids, prompt_mask, completion_ids, completion_mask, scored = split_prompt_completion(
                inputs["input_ids"], attention, inputs["labels"], pad)
            logps = sequence_logprobs(model, prompt_ids, prompt_mask, completion_ids, completion_mask,
                                      shared_prompt=False)
            count = scored.sum() if num_items_in_batch is None else num_items_in_batch
            loss = -(logps * scored).sum() / torch.as_tensor(count, device=logps.device).clamp(min=1)
            if self.args.average_tokens_across_devices and num_items_in_batch is not None:
                loss = loss * self.accelerator.num_processes  # DDP averages the ranks' gradients
            if self.model.training:
                self._total_train_tokens += self.accelerator.gather_for_metrics(attention.sum()).sum().item()
                self._metrics["train"]["num_tokens"] = [self._total_train_tokens]
            return loss

    return CompletionLogitsSFTTrainer


def build_sft_trainer(config: SFTTrainConfig, model: Any = None, tokenizer: Any = None):
    """A TRL ``SFTTrainer`` on the cold-start data with the loss on completion tokens only."""
    import torch
    from trl import SFTConfig

    if config.dtype not in ("float32", "bfloat16"):
        raise ValueError(f"SFT dtype must be float32 or bfloat16 (mixed precision), got {config.dtype!r}; "
                         "float16 needs loss scaling: use bfloat16")
    if model is None or tokenizer is None:
        from recgym.agents.models import load_model

        model, tokenizer = load_model(config.model, dtype="float32")  # master weights; bf16 is autocast
    peft_config = None
    if config.use_lora:
        from peft import LoraConfig

        peft_config = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, task_type="CAUSAL_LM",
                                 target_modules="all-linear")
    args = SFTConfig(
        output_dir=config.output_dir,
        num_train_epochs=config.num_train_epochs,
        max_steps=config.max_steps,
        learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_scheduler_type,
        warmup_steps=config.warmup_steps,
        per_device_train_batch_size=config.per_device_train_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        max_length=config.max_length,
        completion_only_loss=True,
        logging_steps=config.logging_steps,
        report_to=config.report_to,
        save_strategy="no",
        seed=config.seed,
        use_cpu=not torch.cuda.is_available(),
        bf16=config.dtype == "bfloat16",
    )
    return _completion_logits_sft_trainer()(model=model, args=args, train_dataset=load_sft_data(config.data),
                                            processing_class=tokenizer, peft_config=peft_config)


def train_sft(config: SFTTrainConfig, model: Any = None, tokenizer: Any = None) -> Path:
    """Fine-tune on the cold-start data; returns the output directory (a full checkpoint)."""
    trainer = build_sft_trainer(config, model, tokenizer)
    tokenizer = trainer.processing_class
    trainer.train()
    final = trainer.model
    if config.use_lora:
        final = final.merge_and_unload()  # a plain checkpoint the GRPO trainer loads by path
    out = Path(config.output_dir)
    final.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "sft_log.json").write_text(json.dumps(trainer.state.log_history, indent=1))
    return out
