"""Training checkpoints: written to a temporary folder, then renamed (atomic on one filesystem).

A checkpoint ``<output_dir>/checkpoints/step-XXXXXX/`` holds ``model/`` (full weights or the LoRA
adapter, with the tokenizer), ``training_state.pt`` (optimizer and scheduler), one
``rng_state_<rank>.pt`` per process (each rank samples with its own random streams) and
``trainer_state.json`` (step, data position, number of processes, config), written last: a folder
without it is not a checkpoint. Only the main process writes; every process reads.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recgym.cache import atomic_directory

CHECKPOINT_PREFIX = "step-"


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    root = Path(output_dir) / "checkpoints"
    if not root.is_dir():
        return []
    done = [p for p in root.iterdir() if p.name.startswith(CHECKPOINT_PREFIX) and (p / "trainer_state.json").exists()]
    return sorted(done, key=lambda p: int(p.name[len(CHECKPOINT_PREFIX):]))


def rng_state() -> dict[str, Any]:
    """This process's random streams: Python's, numpy's, torch's CPU one and, with CUDA, every GPU's."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore :func:`rng_state`'s streams (a checkpoint without ``cuda``, written before it was saved
    or on a machine without CUDA, leaves the GPUs' streams as they are)."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def save_checkpoint(
    output_dir: str | Path,
    step: int,
    *,
    model: torch.nn.Module,
    tokenizer: Any,
    training_state: dict[str, Any],
    trainer_state: dict[str, Any],
    rng_states: list[dict[str, Any]],
    keep: int,
) -> Path:
    """Write checkpoint ``step`` (every rank's RNG state in ``rng_states``) and keep the newest ``keep``."""
    final = Path(output_dir) / "checkpoints" / f"{CHECKPOINT_PREFIX}{step:06d}"
    with atomic_directory(final, replace=True) as tmp:  # a crash inside keeps the previous checkpoint
        model.save_pretrained(tmp / "model", safe_serialization=True)
        tokenizer.save_pretrained(tmp / "model")
        torch.save(training_state, tmp / "training_state.pt")
        for rank, state in enumerate(rng_states):
            torch.save(state, tmp / f"rng_state_{rank}.pt")
        state = {"step": step, "num_processes": len(rng_states), **trainer_state}
        (tmp / "trainer_state.json").write_text(json.dumps(state, indent=1))
    prune_checkpoints(output_dir, keep)
    return final


def prune_checkpoints(output_dir: str | Path, keep: int) -> None:
    """Remove all but the newest ``keep`` checkpoints (``keep`` 0 keeps every one)."""
    for old in list_checkpoints(output_dir)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)


#: ``GRPOConfig`` fields a resumed run may change: how long it runs, where and how it reports, and the
#: engine's resources (``policy_kwargs``: memory and context on another machine) and batch sizes.
RESUMABLE_CHANGES = ("max_steps", "output_dir", "live_display", "plot", "report_to", "log_completions",
                     "save_interval", "save_total_limit", "policy_kwargs", "eval_batch_size",
                     "process_group_timeout_minutes")


def check_output_dir(config: Any, resume: bool, num_processes: int | None = None) -> Path | None:
    """Whether ``config.output_dir`` can take this run, before anything loads; returns the checkpoint
    a resumed run starts from. A ValueError says what to do where a fresh run would mix with an
    earlier run's checkpoints (its own would be pruned in their favour, and a later resume would
    load theirs), where there is nothing to resume, where ``max_steps`` is below the checkpoint's
    step, or where the checkpoint's settings or process count differ (``num_processes``: by default
    ``WORLD_SIZE``, which torchrun and ``accelerate launch`` set)."""
    from recgym.agents.config import GRPOConfig, changed_fields, plain_values, resolve_algorithm

    out = Path(config.output_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"output_dir {out} is a file, not a folder: choose another output_dir")
    found = list_checkpoints(out)
    if not resume:
        if found:
            raise ValueError(f"output_dir {out} holds checkpoints of an earlier run (newest: {found[-1].name}): "
                             f"continue it with --resume (train(..., resume=True)), or remove {out / 'checkpoints'}, "
                             "or use another output_dir")
        return None
    if not found:
        raise ValueError(f"nothing to resume: no checkpoint in {out / 'checkpoints'}; start without --resume")
    state = json.loads((found[-1] / "trainer_state.json").read_text())
    _check_processes(found[-1], state, int(os.environ.get("WORLD_SIZE", "1")) if num_processes is None else num_processes)
    if config.max_steps < state["step"]:
        raise ValueError(f"{found[-1].name} is at step {state['step']}: max_steps {config.max_steps} would run nothing; "
                         f"resume with max_steps {state['step']} or more")
    saved = dict(state.get("config", {}))
    if isinstance(saved.get("algorithm"), str):  # saved as typed (relative) before recgym resolved plug-in paths
        saved["algorithm"] = resolve_algorithm(saved["algorithm"])
    now = {k: v for k, v in plain_values(config.to_dict()).items() if k not in RESUMABLE_CHANGES}
    if changed := changed_fields(GRPOConfig, now, saved):
        shown = ", ".join(f"{k}: {saved.get(k)!r} -> {now[k]!r}" for k in changed)
        raise ValueError(f"{found[-1]} was trained with other settings ({shown}): resume with its settings "
                         f"({found[-1] / 'trainer_state.json'}), or start a fresh run in another output_dir")
    return found[-1]


def read_checkpoint(path: Path, model: torch.nn.Module, rank: int, num_processes: int) -> tuple[dict, dict, dict]:
    """Load the weights into ``model``; return ``(trainer_state, training_state, this rank's RNG state)``."""
    state = json.loads((path / "trainer_state.json").read_text())
    _check_processes(path, state, num_processes)
    load_weights(model, path / "model")
    training = torch.load(path / "training_state.pt", weights_only=False)
    rng = torch.load(path / f"rng_state_{rank}.pt", weights_only=False)
    return state, training, rng


def _check_processes(path: Path, state: dict, num_processes: int) -> None:
    saved = int(state.get("num_processes", 1))
    if saved != num_processes:
        raise ValueError(f"{path} was written by {saved} process(es) and this run has {num_processes}; resume "
                         f"with {saved} (each process's sampling stream is in the checkpoint)")


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
