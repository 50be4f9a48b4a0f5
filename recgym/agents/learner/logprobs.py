"""The learner's logprobs of sampled completion tokens.

:func:`sequence_logprobs` is the learner's entry point. With ``shared_prompt=True`` it runs each
distinct prompt of a micro-batch through the model once and the completions of its group on the
prompt's keys and values, which stay in the autograd graph: the logprobs and gradients are those
of running every row on its own (up to float rounding), for about ``1/G`` of the prompt's FLOPs.
With ``shared_prompt=False`` every row (prompt + completion) runs on its own. The shared path
needs a transformers decoder with full-attention ``DynamicCache`` layers; it runs under LoRA,
autocast and non-reentrant gradient checkpointing (its caches are replay-safe, and the
checkpointed layers are let to see them for the call). Other models fall back to one row at a
time, with a warning naming the reason.

Both paths trim the micro-batch to its own longest prompt and completion and keep logits for
completion positions only; :func:`token_logprobs` turns them into logprobs of the sampled tokens
chunk by chunk, never holding a float32 log-softmax of the whole ``[rows, vocab]`` block.

:func:`completion_logprobs` is the previous per-row implementation, kept as the baseline of
``bench/learner_throughput.py``.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import warnings
import weakref
from collections.abc import Iterator

import torch
import torch.nn.functional as F

#: Rows of ``[rows, vocab]`` logits handled at once by :func:`token_logprobs` (~2**23 elements).
_CHUNK_ELEMENTS = 1 << 23

_warned: weakref.WeakSet[torch.nn.Module] = weakref.WeakSet()


def completion_logprobs(
    model: torch.nn.Module,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Logprob of each completion token under ``model`` (``[b, C]``; 0 on padding).

    Prompts are left-padded and completions right-padded, so position ids come from the
    attention mask (as in generation) and only the last ``C + 1`` positions' logits are kept.
    """
    input_ids = torch.cat([prompt_ids, completion_ids], dim=1)
    attention = torch.cat([prompt_mask, completion_mask], dim=1).long()
    position_ids = (attention.cumsum(-1) - 1).clamp(min=0)
    c = completion_ids.shape[1]
    logits = model(
        input_ids=input_ids, attention_mask=attention, position_ids=position_ids, logits_to_keep=c + 1
    ).logits[:, :-1, :].float()
    if temperature > 0 and temperature != 1.0:
        logits = logits / temperature
    logps = torch.log_softmax(logits, dim=-1).gather(-1, completion_ids.unsqueeze(-1)).squeeze(-1)
    return logps * completion_mask


def micro_batches(batch_size: int, micro_batch_size: int) -> Iterator[slice]:
    for start in range(0, batch_size, micro_batch_size):
        yield slice(start, min(start + micro_batch_size, batch_size))


# ---- lean logprobs of sampled tokens ----


class _TokenLogprob(torch.autograd.Function):
    """``log_softmax(scale * logits)[token]`` over ``[N, V]`` logits, ``chunk`` rows at a time, in
    float32 (float64 for float64 logits).

    Saves the logits (no copy) and one logsumexp per row; the backward recomputes the softmax
    chunk by chunk. With ``reuse`` (float32 or float64 logits that nothing else reads) it writes the
    gradient over the logits; otherwise the logits' gradient is the one full-size tensor it allocates.
    """

    @staticmethod
    def forward(ctx, logits: torch.Tensor, tokens: torch.Tensor, scale: float, chunk: int, reuse: bool
                ) -> torch.Tensor:
        dtype = torch.promote_types(logits.dtype, torch.float32)
        out = torch.empty(logits.shape[0], dtype=dtype, device=logits.device)
        lse = torch.empty_like(out)
        for start in range(0, logits.shape[0], chunk):
            rows = slice(start, start + chunk)
            x = logits[rows].to(dtype)
            if scale != 1.0:
                x = x * scale
            lse[rows] = torch.logsumexp(x, dim=-1)
            out[rows] = x.gather(-1, tokens[rows, None]).squeeze(-1) - lse[rows]
        ctx.save_for_backward(logits, tokens, lse)
        ctx.scale, ctx.chunk, ctx.reuse = scale, chunk, reuse and logits.dtype == dtype
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        logits, tokens, lse = ctx.saved_tensors
        # a fresh [N, V] gradient costs a page fault per 4 KiB on CPU (glibc maps blocks this size anew)
        grad = logits if ctx.reuse else torch.empty_like(logits)
        copy_back = not ctx.reuse and grad.dtype != lse.dtype  # bfloat16 logits: float32 chunks, copied back
        for start in range(0, logits.shape[0], ctx.chunk):
            rows = slice(start, start + ctx.chunk)
            g = grad_out[rows, None].to(lse.dtype)
            x = logits[rows].to(lse.dtype)
            if ctx.scale != 1.0:
                x = x.mul_(ctx.scale) if ctx.reuse else x * ctx.scale
            d = x if ctx.reuse else torch.empty_like(x) if copy_back else grad[rows]
            torch.sub(x, lse[rows, None], out=d).exp_().mul_(-g).scatter_add_(-1, tokens[rows, None], g)
            if ctx.scale != 1.0:
                d.mul_(ctx.scale)
            if copy_back:
                grad[rows] = d
        return grad, None, None, None, None


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor, temperature: float = 1.0, *,
                   reuse_logits: bool = False) -> torch.Tensor:
    """``log_softmax(logits / temperature).gather(tokens)`` in float32 (or float64), in row chunks.

    ``logits`` is ``[..., V]`` in any float dtype, ``tokens`` ``[...]``; the result is ``tokens``'
    shape. Each chunk is ``logit[token] - logsumexp(logits)``; temperature 0 (greedy) means 1. With
    ``reuse_logits`` the backward pass writes the logits' gradient over float32 (float64) logits, so
    that nothing may read them after it (the learner's own model outputs).
    """
    scale = 1.0 / temperature if temperature > 0 else 1.0
    flat = logits.reshape(-1, logits.shape[-1])
    chunk = max(1, _CHUNK_ELEMENTS // max(flat.shape[1], 1))
    out = _TokenLogprob.apply(flat, tokens.reshape(-1), scale, chunk, reuse_logits)
    return out.view(tokens.shape)


# ---- the learner's logprobs: per row or with shared prompts ----


def sequence_logprobs(
    model: torch.nn.Module,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor,
    temperature: float = 1.0,
    *,
    shared_prompt: bool = True,
) -> torch.Tensor:
    """Logprob of each completion token under ``model`` (``[b, C]``, float32 unless the model is
    float64; 0 on padding).

    ``prompt_ids``/``prompt_mask`` are ``[b, P]`` left-padded, ``completion_ids``/``completion_mask``
    ``[b, C]`` right-padded (a micro-batch of a :class:`~recgym.agents.types.RolloutBatch`).
    Consecutive rows with the same prompt form a group. With ``shared_prompt`` each group's prompt
    runs once and its keys/values are reused (with gradient) by the group's completions; a model
    this cannot handle falls back to one row at a time, with a warning the first time.
    """
    b, width = completion_ids.shape
    prompt_mask, completion_mask = prompt_mask.bool(), completion_mask.bool()
    # trim to the micro-batch's own longest prompt and completion
    prompt_cols = prompt_mask.any(0).nonzero()
    completion_cols = completion_mask.any(0).nonzero()
    if len(completion_cols) == 0:
        return torch.zeros(b, width, device=completion_ids.device)
    p0 = int(prompt_cols[0]) if len(prompt_cols) else prompt_ids.shape[1]
    p1 = int(prompt_cols[-1]) + 1 if len(prompt_cols) else prompt_ids.shape[1]
    c = int(completion_cols[-1]) + 1
    args = (prompt_ids[:, p0:p1], prompt_mask[:, p0:p1], completion_ids[:, :c],
            completion_mask[:, :c])

    rows = None
    if shared_prompt:
        rows = _prompt_groups(args[0], args[1])
        if int(rows[-1]) + 1 == b:  # no prompt shared within this micro-batch
            rows = None
        elif (reason := _unsupported(model)) is not None:
            if model not in _warned:
                _warned.add(model)
                warnings.warn(f"shared_prompt falls back to one row at a time: {reason}", stacklevel=2)
            rows = None
    if rows is None:
        logps = _per_row(model, *args, temperature)
    else:
        logps = _shared(model, *args, rows, temperature)
    return F.pad(logps * args[3], (0, width - c))


def _prompt_groups(prompt_ids: torch.Tensor, prompt_mask: torch.Tensor) -> torch.Tensor:
    """Index of each row's distinct prompt (``[b]``); a new one starts where a row's prompt differs
    from the previous row's (token ids under padding are ignored)."""
    same_ids = ((prompt_ids[1:] == prompt_ids[:-1]) | ~prompt_mask[1:]).all(-1)
    same = same_ids & (prompt_mask[1:] == prompt_mask[:-1]).all(-1)
    starts = torch.cat([same.new_ones(1), ~same])
    return starts.long().cumsum(0) - 1


def _per_row(model, prompt_ids, prompt_mask, completion_ids, completion_mask, temperature
             ) -> torch.Tensor:
    """Every row on its own: prompt + completion but its last token (whose logits nobody needs)."""
    c = completion_ids.shape[1]
    input_ids = torch.cat([prompt_ids, completion_ids[:, : c - 1]], dim=1)
    attention = torch.cat([prompt_mask, completion_mask[:, : c - 1]], dim=1).long()
    position_ids = (attention.cumsum(-1) - 1).clamp(min=0)
    logits = model(
        input_ids=input_ids, attention_mask=attention, position_ids=position_ids, use_cache=False,
        logits_to_keep=c,
    ).logits
    return token_logprobs(logits, completion_ids, temperature, reuse_logits=True)


def _shared(model, prompt_ids, prompt_mask, completion_ids, completion_mask, rows, temperature
            ) -> torch.Tensor:
    """One pass over the distinct prompts, whose keys/values stay in the graph, then one over the
    completions on them (packed, or one row each: see :func:`_packs_completions`)."""
    from transformers.cache_utils import DynamicCache

    starts = torch.cat([rows.new_ones(1), rows[1:] != rows[:-1]]).nonzero().squeeze(-1)
    u_mask = prompt_mask[starts]
    checkpointed = _checkpointed_layers(model)
    capture_layer, prefix_layer = _cache_layer_classes()
    capture = DynamicCache()
    capture.layer_class_to_replicate = capture_layer
    n = completion_ids.shape[1] - 1  # completion inputs: the last token is only a target
    with _cache_under_checkpointing(checkpointed):
        out = model(
            input_ids=prompt_ids[starts], attention_mask=u_mask.long(),
            position_ids=(u_mask.long().cumsum(-1) - 1).clamp(min=0), past_key_values=capture,
            use_cache=not checkpointed, logits_to_keep=1,
        )
        first = token_logprobs(out.logits[:, -1][rows], completion_ids[:, 0], temperature, reuse_logits=True)
        if n == 0:
            return first[:, None]
        prefix = DynamicCache()
        lengths = completion_mask.sum(-1)
        if (attn := _packs_completions(model, rows, lengths, completion_mask, prompt_ids.shape[1])) is not None:
            prefix.layers = [prefix_layer(layer.keys, layer.values) for layer in capture.layers]
            rest = _packed(model, attn, prefix, u_mask, completion_ids, lengths, rows, temperature,
                           use_cache=not checkpointed)
        else:
            def expand(x: torch.Tensor) -> torch.Tensor:
                return x.expand(len(rows), -1, -1, -1) if len(starts) == 1 else x.index_select(0, rows)

            prefix.layers = [prefix_layer(expand(layer.keys), expand(layer.values))
                             for layer in capture.layers]
            logits = model(
                input_ids=completion_ids[:, :n],
                attention_mask=torch.cat([prompt_mask, completion_mask[:, :n]], 1).long(),
                position_ids=prompt_mask.sum(-1, keepdim=True) + torch.arange(n, device=rows.device),
                past_key_values=prefix, use_cache=not checkpointed,
            ).logits
            rest = token_logprobs(logits, completion_ids[:, 1:], temperature, reuse_logits=True)
    return torch.cat([first[:, None], rest], dim=1)


def _packed(model, attn, prefix, u_mask, completion_ids, lengths, rows, temperature, use_cache
            ) -> torch.Tensor:
    """Logprobs of completion tokens 1.. (``[b, C - 1]``, 0 past each row's end) from one row per
    distinct prompt: its group's completions packed end to end without padding, a block-diagonal
    causal mask over them, each block seeing the prompt's keys/values in ``prefix`` and positions
    that continue its prompt."""
    device, b, n = completion_ids.device, len(rows), completion_ids.shape[1] - 1
    inputs = (lengths - 1).clamp(min=0)  # a row's last real token is only a target
    row = torch.repeat_interleave(torch.arange(b, device=device), inputs)
    first_of_row = torch.cumsum(inputs, 0) - inputs
    offset = torch.arange(len(row), device=device) - first_of_row[row]  # place in its completion
    group = rows[row]
    before = torch.zeros(b, dtype=inputs.dtype, device=device)  # packed tokens of earlier rows of the group
    for g in rows.unique():
        members = rows == g
        before[members] = torch.cumsum(inputs[members], 0) - inputs[members]
    column = before[row] + offset
    width = int(column.max()) + 1
    shape = (len(u_mask), width)
    ids = completion_ids.new_zeros(shape).index_put_((group, column), completion_ids[row, offset])
    targets = completion_ids.new_zeros(shape).index_put_((group, column), completion_ids[row, offset + 1])
    segment = torch.full(shape, -1, device=device).index_put_((group, column), row)
    position = torch.zeros(shape, dtype=torch.long, device=device).index_put_((group, column), offset)
    own = ((segment[:, :, None] == segment[:, None, :]) & (position[:, None, :] <= position[:, :, None])
           & (segment[:, None, :] >= 0))
    allowed = torch.cat([u_mask[:, None, :].expand(-1, width, -1), own], -1)[:, None]
    logits = model(
        input_ids=ids, past_key_values=prefix, use_cache=use_cache,
        attention_mask=allowed if attn == "sdpa" else _additive(allowed, model),
        position_ids=u_mask.sum(-1, keepdim=True) + position,
    ).logits
    logps = token_logprobs(logits, targets, temperature, reuse_logits=True)
    return logps.new_zeros(b, n).index_put((row, offset), logps[group, column])


#: Attention implementations that take a custom 4D mask as is (transformers passes it through).
_MASK_ATTENTION = ("sdpa", "eager")


def _packs_completions(model: torch.nn.Module, rows: torch.Tensor, lengths: torch.Tensor,
                       completion_mask: torch.Tensor, prompt_len: int) -> str | None:
    """The attention implementation, if each group's completions run packed into one row (the
    prompt's keys/values once, no padding, a custom mask) rather than one padded row each on a
    copy of them: where the model takes a custom mask, every row's tokens are a prefix (right
    padding only), and :func:`_packing_pays`."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    attn = getattr(base.config, "_attn_implementation", None)
    if attn not in _MASK_ATTENTION or int(rows.max()) + 1 == len(rows):
        return None
    prefix_only = bool((completion_mask == (torch.arange(completion_mask.shape[1], device=lengths.device)
                                            < lengths[:, None])).all())
    inputs = (lengths - 1).clamp(min=0)
    packed = int(torch.zeros(int(rows.max()) + 1, dtype=inputs.dtype, device=inputs.device)
                 .index_add_(0, rows, inputs).max())
    pays = prefix_only and packed > 0 and _packing_pays(base.config, len(rows), int(inputs.max()),
                                                        int(rows.max()) + 1, packed, prompt_len)
    return attn if pays else None


def _packing_pays(config, rows: int, row_tokens: int, groups: int, packed_tokens: int, prompt_len: int) -> bool:
    """Whether packing costs fewer FLOPs than one padded row per completion, by a model of a layer's
    cost per token in units of attention keys: ``k_lin`` keys' worth for the linear layers and the
    logits, plus one per key attended (SDPA computes the whole masked block). One row each:
    ``rows * row_tokens`` tokens over ``prompt_len + row_tokens`` keys; packed: ``groups *
    packed_tokens`` tokens over ``prompt_len + packed_tokens``. Padding makes the first dear, long
    packed rows the second."""
    d = getattr(config, "hidden_size", 1024)
    heads = getattr(config, "num_attention_heads", 16)
    kv = getattr(config, "num_key_value_heads", heads) * (getattr(config, "head_dim", None) or d // heads)
    inter = getattr(config, "intermediate_size", 4 * d)
    vocab, layers = getattr(config, "vocab_size", 32000), getattr(config, "num_hidden_layers", 24)
    k_lin = (2 * d + 2 * kv) / 2 + 1.5 * inter + vocab / (2 * layers)
    per_row = rows * row_tokens * (k_lin + prompt_len + row_tokens)
    packed = groups * packed_tokens * (k_lin + prompt_len + packed_tokens)
    return packed < per_row


def _additive(allowed: torch.Tensor, model: torch.nn.Module) -> torch.Tensor:
    """Eager attention adds its mask to the scores: 0 where allowed, the dtype's minimum elsewhere."""
    dtype = model.get_input_embeddings().weight.dtype
    zeros = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
    return zeros.masked_fill_(~allowed, torch.finfo(dtype).min)


@functools.cache
def _cache_layer_classes() -> tuple[type, type]:
    from transformers.cache_utils import DynamicLayer

    class CaptureLayer(DynamicLayer):
        """Keeps the latest keys/values of a pass without a past; a gradient-checkpointing replay
        overwrites them with equal ones instead of appending."""

        def update(self, key_states, value_states, *args, **kwargs):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            self.keys, self.values = key_states, value_states
            return key_states, value_states

    class PrefixLayer(DynamicLayer):
        """A fixed prefix: ``update`` returns prefix + new states and stores nothing (replay-safe)."""

        def __init__(self, keys: torch.Tensor, values: torch.Tensor) -> None:
            super().__init__()
            self.lazy_initialization(keys, values)
            self.keys, self.values = keys, values

        def update(self, key_states, value_states, *args, **kwargs):
            keys = torch.cat([self.keys, key_states], dim=-2)
            return keys, torch.cat([self.values, value_states], dim=-2)

    return CaptureLayer, PrefixLayer


def _checkpointed_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The decoder layers that transformers runs under gradient checkpointing right now."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    return [m for m in model.modules()
            if isinstance(m, GradientCheckpointingLayer) and m.gradient_checkpointing and m.training]


@contextlib.contextmanager
def _cache_under_checkpointing(layers: list[torch.nn.Module]) -> Iterator[None]:
    """Let checkpointed layers see the cache: transformers drops it for them unless
    ``_can_checkpoint_with_cache``, which is safe here because both cache kinds are replay-safe."""
    saved = [vars(m).get("_can_checkpoint_with_cache") for m in layers]
    for m in layers:
        m._can_checkpoint_with_cache = True
    try:
        yield
    finally:
        for m, value in zip(layers, saved):
            if value is None:
                del m._can_checkpoint_with_cache
            else:
                m._can_checkpoint_with_cache = value


def _unsupported(model: torch.nn.Module) -> str | None:
    """Why :func:`_shared` cannot run ``model`` (None if it can)."""
    if isinstance(model, torch.nn.parallel.DistributedDataParallel):
        return "DistributedDataParallel runs one forward per backward"
    peft_config = getattr(model, "peft_config", None)
    if isinstance(peft_config, dict) and any(
            getattr(c, "is_prompt_learning", False) for c in peft_config.values()):
        return "peft prompt learning adds virtual tokens"
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    params = inspect.signature(base.forward).parameters
    missing = [n for n in ("past_key_values", "position_ids", "logits_to_keep") if n not in params]
    if missing:
        return f"{type(base).__name__}.forward takes no {', '.join(missing)}"
    config = getattr(base, "config", None)
    if config is None or getattr(config, "is_encoder_decoder", False):
        return f"{type(base).__name__} is not a decoder-only transformers model"
    try:
        from transformers.cache_utils import DynamicCache, DynamicLayer

        layers = DynamicCache(config=config).layers
        if not hasattr(DynamicCache(), "layer_class_to_replicate"):
            return "this transformers version's DynamicCache has no per-layer classes"
    except Exception as exc:  # noqa: BLE001 - any model whose cache cannot be built here falls back
        return f"no DynamicCache for {type(base).__name__} ({type(exc).__name__}: {exc})"
    if any(type(layer) is not DynamicLayer for layer in layers):
        return f"{type(base).__name__} has sliding-window or non-attention cache layers"
    for m in _checkpointed_layers(model):
        if not hasattr(type(m), "_can_checkpoint_with_cache"):
            return "this transformers version drops the cache in checkpointed layers"
        if getattr(m._gradient_checkpointing_func, "keywords", {}).get("use_reentrant", True):
            return "reentrant gradient checkpointing cuts the prompt's keys/values from the graph"
    return None

