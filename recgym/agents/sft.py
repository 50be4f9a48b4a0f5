"""RecOne's supervised fine-tuning on cold-start traces (:mod:`recgym.agents.teachers.cold_start`).

**Training** (:func:`train_sft`). TRL's ``SFTTrainer`` on the prompt/completion pairs, with the
loss on the completion tokens only, computed from logits of the completion positions alone (the
GRPO learner's :func:`~recgym.agents.learner.logprobs.sequence_logprobs`): the same loss as TRL's, without
the ``[rows, prompt + completion, vocab]`` logits and per-token entropy and accuracy it builds
(``bench/sft_step.py``). The output directory is a full checkpoint that the GRPO trainer starts
from (``model: <output_dir>``).

**Multi-turn rows** (a tool env's episodes: a ``completion`` of the assistant's turns with the tool
results between them) are tokenized by :func:`~recgym.agents.sft_data.episode_tokens`, which replays the conversation
through the rollout's own :func:`~recgym.agents.rollout.episodes.run_episodes`: the token layout and
the loss mask are the ones GRPO trains multi-turn episodes on (the assistant's tokens and their
EOS; never the prompt or a tool result).

**Data checks** (:mod:`recgym.agents.sft_data`). A row that is not a chat-format
prompt/completion pair is refused with its file and line; rows from the valid or test split are
refused unless ``allow_eval_splits``; rows that train but look wrong (an answer the env's own
reward parses as broken or off its scale, empty assistant turns, duplicates, a cold-start hint left
in the prompt, several env_ids) are counted in one warning and in ``sft_log.json``.

**Output** (:func:`train_sft`). The checkpoint is written to a temporary folder renamed into
``output_dir``, ``sft_log.json`` last: a folder holding ``sft_log.json`` is finished. With
``save_steps`` the HF Trainer's ``checkpoint-N`` folders in ``output_dir`` let ``resume`` continue an
interrupted run; they are removed once it finishes.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recgym.agents.config import ConfigMixin, check_trainable_layers
from recgym.agents.sft_data import (
    check_chat_template,
    check_rows,
    check_splits,
    data_warning,
    load_sft_data,
    read_sft_rows,
)
from recgym.agents.teachers.cold_start import (  # noqa: F401  (`recgym.agents.sft` kept these names)
    HINT,
    ColdStartConfig,
    ColdStartReport,
    make_cold_start_data,
    run_cold_start,
)


@dataclass
class SFTTrainConfig(ConfigMixin):
    """Settings for ``recgym sft train`` (TRL ``SFTTrainer``, loss on completions only)."""

    data: str = "runs/sft/cold_start.jsonl"
    """JSONL with ``prompt`` and ``completion`` columns, each a list of ``{role, content}`` chat
    messages (``sft make-data`` output); plain-text rows are refused."""
    model: str = "smollm2-135m-instruct"
    """The model to fine-tune; its tokenizer needs a chat template (the rows are chat messages)."""
    output_dir: str = "runs/sft/model"
    """Where the fine-tuned checkpoint goes (use it as ``model:`` in the GRPO config). ``recgym sft
    train`` refuses a folder that holds anything else than an SFT run of its own (``--overwrite``
    replaces a finished or interrupted one, ``--resume`` continues an interrupted one)."""
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
    """Trackers for the HF Trainer's logs (``tensorboard``, ``wandb``, ...); their packages are checked
    before the model loads."""
    save_steps: int = 0
    """Every this many steps, save a resumable checkpoint (weights, optimizer, schedule and random
    state: the HF Trainer's ``output_dir/checkpoint-N``) that ``recgym sft train --resume`` continues
    from; 0 saves none, and an interrupted run must start over. They are removed once the run
    finishes."""
    save_total_limit: int = 1
    """How many of the newest ``save_steps`` checkpoints to keep."""
    allow_eval_splits: bool = False
    """Train on rows whose ``split`` is ``valid`` or ``test`` (refused by default: GRPO validates on
    those splits and ``recgym eval`` scores them, so training on them leaks the answers)."""
    env_id: str = ""
    """The environment whose answer format and rating scale the data checks use for rows that name no
    ``env_id`` ('': their answers are not checked). Rows from ``sft make-data`` name theirs."""
    seed: int = 0

    def __post_init__(self) -> None:
        self.require(1, "per_device_train_batch_size", "gradient_accumulation_steps", "max_length", "logging_steps",
                     "save_total_limit")
        self.require(0, "save_steps")
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


#: Written last into a finished SFT checkpoint: a folder holding it is finished (the demo and
#: ``recgym reproduce`` reuse such a folder).
SFT_LOG = "sft_log.json"
#: The settings of the run in an ``output_dir``, written when it starts: ``resume`` checks them.
SFT_CONFIG = "sft_config.yaml"
#: The data file's SHA-256 when the run in an ``output_dir`` started: ``resume`` refuses another file.
SFT_DATA_DIGEST = "sft_data.sha256"
#: ``SFTTrainConfig`` fields a resumed run may change: how long it runs, how it reports and saves.
RESUMABLE_CHANGES = ("output_dir", "max_steps", "num_train_epochs", "logging_steps", "report_to", "save_steps",
                     "save_total_limit", "keep_freed_memory")


def sft_checkpoints(output_dir: str | Path) -> list[Path]:
    """The HF Trainer's finished ``checkpoint-N`` folders in ``output_dir``, oldest first."""
    out = Path(output_dir)
    if not out.is_dir():
        return []
    found = [p for p in out.glob("checkpoint-*") if p.name[len("checkpoint-"):].isdigit()
             and (p / "trainer_state.json").is_file()]
    return sorted(found, key=lambda p: int(p.name[len("checkpoint-"):]))


def sft_output_state(output_dir: str | Path) -> str:
    """What ``output_dir`` holds: ``new`` (nothing), ``finished`` (an SFT checkpoint), ``interrupted``
    (an SFT run's ``checkpoint-N`` folders), ``started`` (an SFT run stopped before its first
    checkpoint), ``grpo`` (a GRPO run), ``model`` (a model ``sft train`` did not finish), ``file`` or
    ``other``."""
    out = Path(output_dir)
    if not out.exists():
        return "new"
    if not out.is_dir():
        return "file"
    names = {p.name for p in out.iterdir()}
    if SFT_LOG in names:
        return "finished"
    if SFT_CONFIG in names:
        return "interrupted" if sft_checkpoints(out) else "started"
    if "checkpoints" in names or "metrics.jsonl" in names:
        return "grpo"
    if "config.json" in names:
        return "model"
    return "other" if names else "new"


def check_sft_output_dir(config: SFTTrainConfig, resume: bool = False, overwrite: bool = False) -> Path | None:
    """Whether ``config.output_dir`` can take this run, before anything loads; returns the checkpoint a
    resumed run continues from. A ValueError says what to do where the run would write over something
    else than an SFT run of its own, over a finished or interrupted one without ``overwrite``, where
    there is nothing to resume, or where the checkpoint's settings differ."""
    from recgym.agents.config import changed_fields, plain_values

    out = Path(config.output_dir)
    state = sft_output_state(out)
    refused = {
        "file": f"output_dir {out} is a file, not a folder: choose another output_dir",
        "grpo": f"output_dir {out} holds a GRPO run (checkpoints/, metrics.jsonl): choose another output_dir for the "
                "SFT checkpoint",
        "model": f"output_dir {out} holds a model that `recgym sft train` did not finish (config.json, no {SFT_LOG}): "
                 "choose another output_dir",
        "other": f"output_dir {out} is not empty and holds no SFT run: choose a new or empty output_dir",
    }
    if state in refused:
        raise ValueError(refused[state])
    if not resume:
        if state == "finished" and not overwrite:
            raise ValueError(f"output_dir {out} holds a finished SFT checkpoint: choose another output_dir, or give "
                             "--overwrite to replace it")
        if state == "interrupted" and not overwrite:
            raise ValueError(f"output_dir {out} holds an interrupted SFT run (newest: {sft_checkpoints(out)[-1].name}): "
                             "continue it with --resume, or give --overwrite to start afresh, or choose another output_dir")
        return None
    if state == "finished":
        raise ValueError(f"output_dir {out} holds a finished SFT checkpoint: nothing to resume (start GRPO from it "
                         "with --model, or give --overwrite without --resume to train it again)")
    if state != "interrupted":
        raise ValueError(f"nothing to resume: no SFT checkpoint-N folder in {out} (save_steps > 0 saves them); "
                         "start without --resume")
    import yaml

    newest = sft_checkpoints(out)[-1]
    saved = yaml.safe_load((out / SFT_CONFIG).read_text()) or {}
    now = {k: v for k, v in plain_values(config.to_dict()).items() if k not in RESUMABLE_CHANGES}
    if changed := changed_fields(SFTTrainConfig, now, saved):
        shown = ", ".join(f"{k}: {saved.get(k)!r} -> {now[k]!r}" for k in changed)
        raise ValueError(f"{newest} was trained with other settings ({shown}): resume with its settings "
                         f"({out / SFT_CONFIG}), or start afresh with --overwrite or in another output_dir")
    digest = out / SFT_DATA_DIGEST
    if digest.is_file() and Path(config.data).is_file() and digest.read_text().strip() != data_digest(config.data):
        raise ValueError(f"{config.data} changed since {newest} was trained from it: resume with the data it was "
                         "trained on, or start afresh with --overwrite or in another output_dir")
    return newest


def data_digest(path: str | Path) -> str:
    """The SHA-256 of a data file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def check_report_to(names: list[str]) -> None:
    """A ValueError for a ``report_to`` tracker the HF Trainer does not know, or whose package is
    not installed (the Trainer imports it only once the model has loaded)."""
    from transformers.integrations.integration_utils import (
        INTEGRATION_TO_CALLBACK,
        get_available_reporting_integrations,
    )

    for name in names:
        if name in ("all", "none"):
            continue
        if name not in INTEGRATION_TO_CALLBACK:
            raise ValueError(f"report_to {name!r} is not a tracker the HF Trainer knows: choose among "
                             f"{', '.join(INTEGRATION_TO_CALLBACK)}")
        if name not in get_available_reporting_integrations():
            raise ValueError(f"report_to {name} needs the {name} package, which is not installed: pip install {name} "
                             f"(or leave {name} out of report_to)")


def build_sft_trainer(config: SFTTrainConfig, model: Any = None, tokenizer: Any = None):
    """A TRL ``SFTTrainer`` on the cold-start data with the loss on completion tokens only. The data
    is read, checked and measured with the tokenizer before the model loads (an
    :class:`SFTDataError` when it cannot train)."""
    import torch
    from trl import SFTConfig

    from recgym.agents.config import plain_values

    if config.keep_freed_memory and not torch.cuda.is_available():
        from recgym.agents.learner.host_memory import keep_freed_memory

        keep_freed_memory()
    if tokenizer is None:
        from recgym.agents.models import load_tokenizer

        tokenizer = load_tokenizer(config.model)
    check_chat_template(tokenizer, config.model)
    check_report_to(config.report_to)
    rows = read_sft_rows(config.data)
    other_splits = check_splits(config.data, rows, config.allow_eval_splits)
    checks = check_rows(rows, config.env_id)
    if warning := data_warning(config.data, checks, len(rows)):
        warnings.warn(warning, stacklevel=2)
    dataset, skipped = load_sft_data(config.data, tokenizer, config.max_length, rows=rows)
    if skipped:
        print(f"SFT: skipped {skipped} of {len(dataset) + skipped} rows longer than max_length={config.max_length} "
              "tokens (prompt + completion); raise max_length to train on them", file=sys.stderr, flush=True)
    if model is None:
        from recgym.agents.models import load_model

        model, _ = load_model(config.model, dtype="float32")  # master weights; bf16 is autocast
    if config.trainable_layers:
        from recgym.agents.learner.loading import train_top_layers

        train_top_layers(model, config.trainable_layers)
    peft_config = None
    if config.use_lora:
        from peft import LoraConfig

        peft_config = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, task_type="CAUSAL_LM",
                                 target_modules="all-linear")
    saving = {"save_strategy": "steps", "save_steps": config.save_steps} if config.save_steps else {"save_strategy": "no"}
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
        **saving,
        save_total_limit=config.save_total_limit,
        seed=config.seed,
        use_cpu=not torch.cuda.is_available(),
        bf16=config.dtype == "bfloat16",
        gradient_checkpointing=config.gradient_checkpointing,
    )
    trainer = _completion_logits_sft_trainer()(model=model, args=args, train_dataset=dataset,
                                               processing_class=tokenizer, peft_config=peft_config)
    trainer.sft_data = {"rows": len(dataset), "rows_skipped_over_max_length": skipped, "max_length": config.max_length,
                        "data": str(Path(config.data).resolve()), "data_sha256": data_digest(config.data),
                        "model": config.model,
                        "rows_from_eval_splits": other_splits, "data_checks": checks,
                        "settings": plain_values(config.to_dict())}
    return trainer


def train_sft(config: SFTTrainConfig, model: Any = None, tokenizer: Any = None, *, resume: bool = False,
              overwrite: bool = True) -> Path:
    """Fine-tune on the cold-start data; returns the output directory (a full checkpoint). Its
    ``sft_log.json`` is the data's row counts and checks, the data path, model and settings
    (``build_sft_trainer``'s ``trainer.sft_data``), then TRL's log history.

    ``output_dir`` must be new, empty or an SFT run of its own (:func:`check_sft_output_dir`):
    ``resume`` continues its newest ``checkpoint-N``; otherwise ``overwrite`` (on here; the command
    asks for ``--overwrite``) removes an earlier run there when this one starts. The checkpoint is
    written to a temporary folder renamed into place, ``sft_log.json`` last."""
    out = Path(config.output_dir)
    main = int(os.environ.get("RANK", "0")) == 0
    start = check_sft_output_dir(config, resume, overwrite)
    state = sft_output_state(out)
    found_empty = state == "new" and out.is_dir()  # a folder the user made: left in place if the run stops
    trainer = build_sft_trainer(config, model, tokenizer)  # refuses bad data before anything is written
    tokenizer = trainer.processing_class
    if main and start is None:
        if state in ("finished", "interrupted", "started"):
            shutil.rmtree(out)  # an earlier SFT run's (check_sft_output_dir refused anything else)
        out.mkdir(parents=True, exist_ok=True)
        config.to_yaml(out / SFT_CONFIG)
        (out / SFT_DATA_DIGEST).write_text(trainer.sft_data["data_sha256"] + "\n")
    try:
        trainer.train(resume_from_checkpoint=str(start) if start is not None else None)
    except BaseException as exc:
        if main:
            _report_stop(trainer, config, isinstance(exc, KeyboardInterrupt), created=not found_empty)
        raise
    final = trainer.model
    if config.use_lora:
        final = final.merge_and_unload()  # a plain checkpoint the GRPO trainer loads by path
    if not main:
        return out
    from recgym.agents.run_log import json_text
    from recgym.cache import atomic_directory

    with atomic_directory(out, replace=True) as tmp:
        final.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        for entry in list(out.iterdir()):  # tracker logs; checkpoint-N and the settings were for resume only
            if not entry.name.startswith("checkpoint-") and entry.name not in (SFT_CONFIG, SFT_DATA_DIGEST):
                shutil.move(str(entry), str(tmp / entry.name))
        # written last: its presence is what marks a finished SFT checkpoint (the demo's resume)
        (tmp / SFT_LOG).write_text(json_text([trainer.sft_data, *trainer.state.log_history], indent=1))
    return out


def _report_stop(trainer: Any, config: SFTTrainConfig, interrupted: bool, created: bool) -> None:
    """Say where an SFT run that stopped early left things; without a checkpoint, remove what it wrote."""
    out = Path(config.output_dir)
    how = "interrupted" if interrupted else "stopped by an error"
    where = f"step {trainer.state.global_step} of {trainer.state.max_steps}"
    if found := sft_checkpoints(out):
        print(f"SFT {how} at {where}: its newest checkpoint is {found[-1]}; continue it with `recgym sft train` "
              "and the same settings plus --resume", file=sys.stderr, flush=True)
        return
    if created:
        shutil.rmtree(out, ignore_errors=True)
    else:
        (out / SFT_CONFIG).unlink(missing_ok=True)
        (out / SFT_DATA_DIGEST).unlink(missing_ok=True)
    saves = f"save_steps {config.save_steps} had saved none yet" if config.save_steps else "save_steps 0 saves none"
    print(f"SFT {how} at {where}: nothing was saved ({saves}){f'; removed {out}' if created else ''}",
          file=sys.stderr, flush=True)
