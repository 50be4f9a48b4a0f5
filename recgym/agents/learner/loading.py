"""Loading the learner for training: float32 master weights, mixed precision, LoRA, the
reference model.

**Precision.** Trainable weights and the optimizer state are always float32 (master weights).
``dtype: bfloat16`` is mixed precision: forward and backward run under ``torch.autocast`` in
bfloat16, frozen weights (the LoRA base, the reference model) are stored in bfloat16, and updates
too small for bfloat16's 8-bit mantissa still accumulate in the float32 weights. float16 is refused
(it needs loss scaling; bfloat16 has float32's range and needs none).
"""

from __future__ import annotations

import copy
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch

from recgym.agents.config import GRPOConfig, check_layer_count

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
    if cfg.trainable_layers:
        train_top_layers(model, cfg.trainable_layers)
    for p in model.parameters():
        if p.requires_grad and p.dtype != torch.float32:
            p.data = p.data.float()
    return model, tokenizer


def train_top_layers(model: torch.nn.Module, n: int) -> None:
    """Freeze all but the top ``n`` transformer blocks and the final norm: the embeddings (and an
    output head tied to them, as SmolLM2's is) and the lower blocks get ``requires_grad=False``."""
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    blocks = getattr(decoder, "layers", None)
    if not isinstance(blocks, torch.nn.ModuleList):
        raise ValueError(  # noqa: TRY004 - a config the model cannot take, not a wrong argument type
            f"trainable_layers needs a decoder with a .layers list of blocks (Llama, Qwen, Mistral, ...); "
            f"{type(model).__name__} has none: use trainable_layers: 0 or use_lora")
    check_layer_count(n, len(blocks))
    model.get_input_embeddings().requires_grad_(False)
    for block in blocks[: len(blocks) - n]:
        block.requires_grad_(False)


def add_lora(model: torch.nn.Module, cfg: GRPOConfig) -> torch.nn.Module:
    """Wrap ``model`` with peft LoRA adapters on ``cfg.lora_target_modules``: module names of the
    model, or ``["all-linear"]`` (peft's shorthand: every linear layer but the output head)."""
    from peft import LoraConfig, get_peft_model

    targets: str | list[str] = list(cfg.lora_target_modules)
    unknown = sorted(set(targets) - {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()})
    if targets == ["all-linear"]:
        targets = "all-linear"
    elif unknown or not targets:
        linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)})
        raise ValueError(f"lora_target_modules: {', '.join(unknown) or 'none given'} not in the model: name some of "
                         f"its linear modules ({', '.join(linear)}) or use ['all-linear']")
    elif (tied := {"embed_tokens", "lm_head"} & set(targets)) and getattr(model.config, "tie_word_embeddings", False):
        raise ValueError(f"lora_target_modules: {', '.join(sorted(tied))} cannot be adapted on a model with tied "
                         "embeddings (vLLM keeps one matrix for both and skips lm_head.weight): target the blocks' modules")
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=targets, task_type="CAUSAL_LM")
    return get_peft_model(model, lora, autocast_adapter_dtype=True)


def reference_model(model: torch.nn.Module, dtype: str) -> torch.nn.Module:
    """A frozen copy of the initial model for the KL term, stored in the compute dtype."""
    return copy.deepcopy(model).to(compute_dtype(dtype)).eval().requires_grad_(False)


def is_peft(model: torch.nn.Module) -> bool:
    return hasattr(model, "get_base_model") and hasattr(model, "disable_adapter")
