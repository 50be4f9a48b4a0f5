"""RecOne's supervised fine-tuning on cold-start traces (:mod:`recgym.agents.teachers.cold_start`).

**Training** (:func:`train_sft`). TRL's ``SFTTrainer`` on the prompt/completion pairs, with the
loss on the completion tokens only, computed from logits of the completion positions alone (the
GRPO learner's :func:`~recgym.agents.learner.logprobs.sequence_logprobs`): the same loss as TRL's, without
the ``[rows, prompt + completion, vocab]`` logits and per-token entropy and accuracy it builds
(``bench/sft_step.py``). The output directory is a full checkpoint that the GRPO trainer starts
from (``model: <output_dir>``).

**Multi-turn rows** (a tool env's episodes: a ``completion`` of the assistant's turns with the tool
results between them) are tokenized by :func:`episode_tokens`, which replays the conversation
through the rollout's own :func:`~recgym.agents.rollout.episodes.run_episodes`: the token layout and
the loss mask are the ones GRPO trains multi-turn episodes on (the assistant's tokens and their
EOS; never the prompt or a tool result).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recgym.agents.config import ConfigMixin, check_trainable_layers
from recgym.agents.teachers.cold_start import (  # noqa: F401  (`recgym.agents.sft` kept these names)
    ColdStartConfig,
    ColdStartReport,
    make_cold_start_data,
    run_cold_start,
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
    """Rows whose prompt + completion is longer (in tokens) are skipped, never truncated: a cut row
    would teach a trace that never answers. The skipped rows are counted, printed and recorded in
    ``sft_log.json``; when every row is longer, training refuses to start."""
    dtype: str = "float32"
    """float32, or bfloat16 as mixed precision (float32 master weights and optimizer state, bfloat16
    autocast); float16 is refused (it needs loss scaling)."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass (TRL's default is on; recgym's is off: it costs a
    forward pass per step, and the embedded model's activations fit; turn it on for a large model)."""
    trainable_layers: int = 0
    """0: every weight trains; N > 0: only the top N transformer blocks and the final norm
    (``GRPOConfig.trainable_layers``)."""
    keep_freed_memory: bool = True
    """On CPU, keep the memory a step frees for the next one (``GRPOConfig.keep_freed_memory``): the
    demo's SFT step faults about a million pages in again without it, 100,000 with it."""
    use_lora: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    logging_steps: int = 1
    report_to: list[str] = field(default_factory=list)
    seed: int = 0

    def __post_init__(self) -> None:
        self.require(1, "per_device_train_batch_size", "gradient_accumulation_steps", "max_length", "logging_steps")
        self.require(0, "warmup_steps")
        self.require(0, "learning_rate", strict=True)
        if self.max_steps <= 0 and self.num_train_epochs <= 0:
            raise ValueError(f"num_train_epochs must be > 0 (or max_steps > 0), got {self.num_train_epochs}")
        if self.dtype == "float16":
            raise ValueError("dtype float16 is refused for SFT: float16 needs loss scaling, which recgym does not do; "
                             "use bfloat16 (mixed precision over float32 weights) or float32")
        if self.dtype not in ("float32", "bfloat16"):
            raise ValueError(f"dtype must be float32 or bfloat16 (mixed precision), got {self.dtype!r}")
        check_trainable_layers(self.trainable_layers, self.use_lora)


def read_sft_rows(path: str | Path) -> list[dict[str, Any]]:
    """The cold-start JSONL's rows, each with ``prompt`` and ``completion`` chat messages."""
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    if not rows:
        raise ValueError(f"{path} holds no training rows (did make-data keep any?)")
    for n, row in enumerate(rows, 1):
        completion = row.get("completion") if isinstance(row, dict) else None
        if not row.get("prompt") or not completion or completion[0].get("role") != "assistant":
            raise ValueError(f"{path}, row {n}: needs a prompt and a completion that starts with an assistant turn")
    return rows


def is_multi_turn(row: dict[str, Any]) -> bool:
    """A row whose completion holds more than one turn (a tool env's episode)."""
    return len(row["completion"]) > 1


def load_sft_data(path: str | Path, tokenizer: Any = None, max_length: int | None = None):
    """The cold-start JSONL as a ``datasets.Dataset``, and how many rows were skipped: ``prompt`` and
    ``completion`` for single-turn rows (TRL tokenizes them); ``input_ids`` and ``completion_mask``
    (:func:`episode_tokens`, with ``tokenizer``) when any row is a multi-turn episode. With
    ``max_length`` (and ``tokenizer``), rows longer than that many tokens, as TRL would tokenize them,
    are skipped."""
    from datasets import Dataset

    rows = read_sft_rows(path)
    total, multi = len(rows), any(is_multi_turn(r) for r in rows)
    if tokenizer is None and (multi or max_length is not None):
        raise ValueError(f"{path}: tokenizing its rows (multi-turn episodes, or to measure them against max_length) "
                         "needs the model's tokenizer")
    tokens = [episode_tokens(tokenizer, r["prompt"], r["completion"]) for r in rows] if multi else []
    if max_length is not None:  # single-turn rows: the length TRL's prompt/completion path gives them
        lengths = [len(t[0]) for t in tokens] if multi else [len(tokenizer.apply_chat_template(
            r["prompt"] + r["completion"], tokenize=True, return_dict=True)["input_ids"]) for r in rows]
        keep = [i for i, length in enumerate(lengths) if length <= max_length]
        if not keep:
            raise ValueError(f"{path}: all {total} rows are longer than max_length={max_length} tokens (prompt + "
                             f"completion; the shortest has {min(lengths)}): raise max_length")
        rows, tokens = [rows[i] for i in keep], [tokens[i] for i in keep] if multi else []
    if multi:
        data = {"input_ids": [t[0] for t in tokens], "completion_mask": [t[1] for t in tokens]}
    else:
        data = {"prompt": [r["prompt"] for r in rows], "completion": [r["completion"] for r in rows]}
    return Dataset.from_dict(data), total - len(rows)


class _ReplayPolicy:
    """Plays recorded assistant turns at the token level (their tokens, then EOS, as a model that
    stopped would have sampled them)."""

    supports_token_ids = True

    def __init__(self, tokenizer: Any, turns: list[str]) -> None:
        from recgym.agents.policies import PromptEncoder

        self.tokenizer, self.encoder, self._turns = tokenizer, PromptEncoder(tokenizer), iter(turns)

    def generate_from_ids(self, contexts, n=1, sampling=None):
        from recgym.agents.types import Completion

        out = []
        for ids in contexts:
            text = next(self._turns)
            own = [*self.tokenizer(text, add_special_tokens=False)["input_ids"], self.tokenizer.eos_token_id]
            out.append([Completion(text, list(ids), own, [0.0] * len(own), "stop")])
        return out


def episode_tokens(tokenizer: Any, prompt: list[dict[str, str]], completion: list[dict[str, str]]
                   ) -> tuple[list[int], list[int]]:
    """Token ids of a recorded conversation and its loss mask (1 on the assistant's own tokens),
    laid out by the rollout (:func:`~recgym.agents.rollout.episodes.run_episodes` replaying the
    turns; the mask is its ``Episode.own``). Messages after the last assistant turn are dropped."""
    from recgym.agents.rollout.episodes import run_episodes
    from recgym.agents.types import SamplingParams

    turns: list[tuple[str, list[dict[str, str]]]] = []
    for message in completion:
        if message["role"] == "assistant":
            turns.append((message["content"], []))
        else:
            turns[-1][1].append(message)
    played = iter(range(len(turns)))

    def step(actions):
        k = next(played)
        return [("", 0.0, k == len(turns) - 1, False, {"messages": turns[k][1]})]

    policy = _ReplayPolicy(tokenizer, [text for text, _ in turns])
    (episode,) = run_episodes(step, [{"messages": prompt}], policy, SamplingParams(temperature=0.0), token_level=True)
    return episode.context, [0] * len(episode.prompt_ids) + [int(own) for own in episode.own]


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

    from recgym.agents.learner.logprobs import sequence_logprobs

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

    if config.keep_freed_memory and not torch.cuda.is_available():
        from recgym.agents.learner.host_memory import keep_freed_memory

        keep_freed_memory()
    if model is None or tokenizer is None:
        from recgym.agents.models import load_model

        model, tokenizer = load_model(config.model, dtype="float32")  # master weights; bf16 is autocast
    if config.trainable_layers:
        from recgym.agents.learner.loading import train_top_layers

        train_top_layers(model, config.trainable_layers)
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
        gradient_checkpointing=config.gradient_checkpointing,
    )
    dataset, skipped = load_sft_data(config.data, tokenizer, config.max_length)
    if skipped:
        print(f"SFT: skipped {skipped} of {len(dataset) + skipped} rows longer than max_length={config.max_length} "
              "tokens (prompt + completion); raise max_length to train on them", file=sys.stderr, flush=True)
    trainer = _completion_logits_sft_trainer()(model=model, args=args, train_dataset=dataset,
                                               processing_class=tokenizer, peft_config=peft_config)
    trainer.sft_data = {"rows": len(dataset), "rows_skipped_over_max_length": skipped, "max_length": config.max_length}
    return trainer


def train_sft(config: SFTTrainConfig, model: Any = None, tokenizer: Any = None) -> Path:
    """Fine-tune on the cold-start data; returns the output directory (a full checkpoint). Its
    ``sft_log.json`` is the data's row counts (``build_sft_trainer``'s ``trainer.sft_data``), then
    TRL's log history."""
    trainer = build_sft_trainer(config, model, tokenizer)
    tokenizer = trainer.processing_class
    trainer.train()
    final = trainer.model
    if config.use_lora:
        final = final.merge_and_unload()  # a plain checkpoint the GRPO trainer loads by path
    out = Path(config.output_dir)
    final.save_pretrained(out)
    tokenizer.save_pretrained(out)
    from recgym.agents.run_log import json_text, write_text_atomic

    # written last and whole: its presence is what marks a finished SFT checkpoint (the demo's resume)
    write_text_atomic(out / "sft_log.json", json_text([trainer.sft_data, *trainer.state.log_history], indent=1))
    return out
