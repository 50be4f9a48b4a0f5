"""Data parallelism in the learner: gradients averaged over processes before every update."""

from __future__ import annotations

import torch


def average_gradients(parameters: list[torch.nn.Parameter], world_size: int) -> None:
    """Data parallelism: every process ends with the mean of all processes' gradients (one flat
    all-reduce; a parameter without a gradient counts as zeros so every rank sends the same shapes).

    The mean is written back into each ``.grad`` in place, so the gradients and the flat buffer are
    the most that is held at once (twice the gradients, not three times); a parameter that had no
    gradient gets its own copy of its slice (a view would keep the whole buffer alive)."""
    if world_size < 2:
        return
    import torch.distributed as dist

    flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in parameters])
    dist.all_reduce(flat)
    flat /= world_size
    offset = 0
    for p in parameters:
        mean = flat[offset : offset + p.numel()].view_as(p)
        if p.grad is None:
            p.grad = mean.clone()
        else:
            p.grad.copy_(mean)
        offset += p.numel()
    del flat


def end_process_group() -> None:
    """Destroy the default process group, once a run has finished on every rank (not after a
    failure, where another rank may still wait in a collective). Left to the interpreter's exit,
    gloo's worker threads can abort a rank (SIGABRT, "terminate called without an active
    exception"), and torchrun then reports a finished run as failed.

    Not while an in-process vLLM engine holds its groups (:func:`vllm_holds_process_groups`): the
    engine made or joined the default group, and its shutdown at exit destroys its own groups and
    then the default one; destroyed here first, that shutdown ended a finished run with a traceback
    ("Invalid process group specified")."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and not vllm_holds_process_groups():
        dist.destroy_process_group()


def vllm_holds_process_groups() -> bool:
    """Whether vLLM's distributed state in this process holds groups (an in-process engine, as
    ``VLLMPolicy`` runs it, sets it up and tears it down at its shutdown)."""
    import sys

    state = sys.modules.get("vllm.distributed.parallel_state")
    return state is not None and getattr(state, "_WORLD", None) is not None
