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
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args(argv)

    import torch
    from rich.table import Table
    from trl import SFTTrainer

    from recgym.agents.learner.loading import autocast
    from recgym.agents.sft import SFTTrainConfig, build_sft_trainer
    from recgym.console import machine_description, make_console
    from recgym.demo import DemoSettings, cold_start_data

    out = Path(tempfile.mkdtemp(prefix="bench_sft_"))
    settings = DemoSettings()
    report = cold_start_data(settings, out, settings.env_kwargs)
    config = SFTTrainConfig(data=report.path, output_dir=str(out / "sft"), per_device_train_batch_size=4,
                            max_length=1024, learning_rate=5e-5, lr_scheduler_type="constant")
    trl_loss, ours, ours_bf16 = ("TRL's SFTTrainer loss", "completion logits only (recgym)",
                                 "completion logits only, bfloat16 autocast")
    trainers = {trl_loss: build_sft_trainer(config), ours: build_sft_trainer(config), ours_bf16: build_sft_trainer(config)}
    losses = {trl_loss: SFTTrainer.compute_loss, ours: type(trainers[ours]).compute_loss,
              ours_bf16: type(trainers[ours]).compute_loss}
    optimizers = {name: torch.optim.AdamW(t.model.parameters(), lr=config.learning_rate) for name, t in trainers.items()}
    collate, data = trainers[ours].data_collator, trainers[ours].train_dataset
    batches = [collate([data[4 * i + j] for j in range(4)]) for i in range(args.steps + 1)]
    times: dict[str, list[float]] = {name: [] for name in trainers}
    for i, batch in enumerate(batches):
        for name, trainer in trainers.items():
            model = trainer.model.train()
            start = time.perf_counter()
            with autocast("bfloat16" if name == ours_bf16 else "float32", model.device):
                loss = losses[name](trainer, model, {k: v.to(model.device) for k, v in batch.items()})
            loss.backward()
            optimizers[name].step()
            model.zero_grad()
            if i:  # the first step is a warm-up
                times[name].append(time.perf_counter() - start)
    tokens = sum(int(b["attention_mask"].sum()) for b in batches[1:]) / args.steps
    machine = machine_description()
    table = Table(title=f"SFT step, SmolLM2-135M (float32 weights), 4 rows of ~{tokens / 4:.0f} tokens ({machine})")
    for col in ("loss", "s/step", "tokens/s", "speed-up"):
        table.add_column(col, justify="left" if col == "loss" else "right")
    base = sum(times[trl_loss]) / args.steps
    for name, ts in times.items():
        mean = sum(ts) / len(ts)
        table.add_row(name, f"{mean:.2f}", f"{tokens / mean:.0f}", f"{base / mean:.2f}x")
    make_console().print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
