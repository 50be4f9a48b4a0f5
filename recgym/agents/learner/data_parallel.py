"""Data parallelism in the learner: gradients averaged over processes before every update."""

from __future__ import annotations

import torch


def average_gradients(parameters: list[torch.nn.Parameter], world_size: int) -> None:
    """Data parallelism: every process ends with the mean of all processes' gradients (one flat
    all-reduce; a parameter without a gradient counts as zeros so every rank sends the same shapes)."""
    if world_size < 2:
        return
    import torch.distributed as dist

    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in parameters]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world_size
    offset = 0
    for p, g in zip(parameters, grads):
        n = g.numel()
        p.grad = flat[offset : offset + n].view_as(p).clone()
        offset += n


def end_process_group() -> None:
    """Destroy the default process group, once a run has finished on every rank (not after a
    failure, where another rank may still wait in a collective). Left to the interpreter's exit,
    gloo's worker threads can abort a rank (SIGABRT, "terminate called without an active
    exception"), and torchrun then reports a finished run as failed."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
