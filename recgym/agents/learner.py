"""The learner's mechanics: loading it for training, LoRA, mixed precision, data-parallel
gradients, and handing its weights to a policy.

**Precision.** Trainable weights and the optimizer state are always float32 (master weights).
``dtype: bfloat16`` is mixed precision: forward and backward run under ``torch.autocast`` in
bfloat16, frozen weights (the LoRA base, the reference model) are stored in bfloat16, and updates
too small for bfloat16's 8-bit mantissa still accumulate in the float32 weights. float16 is refused
(it needs loss scaling; bfloat16 has float32's range and needs none).

**LoRA.** :func:`policy_weights` builds ``W + delta_W`` as new tensors for the adapted layers, so the
frozen base is never modified (no merge/unmerge cycle that would drift it in low precision), and
the tensors stay valid however late the policy reads them.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch

from recgym.agents.config import GRPOConfig

COMPUTE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def compute_dtype(name: str) -> torch.dtype:
    """The torch dtype of a training config's ``dtype`` (which refuses float16 with the reason)."""
    try:
        return COMPUTE_DTYPES[name]
    except KeyError:
        raise ValueError(f"dtype must be float32 or bfloat16 for training, got {name!r}") from None


def autocast(dtype: str, device: torch.device) -> AbstractContextManager:
    """The context every learner forward runs in: bfloat16 autocast, or nothing for float32."""
    if compute_dtype(dtype) == torch.float32:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=compute_dtype(dtype))


def load_learner(cfg: GRPOConfig, model: torch.nn.Module | None = None, tokenizer: Any = None):
    """``(model, tokenizer)`` ready to train: float32 trainable weights, LoRA and gradient
    checkpointing as configured. ``model`` given: used as it is, its trainable weights made float32."""
    from recgym.agents.models import load_model

    low = compute_dtype(cfg.dtype)
    if model is None or tokenizer is None:
        # a full fine-tune keeps float32 master weights; a LoRA base is frozen, so low precision is enough
        model, tokenizer = load_model(cfg.model, dtype=low if cfg.use_lora else torch.float32)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if cfg.use_lora:
        model = add_lora(model, cfg)
    for p in model.parameters():
        if p.requires_grad and p.dtype != torch.float32:
            p.data = p.data.float()
    return model, tokenizer


def add_lora(model: torch.nn.Module, cfg: GRPOConfig) -> torch.nn.Module:
    from peft import LoraConfig, get_peft_model

    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    targets = [t for t in cfg.lora_target_modules if t in names]
    if not targets:
        raise ValueError(f"none of lora_target_modules {cfg.lora_target_modules} is in the model")
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=targets, task_type="CAUSAL_LM")
    return get_peft_model(model, lora, autocast_adapter_dtype=True)


def reference_model(model: torch.nn.Module, dtype: str) -> torch.nn.Module:
    """A frozen copy of the initial model for the KL term, stored in the compute dtype."""
    return copy.deepcopy(model).to(compute_dtype(dtype)).eval().requires_grad_(False)


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


def is_peft(model: torch.nn.Module) -> bool:
    return hasattr(model, "get_base_model") and hasattr(model, "disable_adapter")


def policy_weights(model: torch.nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """The learner's weights under the base model's names, for a policy's ``update_weights``.

    Without LoRA: the live parameters (detached, no copy). With LoRA: each adapted layer's
    ``W + delta_W`` as a new tensor in ``W``'s dtype (the sum in float32); the base is untouched.
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
                if adapter in layer.lora_A:
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
