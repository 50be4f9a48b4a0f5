"""GPU memory estimate of a training config, from the model's shape alone (no weights, no GPU).

``estimate_memory(config)`` adds up what one GPU holds during a GRPO-family run, in GB
(1 GB = 10^9 bytes), and compares it with the GPU memory the config declares
(``gpu_memory_gib``, in GiB = 2^30 bytes, converted):

- **learner weights**: trainable weights in float32 (4 bytes/param, the master copy under mixed
  precision); with LoRA the frozen base is in the compute dtype (``config.dtype``) and only the
  adapters are float32;
- **autocast weight copies**: under bfloat16/float16 autocast, the compute-dtype casts of the
  float32 trainable weights, cached for the forward and backward pass;
- **gradients**: float32, trainable parameters only; **AdamW state**: two float32 per trainable
  parameter;
- **activations** of one micro-batch of ``micro_batch_size`` rows of the full context ``S``
  (``policy_kwargs.max_model_len`` or ``max_context``, else the policy's default), per token per
  layer ``(20 h + 4 n_kv d_head + 8 I) x (compute-dtype bytes / 2)`` bytes (the tensors a
  Llama/Qwen2 block keeps for backward with memory-efficient attention: 16-bit q/k/v, attention
  output, SwiGLU's four ``I``-wide tensors, float32 RMSNorm internals); with gradient checkpointing
  only every layer's input (``h`` values) plus one layer's worth; plus the completion logits,
  ``micro_batch_size x max_new_tokens x vocab x 8`` bytes (the float32 log-softmax kept for
  backward and its gradient);
- **HF generation** (``policy: hf``), per ``generate`` call of ``R`` rows: the KV cache, ``R x S``
  tokens of keys and values, float32 for a full fine-tune (rollouts run without autocast, on the
  float32 weights) and the compute dtype with LoRA; plus the scores ``generate`` keeps
  (``output_scores``), ``R x max_new_tokens x vocab x 4`` bytes (float32; ``eval_max_new_tokens``
  if larger). ``R = max(batch_size, max(1, batch_size // group_size) x group_size)``: a rollout call
  takes whole groups, at least one, an evaluation call ``batch_size`` (``policy_kwargs.batch_size``,
  default 16). Generation and the backward pass do not overlap, so only the larger of it and the
  activations counts;
- **frozen copies of the initial model** the algorithm keeps without LoRA (its
  ``frozen_model_copies``: the reference model when ``beta > 0`` or for online DPO, PPO's critic
  body): each one's weights in the compute dtype (with LoRA the adapter-free base serves instead);
- **vLLM** (``policy: vllm``, colocated): ``gpu_memory_utilization`` (default 0.85 on a GPU) of the
  GPU's memory, which vLLM claims for its weights, activations and KV cache (with ``kv_cache_gib``:
  its weights plus that cache);
- **CUDA context and allocator overhead**: a fixed 1.5 GB.

The config fits when the total is at most 95% of the declared memory (5% margin for allocator
fragmentation). The numbers are an estimate of the peak, not a measurement; shared-prompt
computation and sequences shorter than the context only lower the real use.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recgym.agents.config import check_layer_count

if TYPE_CHECKING:
    from rich.table import Table

    from recgym.agents.config import GRPOConfig

GB = 1e9
GIB = 2**30
CUDA_OVERHEAD_GB = 1.5
"""CUDA context, cuBLAS workspaces and the caching allocator's slack, in GB."""
FIT_MARGIN = 0.05
"""Share of the declared GPU memory kept free: a config fits when total <= (1 - margin) x memory."""
LOGIT_BYTES = 8
"""Bytes per completion logit kept during the backward pass (float32 log-softmax and its gradient)."""
DEFAULT_VLLM_GPU_UTILIZATION = 0.85
"""VLLMPolicy's default ``gpu_memory_utilization`` on a GPU."""
DEFAULT_VLLM_MAX_MODEL_LEN = 4096
DEFAULT_HF_GENERATE_BATCH = 16
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def _qwen2(hidden: int, intermediate: int, layers: int, heads: int, kv_heads: int, vocab: int,
           tied: bool) -> dict[str, Any]:
    return {"model_type": "qwen2", "hidden_size": hidden, "intermediate_size": intermediate,
            "num_hidden_layers": layers, "num_attention_heads": heads, "num_key_value_heads": kv_heads,
            "vocab_size": vocab, "tie_word_embeddings": tied, "max_position_embeddings": 32768}


def _llama(hidden: int, intermediate: int, layers: int, heads: int, kv_heads: int, vocab: int,
           tied: bool, context: int) -> dict[str, Any]:
    return {"model_type": "llama", "hidden_size": hidden, "intermediate_size": intermediate,
            "num_hidden_layers": layers, "num_attention_heads": heads, "num_key_value_heads": kv_heads,
            "vocab_size": vocab, "tie_word_embeddings": tied, "max_position_embeddings": context,
            "attention_bias": False, "mlp_bias": False}


#: The shape fields of the published ``config.json`` of models this estimate knows by name.
KNOWN_MODELS: dict[str, dict[str, Any]] = {
    "Qwen/Qwen2.5-0.5B-Instruct": _qwen2(896, 4864, 24, 14, 2, 151936, tied=True),
    "Qwen/Qwen2.5-1.5B-Instruct": _qwen2(1536, 8960, 28, 12, 2, 151936, tied=True),
    "Qwen/Qwen2.5-3B-Instruct": _qwen2(2048, 11008, 36, 16, 2, 151936, tied=True),
    "Qwen/Qwen2.5-7B-Instruct": _qwen2(3584, 18944, 28, 28, 4, 152064, tied=False),
    "HuggingFaceTB/SmolLM2-135M-Instruct": _llama(576, 1536, 30, 9, 3, 49152, tied=True, context=8192),
    "meta-llama/Llama-3.1-8B-Instruct": _llama(4096, 14336, 32, 32, 8, 128256, tied=False, context=131072),
}
_ALIASES = {"smollm2-135m-instruct": "HuggingFaceTB/SmolLM2-135M-Instruct"}


@dataclass(frozen=True)
class ModelShape:
    """The sizes of a dense Llama/Qwen2-style decoder that the estimate needs."""

    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied_embeddings: bool
    qkv_bias: bool
    o_bias: bool
    mlp_bias: bool
    max_position_embeddings: int | None = None

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> ModelShape:
        """Read a Hugging Face ``config.json`` mapping (dense decoders only)."""
        if any(key in config for key in ("num_experts", "num_local_experts", "n_routed_experts")):
            raise ValueError("the memory estimate covers dense decoders only, not mixture-of-experts models")
        try:
            hidden, heads = int(config["hidden_size"]), int(config["num_attention_heads"])
            shape = cls(
                hidden=hidden,
                intermediate=int(config["intermediate_size"]),
                layers=int(config["num_hidden_layers"]),
                heads=heads,
                kv_heads=int(config.get("num_key_value_heads") or heads),
                head_dim=int(config.get("head_dim") or hidden // heads),
                vocab=int(config["vocab_size"]),
                tied_embeddings=bool(config.get("tie_word_embeddings", False)),
                qkv_bias=str(config.get("model_type", "")).startswith("qwen2")
                or bool(config.get("attention_bias", False)),
                o_bias=bool(config.get("attention_bias", False)),
                mlp_bias=bool(config.get("mlp_bias", False)),
                max_position_embeddings=config.get("max_position_embeddings"),
            )
        except KeyError as exc:
            raise ValueError(f"model config lacks {exc.args[0]!r}, needed for the memory estimate") from None
        return shape

    def linear_shapes(self) -> dict[str, tuple[int, int, bool]]:
        """Per-layer linear modules: name -> (in features, out features, has bias)."""
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        return {
            "q_proj": (self.hidden, q, self.qkv_bias),
            "k_proj": (self.hidden, kv, self.qkv_bias),
            "v_proj": (self.hidden, kv, self.qkv_bias),
            "o_proj": (q, self.hidden, self.o_bias),
            "gate_proj": (self.hidden, self.intermediate, self.mlp_bias),
            "up_proj": (self.hidden, self.intermediate, self.mlp_bias),
            "down_proj": (self.intermediate, self.hidden, self.mlp_bias),
        }

    @property
    def layer_parameters(self) -> int:
        """One decoder block's parameters (its linear modules and two RMSNorms)."""
        return sum(i * o + (o if bias else 0) for i, o, bias in self.linear_shapes().values()) + 2 * self.hidden

    @property
    def num_parameters(self) -> int:
        """Every parameter, the tied output embedding counted once."""
        embeddings = self.vocab * self.hidden * (1 if self.tied_embeddings else 2)
        return embeddings + self.layers * self.layer_parameters + self.hidden  # + the final norm

    def top_layers_parameters(self, n: int) -> int:
        """What ``trainable_layers: n`` trains: the top ``n`` blocks, the final norm, and an untied output head."""
        check_layer_count(n, self.layers)
        head = 0 if self.tied_embeddings else self.vocab * self.hidden
        return n * self.layer_parameters + self.hidden + head

    def lora_parameters(self, r: int, targets: list[str]) -> int:
        """LoRA's A (r x in) and B (out x r) for every targeted module (peft's names; ``all-linear``)."""
        linear = self.linear_shapes()
        extra = {"lm_head": (self.hidden, self.vocab), "embed_tokens": (self.vocab, self.hidden)}
        names = list(ALL_LINEAR) if targets in (["all-linear"], "all-linear") else list(targets)
        total = 0
        for name in names:
            if name in linear:
                i, o, _ = linear[name]
                total += self.layers * r * (i + o)
            elif name in extra:
                if self.tied_embeddings:  # as add_lora refuses it
                    raise ValueError(f"lora_target_modules: {name} cannot be adapted on a model with tied embeddings "
                                     "(vLLM keeps one matrix for both): target the blocks' modules")
                i, o = extra[name]
                total += r * (i + o)
            else:
                known = ", ".join([*linear, *extra, "all-linear"])
                raise ValueError(f"lora_target_modules: unknown module {name!r} for the estimate ({known})")
        return total

    def activation_bytes_per_token_layer(self, dtype_bytes: int) -> float:
        """Bytes one token keeps per decoder layer for the backward pass (see the module docstring)."""
        units = 20 * self.hidden + 4 * self.kv_heads * self.head_dim + 8 * self.intermediate
        return units * dtype_bytes / 2

    def kv_bytes_per_token(self, dtype_bytes: int) -> int:
        return 2 * self.layers * self.kv_heads * self.head_dim * dtype_bytes


def _hub_cached_config(repo_id: str) -> Path | None:
    """``config.json`` of a hub id from the local Hugging Face cache only (never the network)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    try:
        found = try_to_load_from_cache(repo_id, "config.json")
    except Exception:  # noqa: BLE001 - a malformed id is just "not cached"
        return None
    return Path(found) if isinstance(found, str) else None


def resolve_model_config(model: str) -> dict[str, Any]:
    """The ``config.json`` mapping of ``model``: a local checkpoint's JSON, the built-in table, or
    the local hub cache's JSON. Only JSON is read; weights never are."""
    path = Path(model).expanduser()
    if (path / "config.json").is_file():
        return json.loads((path / "config.json").read_text())
    if path.suffix == ".gguf":
        raise ValueError(f"{model}: the memory estimate reads a checkpoint's config.json, not a .gguf file")
    name = _ALIASES.get(model, model)
    by_lower = {key.lower(): key for key in KNOWN_MODELS}
    key = by_lower.get(name.lower()) or by_lower.get(name.lower() + "-instruct")
    if key is not None:
        return dict(KNOWN_MODELS[key])
    cached = _hub_cached_config(name)
    if cached is not None:
        return json.loads(cached.read_text())
    known = ", ".join(sorted([*KNOWN_MODELS, *_ALIASES]))
    raise ValueError(
        f"no shape known for model {model!r}: give a local checkpoint directory with config.json, "
        f"or one of {known}"
    )


@dataclass(frozen=True)
class MemoryRow:
    """One component of the estimate."""

    name: str
    gb: float
    detail: str
    counted: bool = True
    """False for a row that does not coincide with the peak (it is shown, not added)."""


@dataclass
class MemoryEstimate:
    """The components, their total, and the comparison with the declared GPU memory (all in GB)."""

    model: str
    num_parameters: int
    trainable_parameters: int
    rows: list[MemoryRow]
    gpu_memory_gib: float
    """The GPU memory compared against, as declared (GiB)."""
    sequence_length: int = 0
    """The context ``S`` a training row is assumed to fill (prompt plus completion)."""
    margin: float = FIT_MARGIN
    config: Any = field(default=None, repr=False)
    model_config: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def available_gb(self) -> float:
        """The declared GPU memory in GB."""
        return self.gpu_memory_gib * GIB / GB

    @property
    def total_gb(self) -> float:
        return sum(row.gb for row in self.rows if row.counted)

    @property
    def limit_gb(self) -> float:
        """The most the total may be: the declared memory less the margin."""
        return self.available_gb * (1 - self.margin)

    @property
    def fits(self) -> bool:
        return self.total_gb <= self.limit_gb

    def row(self, name: str) -> MemoryRow:
        return next(r for r in self.rows if r.name == name)

    def summary(self) -> str:
        verdict = "fits" if self.fits else "does NOT fit"
        return (
            f"{self.model}: estimated {self.total_gb:.1f} GB of {self.available_gb:.1f} GB "
            f"({self.gpu_memory_gib:g} GiB) declared, limit {self.limit_gb:.1f} GB with a "
            f"{self.margin:.0%} margin: {verdict}"
        )

    def advice(self) -> list[str]:
        """What to change so the config fits, each with the total it would give (empty when it fits)."""
        if self.fits or self.config is None:
            return []
        cfg = self.config
        out: list[str] = []

        def total_with(**changes: Any) -> float | None:
            """The total with ``changes``; None where the config would refuse them."""
            try:
                changed = dataclasses.replace(cfg, **changes)
                return estimate_memory(changed, self.model_config, gpu_memory_gib=self.gpu_memory_gib).total_gb
            except ValueError:
                return None

        changes: list[tuple[str, dict[str, Any]]] = []
        if not cfg.use_lora:  # LoRA replaces trainable_layers (the config refuses both)
            top = " and trainable_layers: 0" if cfg.trainable_layers else ""
            changes.append((f"use_lora: true{top} (LoRA r={cfg.lora_r}; only adapters train)",
                            {"use_lora": True, "trainable_layers": 0}))
        if not cfg.gradient_checkpointing:
            changes.append(("gradient_checkpointing: true", {"gradient_checkpointing": True}))
        if cfg.micro_batch_size > 1:
            changes.append(("micro_batch_size: 1", {"micro_batch_size": 1}))
        context_key = "max_model_len" if cfg.policy == "vllm" else "max_context"
        shorter = max(self.sequence_length // 2, cfg.max_new_tokens + 1)
        if shorter < self.sequence_length:
            changes.append((f"policy_kwargs.{context_key}: {shorter} (a shorter context; now {self.sequence_length})",
                            {"policy_kwargs": {**cfg.policy_kwargs, context_key: shorter}}))
        if cfg.beta > 0 and not cfg.use_lora:
            changes.append(("beta: 0 (no reference model)", {"beta": 0.0}))
        for text, change in changes:  # each one that the config takes and that lowers the total
            if (total := total_with(**change)) is not None and total < self.total_gb:
                out.append(f"{text}: {total:.1f} GB")
        if cfg.policy == "vllm" and "kv_cache_gib" not in cfg.policy_kwargs:
            room = self.limit_gb - (self.total_gb - self.row("vLLM (colocated)").gb)
            vllm_weights = self.num_parameters * 2 / GB
            if room > vllm_weights + 2:  # its bfloat16 weights and a few GB of KV cache at least
                util = math.floor(room / self.available_gb * 100) / 100
                out.append(f"policy_kwargs.gpu_memory_utilization <= {util:.2f} (vLLM's {vllm_weights:.1f} GB "
                           "of weights plus its KV cache live in that share)")
        smaller = "a smaller model (e.g. Qwen/Qwen2.5-3B-Instruct or Qwen/Qwen2.5-1.5B-Instruct), or " \
            if self.num_parameters > 2e9 else ""
        out.append(f"{smaller}a GPU with more memory")
        return out

    def table(self) -> Table:
        """A rich table of the components, the total and the verdict."""
        from rich.table import Table

        table = Table(title=f"GPU memory estimate: {self.model} ({self.num_parameters / 1e9:.2f}B params, "
                            f"{self.trainable_parameters / 1e9:.3f}B trainable)")
        table.add_column("component", no_wrap=True)
        table.add_column("GB", justify="right", no_wrap=True)
        table.add_column("how")
        for row in self.rows:
            gb = f"{row.gb:.2f}" if row.counted else f"({row.gb:.2f})"
            table.add_row(row.name, gb, row.detail if row.counted else f"{row.detail}; not counted")
        style = "bold green" if self.fits else "bold red"
        table.add_row("total", f"[{style}]{self.total_gb:.2f}[/]", f"[{style}]{'fits' if self.fits else 'does not fit'}[/]")
        table.caption = (
            f"1 GB = 10^9 bytes. Declared GPU memory {self.gpu_memory_gib:g} GiB = {self.available_gb:.2f} GB; "
            f"fits when the total is <= {self.limit_gb:.2f} GB ({self.margin:.0%} margin). An estimate, not a measurement."
        )
        return table


def _context_length(config: GRPOConfig, shape: ModelShape) -> tuple[int, str]:
    kwargs = config.policy_kwargs
    if kwargs.get("max_model_len"):
        return int(kwargs["max_model_len"]), "policy_kwargs.max_model_len"
    if kwargs.get("max_context"):
        return int(kwargs["max_context"]), "policy_kwargs.max_context"
    if config.policy == "vllm":
        return DEFAULT_VLLM_MAX_MODEL_LEN, "VLLMPolicy's default max_model_len"
    return int(shape.max_position_embeddings or 2048), "the model's max_position_embeddings (HFPolicy's default)"


def estimate_memory(
    config: GRPOConfig, model_config: dict[str, Any] | None = None, *, gpu_memory_gib: float | None = None
) -> MemoryEstimate:
    """Estimate the peak GPU memory of training ``config`` (see the module docstring for each term).

    Args:
        config: the training config.
        model_config: the model's ``config.json`` mapping; default: read from ``config.model``
            (a local checkpoint's JSON, the built-in table, or the local hub cache).
        gpu_memory_gib: the GPU's memory in GiB; default ``config.gpu_memory_gib``.

    Raises ``ValueError`` when neither gives the GPU memory or the model's shape is unknown.
    """
    memory_gib = gpu_memory_gib if gpu_memory_gib is not None else config.gpu_memory_gib
    if memory_gib is None:
        raise ValueError("the memory estimate needs gpu_memory_gib: the GPU's memory in GiB "
                         "(e.g. --gpu_memory_gib 79 for an 80 GB H100/A100, which CUDA reports as 79.2 GiB)")
    if memory_gib <= 0:
        raise ValueError(f"gpu_memory_gib must be > 0, got {memory_gib}")
    model_config = model_config if model_config is not None else resolve_model_config(config.model)
    shape = ModelShape.from_config(model_config)
    available = memory_gib * GIB / GB
    compute = DTYPE_BYTES[config.dtype]
    params = shape.num_parameters
    rows: list[MemoryRow] = []

    if config.use_lora:
        trainable = shape.lora_parameters(config.lora_r, config.lora_target_modules)
        rows.append(MemoryRow(
            "learner weights", (params * compute + trainable * 4) / GB,
            f"frozen base {params / 1e9:.3f}B x {compute} B ({config.dtype}) + LoRA r={config.lora_r} "
            f"adapters {trainable / 1e6:.1f}M x 4 B (float32)",
        ))
    else:
        trainable = shape.top_layers_parameters(config.trainable_layers) if config.trainable_layers else params
        rows.append(MemoryRow("learner weights", params * 4 / GB, f"{params / 1e9:.3f}B x 4 B (float32 master weights)"))
        if compute != 4:
            rows.append(MemoryRow("autocast weight copies", params * compute / GB,
                                  f"{params / 1e9:.3f}B x {compute} B ({config.dtype} casts cached by autocast)"))
    rows.append(MemoryRow("gradients", trainable * 4 / GB, f"{trainable / 1e9:.3f}B trainable x 4 B (float32)"))
    rows.append(MemoryRow("AdamW state", trainable * 8 / GB, f"{trainable / 1e9:.3f}B trainable x 2 x 4 B (float32)"))

    seq, seq_source = _context_length(config, shape)
    tokens = config.micro_batch_size * seq
    per_layer = shape.activation_bytes_per_token_layer(compute)
    if config.gradient_checkpointing:
        hidden_bytes = tokens * shape.hidden * compute * shape.layers + tokens * per_layer
        how = (f"{config.micro_batch_size} x {seq} tokens: {shape.layers} layer inputs x {shape.hidden} x {compute} B "
               f"+ one layer's {per_layer:,.0f} B/token (gradient checkpointing)")
    else:
        hidden_bytes = tokens * per_layer * shape.layers
        how = f"{config.micro_batch_size} x {seq} tokens x {shape.layers} layers x {per_layer:,.0f} B/token/layer"
    logits = config.micro_batch_size * config.max_new_tokens * shape.vocab * LOGIT_BYTES
    activations = (hidden_bytes + logits) / GB
    rows.append(MemoryRow(
        "activations", activations,
        f"{how} (S from {seq_source}); + logits {config.micro_batch_size} x {config.max_new_tokens} x "
        f"{shape.vocab} x {LOGIT_BYTES} B",
    ))
    if config.policy == "hf":
        per_call = int(config.policy_kwargs.get("batch_size", DEFAULT_HF_GENERATE_BATCH))
        gen_rows = max(per_call, max(1, per_call // config.group_size) * config.group_size)
        steps = max(config.max_new_tokens, config.eval_max_new_tokens or 0)
        kv_dtype = compute if config.use_lora else 4  # a full fine-tune samples with its float32 weights
        kv, scores = gen_rows * seq * shape.kv_bytes_per_token(kv_dtype), gen_rows * steps * shape.vocab * 4
        generation = (kv + scores) / GB
        rows.append(MemoryRow(
            "HF generation", generation,
            f"{gen_rows} rows x ({seq} tokens x {shape.kv_bytes_per_token(kv_dtype):,} B/token KV cache + "
            f"{steps} x {shape.vocab} x 4 B float32 scores); not at the same time as the activations: the larger counts",
            counted=generation > activations,
        ))
        if generation > activations:
            rows[-2] = dataclasses.replace(rows[-2], counted=False)
    if not config.use_lora:
        from recgym.agents.algorithms import get_algorithm

        algorithm = get_algorithm(config.algorithm).from_config(config, **config.algorithm_kwargs)
        for name, purpose in algorithm.frozen_model_copies.items():
            rows.append(MemoryRow(name, params * compute / GB,
                                  f"{params / 1e9:.3f}B x {compute} B ({config.dtype}), {purpose} ({config.algorithm})"))
    if config.policy == "vllm":
        if "kv_cache_gib" in config.policy_kwargs and config.policy_kwargs["kv_cache_gib"] is not None:
            vllm_dtype = DTYPE_BYTES.get(str(config.policy_kwargs.get("dtype", "bfloat16")), 2)
            cache = float(config.policy_kwargs["kv_cache_gib"]) * GIB
            share = (params * vllm_dtype + cache) / GB
            how = f"its weights {params / 1e9:.3f}B x {vllm_dtype} B + kv_cache_gib {config.policy_kwargs['kv_cache_gib']} GiB"
        else:
            util = float(config.policy_kwargs.get("gpu_memory_utilization") or DEFAULT_VLLM_GPU_UTILIZATION)
            share = util * available
            how = f"gpu_memory_utilization {util} x {available:.2f} GB (its weights, activations and KV cache)"
        rows.append(MemoryRow("vLLM (colocated)", share, how))
    rows.append(MemoryRow("CUDA context + overhead", CUDA_OVERHEAD_GB, "fixed"))
    return MemoryEstimate(
        model=config.model, num_parameters=params, trainable_parameters=trainable, rows=rows,
        gpu_memory_gib=float(memory_gib), sequence_length=seq, config=config, model_config=model_config,
    )


def check_memory(
    config: GRPOConfig, model_config: dict[str, Any] | None = None, *, gpu_memory_gib: float | None = None
) -> MemoryEstimate:
    """Return the estimate when ``config`` fits the GPU; raise ``ValueError`` with the numbers and
    what to change when it does not. ``gpu_memory_gib`` (e.g. the device's own, when the config
    declares none) overrides ``config.gpu_memory_gib``."""
    estimate = estimate_memory(config, model_config, gpu_memory_gib=gpu_memory_gib)
    if not estimate.fits:
        counted = ", ".join(f"{row.name} {row.gb:.1f}" for row in estimate.rows if row.counted)
        raise ValueError(
            f"{estimate.summary()} ({counted} GB). Change: " + "; or ".join(estimate.advice())
        )
    return estimate
