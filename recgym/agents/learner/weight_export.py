"""Handing the learner's weights to a policy (a vLLM engine, or nothing where HF shares them).

**LoRA.** :func:`policy_weights` builds ``W + delta_W`` as new tensors for the adapted layers, so the
frozen base is never modified (no merge/unmerge cycle that would drift it in low precision), and
the tensors stay valid however late the policy reads them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from recgym.agents.config import GRPOConfig
from recgym.agents.learner.loading import is_peft


def policy_weights(model: torch.nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """The learner's weights under the base model's names, for a policy's ``update_weights``.

    Without LoRA: the live parameters (detached, no copy). With LoRA: each adapted layer's
    ``W + delta_W`` (linear layers and embeddings alike) as a new tensor in ``W``'s dtype (the sum
    in float32); the base is untouched.
    """
    if not is_peft(model):
        yield from ((n, p.detach()) for n, p in model.state_dict().items())
        return
    from peft.tuners.lora import LoraLayer

    base = model.get_base_model()
    modules = dict(base.named_modules())
    for name, tensor in base.state_dict().items():
        if "lora_" in name:
            continue
        owner, _, leaf = name.rpartition(".")
        layer = modules.get(owner.removesuffix(".base_layer"))
        if leaf == "weight" and owner.endswith(".base_layer") and isinstance(layer, LoraLayer):
            merged = tensor.detach().float()
            for adapter in layer.active_adapters:
                if adapter in layer.lora_A or adapter in layer.lora_embedding_A:  # a Linear's, an Embedding's
                    merged = merged + layer.get_delta_weight(adapter).detach().float()
            tensor = merged.to(tensor.dtype)
        yield name.replace(".base_layer", ""), tensor.detach()


def sync_policy(policy: Any, model: torch.nn.Module) -> None:
    """Give the policy the learner's current weights (no-op where they are shared)."""
    if hasattr(policy, "update_weights") and getattr(policy, "model", None) is not model:
        policy.update_weights(policy_weights(model))


def build_policy(cfg: GRPOConfig, model: torch.nn.Module, tokenizer: Any, rank: int = 0):
    """The generation backend: HF shares the learner's module; vLLM loads the same weights."""
    from recgym.agents.models import model_path
    from recgym.agents.policies import make_policy

    if cfg.policy == "hf":
        return make_policy("hf", model=model, tokenizer=tokenizer, **cfg.policy_kwargs)
    kwargs = dict(cfg.policy_kwargs)
    if torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1 and torch.cuda.is_available():
        kwargs.setdefault("distributed_executor_backend", "external_launcher")  # each rank's engine on its GPU, as TRL's colocate mode
    return make_policy("vllm", model=str(model_path(cfg.model)), seed=cfg.seed + rank, **kwargs)
