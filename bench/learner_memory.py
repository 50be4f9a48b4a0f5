"""Measured GPU memory of the learner at a training config's shapes, beside ``--estimate-memory``.

The model is the config's architecture with random weights (its ``config.json`` from the
estimate's built-in table, a local checkpoint or the hub cache: nothing is downloaded), built on
the GPU in the dtype the learner would load it in. A ``GRPOTrainer`` takes it as given, with a
stand-in policy that receives the exported weights (the path a colocated vLLM engine takes, the
LoRA merge included) and generates nothing. Then ``--steps`` calls of ``trainer.learn`` on one
rollout batch of ``--groups`` groups x ``group_size`` rows, each row filling the config's context:
a shared prompt of ``S - max_new_tokens`` tokens and ``max_new_tokens`` completion tokens
(random ids). The environment is the embedded synthetic world (the learner never reads it).

Printed: the estimate's learner rows (weights, gradients, AdamW, activations: everything but the
policy and the CUDA context) against PyTorch's peak allocated memory over the steps, the weights
after loading, the weight export's size and time, and seconds per learner call. vLLM's share is
not measured here. Without a GPU it runs the same steps on the CPU and measures no memory (a check
that the script still works).

    python bench/learner_memory.py --config examples/configs/reczero_yelp.yaml
    python bench/learner_memory.py --config examples/configs/recone_synthetic.yaml --steps 1
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from types import SimpleNamespace

GB = 1e9


class ExportOnlyPolicy:
    """Receives the learner's weights as a vLLM engine would, and counts them."""

    def __init__(self) -> None:
        self.tensors = self.bytes = 0
        self.seconds = 0.0
        self.names: list[str] = []

    def update_weights(self, weights) -> None:
        start = time.perf_counter()
        for name, tensor in weights:
            self.tensors += 1
            self.bytes += tensor.numel() * tensor.element_size()
            self.names.append(name)
        synchronize()
        self.seconds += time.perf_counter() - start

    def generate(self, *args, **kwargs):
        raise RuntimeError("bench/learner_memory.py measures the learner only")


def synchronize() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def gpu_gb(reading) -> float | None:
    """A ``torch.cuda`` memory reading in GB; None without a GPU."""
    import torch

    return round(reading() / GB, 2) if torch.cuda.is_available() else None


def fmt(gb: float | None) -> str:
    return "n/a (no GPU)" if gb is None else f"{gb:.1f}"


def rollout_batch(groups: int, group_size: int, prompt_tokens: int, completion_tokens: int, vocab: int, seed: int):
    """Random token ids packed as the trainer packs a rollout: each group shares one prompt."""
    import numpy as np

    from recgym.agents.rollout.batch import pack_batch
    from recgym.agents.types import Completion

    rng = np.random.default_rng(seed)
    completions = [
        Completion("", prompt.tolist(), rng.integers(10, vocab, size=completion_tokens).tolist(),
                   [0.0] * completion_tokens, "length")
        for prompt in rng.integers(10, vocab, size=(groups, prompt_tokens)) for _ in range(group_size)
    ]
    rewards = rng.normal(size=len(completions))
    return pack_batch(completions, rewards, [{}] * len(completions), group_size)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="a GRPO training config (YAML)")
    parser.add_argument("--steps", type=int, default=2, help="learner calls on the same batch (the first creates AdamW's state)")
    parser.add_argument("--groups", type=int, default=2, help="groups in the rollout batch")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(argv)

    import numpy as np
    import torch
    from rich.table import Table
    from transformers import AutoConfig, AutoModelForCausalLM

    from recgym.agents.config import GRPOConfig
    from recgym.agents.learner.loading import compute_dtype
    from recgym.agents.learner.memory import estimate_memory, resolve_model_config
    from recgym.agents.trainer import GRPOTrainer
    from recgym.console import machine_description, make_console

    cfg = GRPOConfig.from_yaml(args.config)
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    total_gib = torch.cuda.get_device_properties(device).total_memory / 2**30 if cuda else 80.0
    name = machine_description()
    model_config = resolve_model_config(cfg.model)
    estimate = estimate_memory(cfg, model_config, gpu_memory_gib=cfg.gpu_memory_gib or total_gib)
    learner_rows = [r for r in estimate.rows if r.counted and not r.name.startswith(("vLLM", "CUDA"))]
    seq = estimate.sequence_length

    hf_config = AutoConfig.for_model(**model_config)
    load_dtype = compute_dtype(cfg.dtype) if cfg.use_lora else torch.float32
    torch.manual_seed(cfg.seed)
    start = time.perf_counter()
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(hf_config, dtype=load_dtype)
    synchronize()
    built_s = time.perf_counter() - start
    weights_gb = gpu_gb(torch.cuda.memory_allocated)

    policy = ExportOnlyPolicy()
    tokenizer = SimpleNamespace(pad_token_id=0, eos_token_id=0)
    run = {**cfg.to_dict(), "env_id": "RecRating-Synthetic-v0", "env_kwargs": {}, "output_dir": "/tmp/learner_memory",
           "plot": False, "live_display": False, "save_interval": 0, "eval_interval": 0}
    trainer = GRPOTrainer(GRPOConfig(**run), model=model, tokenizer=tokenizer, policy=policy)
    after_init_gb = gpu_gb(torch.cuda.memory_allocated)

    batch = rollout_batch(args.groups, cfg.group_size, seq - cfg.max_new_tokens, cfg.max_new_tokens,
                          int(model_config["vocab_size"]), cfg.seed)
    advantages = (batch.rewards - batch.rewards.mean()) / (batch.rewards.std() + 1e-4)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    learn_s = []
    for _ in range(args.steps):
        synchronize()
        t = time.perf_counter()
        trainer.learn(batch, np.asarray(advantages, dtype=np.float32))
        synchronize()
        learn_s.append(time.perf_counter() - t)
    peak_gb = gpu_gb(torch.cuda.max_memory_allocated)
    reserved_gb = gpu_gb(torch.cuda.max_memory_reserved)

    estimated = sum(r.gb for r in learner_rows)
    table = Table(title=f"learner memory, {Path(args.config).name}: {cfg.model} ({estimate.num_parameters / 1e9:.2f}B, random weights), "
                        f"{cfg.dtype}{', LoRA r=' + str(cfg.lora_r) if cfg.use_lora else ''}, "
                        f"{args.groups} groups x {cfg.group_size} rows of {seq} tokens, micro-batch {cfg.micro_batch_size}; "
                        f"{name}")
    for col in ("", "estimate GB", "measured GB", "measured / estimate"):
        table.add_column(col, justify="left" if not col else "right")
    weights_row = next(r for r in learner_rows if r.name == "learner weights")
    table.add_row("learner weights (after loading, before LoRA)", f"{weights_row.gb:.1f}", fmt(weights_gb), "")
    for r in learner_rows:
        table.add_row(f"  {r.name}", f"{r.gb:.1f}", "", "")
    table.add_row("learner peak (PyTorch allocated, over the steps)", f"{estimated:.1f}", fmt(peak_gb),
                  "" if peak_gb is None else f"{peak_gb / estimated:.2f}")
    table.add_row("learner peak (PyTorch reserved)", "", fmt(reserved_gb), "")
    make_console().print(table)
    result = {
        "config": args.config, "device": name, "torch": torch.__version__,
        "model": cfg.model, "parameters": estimate.num_parameters, "sequence_length": seq,
        "estimate_rows": {r.name: round(r.gb, 2) for r in estimate.rows},
        "estimate_learner_gb": round(estimated, 2), "weights_after_loading_gb": weights_gb,
        "allocated_after_trainer_init_gb": after_init_gb, "peak_allocated_gb": peak_gb,
        "peak_reserved_gb": reserved_gb, "build_seconds": round(built_s, 1),
        "learn_seconds": [round(s, 2) for s in learn_s],
        "export": {"tensors": policy.tensors, "gb": round(policy.bytes / GB, 2), "seconds": round(policy.seconds, 2),
                   "lora_names_left": sum("lora" in n for n in policy.names)},
    }
    print(json.dumps(result, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
