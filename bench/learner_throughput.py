"""Seconds per learner update: forward + backward of the GRPO loss over one rollout batch, by
four ways of computing the completion tokens' logprobs, side by side on the same batch and model.

- ``today``: the per-row ``completion_logprobs`` the trainer used before ``shared_prompt``;
- ``per-row``: ``sequence_logprobs(shared_prompt=False)`` (per row, trimmed, lean logprobs);
- ``shared``: ``sequence_logprobs(shared_prompt=True)`` (each group's prompt computed once);
- ``TRL``: ``trl.GRPOTrainer.compute_loss`` (its ``_get_per_token_logps_and_entropies`` with its
  fused LM head) of a GRPOTrainer built on a copy of the model (tiny dataset, dummy reward).

The batch: ``--prompts`` prompts (random token ids, about P tokens, the second 10% shorter so the
batch has left padding) x G completions of 64 tokens; the micro-batch size is G (one group per
micro-batch, the layout ``GRPOConfig.micro_batch_size = group_size`` gives). Model: the embedded
SmolLM2-135M in float32, in train mode, with gradient checkpointing (``--no-gradient-checkpointing``
to run without: the per-row methods then hold the activations of G x (P + 64) tokens at once,
about 19 GB at G=8 and 1,500-token prompts). Each method first runs one untimed micro-batch of two
rows (warm-up), then ``--repeats`` timed updates, the methods taking turns (the fastest is kept).
Peak memory is the process's resident set above its level before the update (sampled every 5 ms,
freed heap handed back first), gradients included.

    python bench/learner_throughput.py                 # G in {4, 8}, prompts of ~300 and ~1,500 tokens
    python bench/learner_throughput.py --quick         # G=4, ~300-token prompts, one prompt
    python bench/learner_throughput.py --methods shared TRL --group-sizes 8 --prompt-tokens 1500
    python bench/learner_throughput.py --no-gradient-checkpointing --prompt-tokens 300
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import ctypes
import functools
import gc
import json
import os
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path

METHODS = ("today", "per-row", "shared", "TRL")
COMPLETION_TOKENS = 64


def make_batch(vocab: int, prompts: int, group_size: int, prompt_tokens: int, seed: int = 0) -> dict:
    """``prompts`` x ``group_size`` rows: left-padded prompts, 64-token completions."""
    import torch

    g = torch.Generator().manual_seed(seed)
    rows = prompts * group_size
    prompt_ids = torch.zeros(rows, prompt_tokens, dtype=torch.long)
    prompt_mask = torch.zeros(rows, prompt_tokens, dtype=torch.bool)
    for k in range(prompts):
        length = prompt_tokens - (prompt_tokens // 10) * (k % 2)
        ids = torch.randint(10, vocab, (length,), generator=g)
        group = slice(k * group_size, (k + 1) * group_size)
        prompt_ids[group, prompt_tokens - length:] = ids
        prompt_mask[group, prompt_tokens - length:] = True
    completion_ids = torch.randint(10, vocab, (rows, COMPLETION_TOKENS), generator=g)
    completion_mask = torch.ones(rows, COMPLETION_TOKENS, dtype=torch.bool)
    advantages = torch.randn(rows, generator=g)
    return {"prompt_ids": prompt_ids, "prompt_mask": prompt_mask, "completion_ids": completion_ids,
            "completion_mask": completion_mask, "advantages": advantages}


def recgym_update(model, logprobs_fn: Callable) -> Callable[[dict, int, int | None], None]:
    """Forward + backward of recgym's GRPO loss over the micro-batches of a batch."""
    from recgym.agents.algorithms import LossInputs, get_algorithm

    algorithm = get_algorithm("grpo")()

    def update(batch: dict, micro: int, limit: int | None = None) -> None:
        mask = batch["completion_mask"].float()
        total = len(mask) if limit is None else min(limit, len(mask))
        for start in range(0, total, micro):
            sl = slice(start, min(start + micro, total))
            new = logprobs_fn(model, batch["prompt_ids"][sl], batch["prompt_mask"][sl],
                              batch["completion_ids"][sl], batch["completion_mask"][sl])
            inputs = LossInputs(
                logprobs=new, old_logprobs=new.detach(), mask=mask[sl], advantages=batch["advantages"][sl],
                total_sequences=len(mask), total_tokens=int(mask.sum()),
                max_completion_length=COMPLETION_TOKENS,
            )
            algorithm.loss(inputs)[0].backward()

    return update


def trl_update(model, tokenizer, group_size: int, micro_batches: int, checkpointing: bool
               ) -> Callable[[dict, int, int | None], None]:
    """Forward + backward of ``trl.GRPOTrainer.compute_loss`` (loss_type "grpo", beta 0)."""
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    args = GRPOConfig(
        output_dir=tempfile.mkdtemp(prefix="bench_trl_"), per_device_train_batch_size=group_size,
        num_generations=group_size, max_completion_length=COMPLETION_TOKENS, beta=0.0, loss_type="grpo",
        use_cpu=True, bf16=False, report_to="none", save_strategy="no", logging_steps=1,
        gradient_checkpointing=checkpointing,
    )
    trainer = GRPOTrainer(
        model=model, reward_funcs=lambda completions, **_: [0.0] * len(completions), args=args,
        train_dataset=Dataset.from_dict({"prompt": ["hi"] * group_size}), processing_class=tokenizer,
    )
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = micro_batches

    def update(batch: dict, micro: int, limit: int | None = None) -> None:
        total = len(batch["advantages"]) if limit is None else limit
        for start in range(0, total, micro):
            sl = slice(start, min(start + micro, total))
            inputs = {k: v[sl] for k, v in batch.items()}
            inputs["prompt_mask"] = inputs["prompt_mask"].long()
            inputs["completion_mask"] = inputs["completion_mask"].long()
            trainer.compute_loss(trainer.model, inputs).backward()

    return update


def rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def release_free_memory() -> None:
    """Hand freed heap memory back to the OS, so the resident set measures live memory."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def timed(fn: Callable[[], None]) -> tuple[float, int]:
    """Seconds of ``fn()`` and its peak resident set above the level before it."""
    release_free_memory()
    base, peak, done = rss(), [0], threading.Event()

    def sample() -> None:
        while not done.wait(0.005):
            peak[0] = max(peak[0], rss())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    fn()
    seconds = time.perf_counter() - start
    done.set()
    sampler.join()
    return seconds, max(peak[0], rss()) - base


def bench(model, tokenizer, methods, group_size: int, prompt_tokens: list[int], prompts: int,
          repeats: int) -> list[dict]:
    """Every method on the same batches; with ``repeats`` > 1 the methods take turns (fairer under
    a varying load) and each keeps its fastest update."""
    from recgym.agents.learner.logprobs import completion_logprobs, sequence_logprobs

    fns = {"today": completion_logprobs,
           "per-row": lambda *a: sequence_logprobs(*a, shared_prompt=False),
           "shared": lambda *a: sequence_logprobs(*a, shared_prompt=True)}
    updates, learners = {}, {}
    for method in methods:
        if method == "TRL":
            learners[method] = copy.deepcopy(model)
            updates[method] = trl_update(learners[method], tokenizer, group_size, prompts,
                                         bool(getattr(model, "is_gradient_checkpointing", False)))
        else:
            learners[method] = model
            updates[method] = recgym_update(model, fns[method])
    results = []
    for length in prompt_tokens:
        batch = make_batch(model.config.vocab_size, prompts, group_size, length)
        tokens = int(batch["prompt_mask"].sum() + batch["completion_mask"].sum())
        runs: dict[str, list[tuple[float, int]]] = {m: [] for m in methods}
        for method in methods:  # warm-up: one micro-batch of two rows
            updates[method](batch, 2, limit=2)
            learners[method].zero_grad(set_to_none=True)
        for _ in range(repeats):
            for method in methods:
                runs[method].append(timed(functools.partial(updates[method], batch, group_size)))
                learners[method].zero_grad(set_to_none=True)
        seconds = {m: min(s for s, _ in r) for m, r in runs.items()}
        for method in methods:
            results.append({
                "group_size": group_size, "prompt_tokens": length, "method": method,
                "seconds": seconds[method], "tokens_per_s": tokens / seconds[method],
                "peak_mib": max(mem for _, mem in runs[method]) / 2**20,
                "vs_trl": seconds["TRL"] / seconds[method] if "TRL" in seconds else None,
                "vs_today": seconds["today"] / seconds[method] if "today" in seconds else None,
            })
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--group-sizes", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--prompt-tokens", type=int, nargs="+", default=[300, 1500])
    parser.add_argument("--prompts", type=int, default=2, help="prompts (groups) per rollout batch")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--repeats", type=int, default=1, help="timed updates per method (fastest kept)")
    parser.add_argument("--gradient-checkpointing", action=argparse.BooleanOptionalAction, default=True,
                        help="gradient checkpointing for every method (default: on)")
    parser.add_argument("--quick", action="store_true", help="G=4, ~300-token prompts, one prompt")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(argv)
    if args.quick:
        args.group_sizes, args.prompt_tokens, args.prompts = [4], [300], 1

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    warnings.filterwarnings("ignore")
    from rich.table import Table

    from recgym.agents.models import load_model
    from recgym.console import machine_description, make_console

    model, tokenizer = load_model("smollm2-135m-instruct")
    if args.gradient_checkpointing:
        model.gradient_checkpointing_enable()  # non-reentrant (transformers' default), the TRL copy too
    model.train()
    results = []
    for group_size in args.group_sizes:
        results += bench(model, tokenizer, args.methods, group_size, args.prompt_tokens, args.prompts,
                         args.repeats)
    results.sort(key=lambda r: (r["prompt_tokens"], r["group_size"]))

    where = machine_description()
    table = Table(title=f"Learner update (forward + backward), SmolLM2-135M float32, {args.prompts} "
                        f"prompt(s) x G completions of {COMPLETION_TOKENS} tokens, micro-batch G, gradient "
                        f"checkpointing {'on' if args.gradient_checkpointing else 'off'} ({where})")
    for col in ("G", "prompt tokens", "method", "s/update", "tokens/s", "vs TRL", "vs today", "peak MiB"):
        table.add_column(col, justify="left" if col == "method" else "right")
    for r in results:
        table.add_row(str(r["group_size"]), str(r["prompt_tokens"]), r["method"], f"{r['seconds']:.2f}",
                      f"{r['tokens_per_s']:.0f}", "-" if r["vs_trl"] is None else f"{r['vs_trl']:.2f}x",
                      "-" if r["vs_today"] is None else f"{r['vs_today']:.2f}x", f"{r['peak_mib']:.0f}")
    console = make_console()
    console.print(table)
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": where, "results": results}, indent=1))
    last = max(((r["group_size"], r["prompt_tokens"]) for r in results), default=None)
    speedup = next((r["vs_trl"] for r in results
                    if (r["group_size"], r["prompt_tokens"]) == last and r["method"] == "shared"), None)
    if last is not None and speedup is not None:
        print(f"learner speedup vs TRL (G={last[0]}, {last[1]}-token prompts): {speedup:.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
