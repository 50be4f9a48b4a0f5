"""Seconds per SFT step: TRL's own ``SFTTrainer`` loss against recgym's, which reads logits at the
completion positions only (``recgym.agents.sft``), side by side on the same batches and model.

The data is ``make demo``'s cold start (``recgym.demo.cold_start_data``): the synthetic world's
reasoning teacher writes traces for 96 training samples (short histories, ~300-token prompts; those
within 0.5 of the truth kept). Each
way trains a fresh copy of the embedded SmolLM2-135M (float32) for ``--steps`` timed steps of 4
rows after one untimed warm-up step, the ways taking turns step by step; recgym's loss also runs
under bfloat16 autocast over float32 weights (``dtype: bfloat16``, what ``make demo`` uses on a CPU
with native bfloat16).

    python bench/sft_step.py              # 3 timed steps each
    python bench/sft_step.py --steps 5
    python bench/sft_step.py --ways completion --keep_freed_memory false true  # glibc's memory handling / kept

``--keep_freed_memory`` (``SFTTrainConfig.keep_freed_memory``, on by default) runs the ways once per
value, in the order given; the setting is process-wide once on, so give false before true.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import yaml

#: --ways: (row name, recgym's loss or TRL's, dtype)
WAYS = {
    "trl": ("TRL's SFTTrainer loss", False, "float32"),
    "completion": ("completion logits only (recgym)", True, "float32"),
    "completion_bf16": ("completion logits only, bfloat16 autocast", True, "bfloat16"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--ways", nargs="+", choices=WAYS, default=list(WAYS),
                        help="the losses to time: TRL's, recgym's, recgym's under bfloat16 autocast")
    parser.add_argument("--keep_freed_memory", nargs="+", type=yaml.safe_load, default=[True], choices=[False, True],
                        help="SFTTrainConfig.keep_freed_memory (on CPU); process-wide once on, so give false before true")
    args = parser.parse_args(argv)

    import torch
    from rich.table import Table
    from trl import SFTTrainer

    from recgym.agents.learner.host_memory import keep_freed_memory
    from recgym.agents.learner.loading import autocast
    from recgym.agents.sft import SFTTrainConfig, build_sft_trainer
    from recgym.console import machine_description, make_console
    from recgym.demo import DemoSettings, cold_start_data

    out = Path(tempfile.mkdtemp(prefix="bench_sft_"))
    settings = DemoSettings()
    report = cold_start_data(settings, out, settings.env_kwargs)
    config = SFTTrainConfig(data=report.path, output_dir=str(out / "sft"), per_device_train_batch_size=4,
                            max_length=1024, learning_rate=5e-5, lr_scheduler_type="constant", keep_freed_memory=False)
    trainers = {way: build_sft_trainer(config) for way in args.ways}
    optimizers = {way: torch.optim.AdamW(t.model.parameters(), lr=config.learning_rate) for way, t in trainers.items()}
    first = trainers[args.ways[0]]
    collate, data = first.data_collator, first.train_dataset
    batches = [collate([data[4 * i + j] for j in range(4)]) for i in range(args.steps + 1)]
    times: dict[tuple[bool, str], list[float]] = {}
    for keep in args.keep_freed_memory:
        if keep:
            keep_freed_memory()
        for i, batch in enumerate(batches):
            for way, trainer in trainers.items():
                _, ours, dtype = WAYS[way]
                loss_of = type(trainer).compute_loss if ours else SFTTrainer.compute_loss
                model = trainer.model.train()
                start = time.perf_counter()
                with autocast(dtype, model.device):
                    loss = loss_of(trainer, model, {k: v.to(model.device) for k, v in batch.items()})
                loss.backward()
                optimizers[way].step()
                model.zero_grad()
                if i:  # the first step is a warm-up
                    times.setdefault((keep, way), []).append(time.perf_counter() - start)
    tokens = sum(int(b["attention_mask"].sum()) for b in batches[1:]) / args.steps
    machine = machine_description()
    table = Table(title=f"SFT step, SmolLM2-135M (float32 weights), 4 rows of ~{tokens / 4:.0f} tokens ({machine})")
    for col in ("loss", "freed memory", "s/step", "tokens/s", "speed-up"):
        table.add_column(col, justify="left" if col in ("loss", "freed memory") else "right")
    base = sum(next(iter(times.values()))) / args.steps
    for (keep, way), ts in times.items():
        mean = sum(ts) / len(ts)
        table.add_row(WAYS[way][0], "kept" if keep else "returned (glibc)", f"{mean:.2f}", f"{tokens / mean:.0f}",
                      f"{base / mean:.2f}x")
    make_console().print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
