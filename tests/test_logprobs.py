"""The learner's logprobs: shared-prompt forward/backward against one row at a time (logprobs and
the gradients of every algorithm's loss, with LoRA and gradient checkpointing), the fallback for
models the shared path cannot run, trimming, and the lean logprob of sampled tokens."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from tiny_lm import tiny_model

from recgym.agents.algorithms import LossInputs, get_algorithm, list_algorithms
from recgym.agents.config import GRPOConfig
from recgym.agents.learner import logprobs as lp
from recgym.agents.learner.logprobs import completion_logprobs, sequence_logprobs, token_logprobs
from recgym.agents.types import RolloutBatch

FALLBACK = "shared_prompt falls back"
TEMPERATURE = 0.7


def make_batch(vocab: int, groups, width_p: int = 16, width_c: int = 9, seed: int = 0):
    """Rows of ``groups`` = [(prompt length, rows)]: left-padded prompts, right-padded completions
    of mixed lengths, both wider than any row (all-padding columns to trim)."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for plen, n in groups:
        prompt = torch.randint(5, vocab, (plen,), generator=g)
        for _ in range(n):
            ids, mask = torch.zeros(width_p, dtype=torch.long), torch.zeros(width_p, dtype=torch.bool)
            ids[width_p - plen:], mask[width_p - plen:] = prompt, True
            clen = int(torch.randint(1, width_c - 1, (1,), generator=g))
            cids, cmask = torch.zeros(width_c, dtype=torch.long), torch.zeros(width_c, dtype=torch.bool)
            cids[:clen], cmask[:clen] = torch.randint(5, vocab, (clen,), generator=g), True
            rows.append((ids, mask, cids, cmask))
    return tuple(torch.stack(x) for x in zip(*rows))


#: 4 + 2 + 1 + 3 rows in micro-batches of 3: groups split across micro-batches, a micro-batch
#: holding parts of two groups, and a single-row group.
GROUPS = [(7, 4), (11, 2), (4, 1), (9, 3)]
MICRO = 3


def lora(model: torch.nn.Module) -> torch.nn.Module:
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, init_lora_weights=False,
                        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "up_proj"])
    return get_peft_model(model, config)


def build(variant: str, attn: str = "sdpa", dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    model = tiny_model(seed=1).to(dtype)
    model.config._attn_implementation = "eager" if variant == "eager" else attn
    if "gc" in variant:
        model.gradient_checkpointing_enable()
    if "lora" in variant:
        model = lora(model)
    return model.train()


def vocab(model: torch.nn.Module) -> int:
    return model.get_input_embeddings().num_embeddings


def count_tokens(model: torch.nn.Module) -> list[int]:
    """Tokens embedded by ``model`` from now on (one entry per forward)."""
    seen: list[int] = []
    model.get_input_embeddings().register_forward_hook(lambda m, args, out: seen.append(args[0].numel()))
    return seen


def micro_slices(algorithm) -> list[slice]:
    """Micro-batches of :data:`MICRO` rows, or of whole groups for an algorithm that needs them
    (one group, then two, then one)."""
    if algorithm.whole_groups:
        return [slice(0, 4), slice(4, 7), slice(7, 10)]
    return [slice(start, start + MICRO) for start in range(0, sum(n for _, n in GROUPS), MICRO)]


def learner_update(model, batch, algorithm, advantages, old, ref, shared: bool):
    """One update's backward over the micro-batches, with the trainer's LossInputs; returns the
    logprobs and every trainable parameter's gradient."""
    model.zero_grad(set_to_none=True)
    mask = batch[3].float()
    group_ids = torch.as_tensor(rollout_batch(batch).group_ids)
    out = []
    for sl in micro_slices(algorithm):
        new = sequence_logprobs(model, *(x[sl] for x in batch), TEMPERATURE, shared_prompt=shared)
        inputs = LossInputs(
            logprobs=new, old_logprobs=old[sl], mask=mask[sl], advantages=advantages[sl],
            total_sequences=len(mask), total_tokens=int(mask.sum()), ref_logprobs=ref[sl],
            max_completion_length=mask.shape[1], group_ids=group_ids[sl], prompt_ids=batch[0][sl],
            prompt_mask=batch[1][sl], completion_ids=batch[2][sl],
        )
        loss, _ = algorithm.loss(inputs)
        loss.backward()
        out.append(new.detach())
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return torch.cat(out), grads


def rollout_batch(batch, seed: int = 0) -> RolloutBatch:
    rng = np.random.default_rng(seed)
    groups = np.concatenate([[k] * n for k, (_, n) in enumerate(GROUPS)])
    return RolloutBatch(
        prompt_ids=batch[0].numpy(), prompt_mask=batch[1].numpy(), completion_ids=batch[2].numpy(),
        completion_mask=batch[3].numpy(), old_logprobs=np.zeros(batch[3].shape, np.float32),
        rewards=rng.normal(size=len(groups)).astype(np.float32), group_ids=groups,
        truncated=np.zeros(len(groups), bool),
    )


@pytest.fixture(params=["packed", "row-per-completion"])
def layout(request, monkeypatch):
    """Both layouts of the shared path's completion pass, whatever the sizes would pick."""
    monkeypatch.setattr(lp, "_packing_pays", lambda *_: request.param == "packed")
    return request.param


#: Every algorithm's loss on the full model and on LoRA under gradient checkpointing; the other
#: model variants (LoRA alone, checkpointing alone, eager attention) with GRPO's.
CASES = [(name, variant) for name in sorted(list_algorithms()) for variant in ("full", "lora+gc")] + [
    ("grpo", variant) for variant in ("lora", "gc", "eager")]


@pytest.mark.parametrize(("algorithm", "variant"), CASES)
def test_shared_prompt_equals_per_row_logprobs_and_gradients(algorithm, variant, layout):
    model = build(variant)
    batch = make_batch(vocab(model), GROUPS)
    config = GRPOConfig(algorithm=algorithm, beta=0.1, micro_batch_size=MICRO)
    algo = get_algorithm(algorithm).from_config(config)
    algo.setup(model, config)
    advantages = torch.as_tensor(algo.advantages(rollout_batch(batch)))
    with torch.no_grad():
        base = sequence_logprobs(model, *batch, TEMPERATURE, shared_prompt=False)
    noise = torch.Generator().manual_seed(1)
    old = (base + 0.1 * torch.randn(base.shape, generator=noise)) * batch[3]  # ratios != 1, some clipped
    ref = (base + 0.1 * torch.randn(base.shape, generator=noise)) * batch[3]

    tokens = count_tokens(model)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        shared, shared_grads = learner_update(model, batch, algo, advantages, old, ref, shared=True)
    shared_tokens = sum(tokens)
    tokens.clear()
    per_row, row_grads = learner_update(model, batch, algo, advantages, old, ref, shared=False)

    assert not [w for w in caught if FALLBACK in str(w.message)]
    assert shared_tokens < sum(tokens)  # the shared path did skip repeated prompts
    assert torch.equal(shared == 0, batch[3] == 0) and torch.equal(per_row == 0, batch[3] == 0)
    torch.testing.assert_close(shared, per_row, atol=1e-5, rtol=0)
    torch.testing.assert_close(per_row, base, atol=1e-5, rtol=0)
    assert shared_grads.keys() == row_grads.keys()
    if "lora" in variant:
        assert shared_grads and all("lora_" in n for n in shared_grads)
    for name, grad in row_grads.items():
        torch.testing.assert_close(shared_grads[name], grad, atol=1e-5, rtol=0, msg=name)
    assert sum(float(g.abs().sum()) for g in row_grads.values()) > 0


def test_shared_prompt_logprobs_are_exact_in_float64(layout):
    # float64 leaves rounding at ~1e-16, so any real difference (a position id, a mask column)
    # would show. Only the forward: Llama's RMSNorm and rotary embedding compute in float32 even in
    # a float64 model, which leaves float32 rounding in the gradients (covered above at 1e-5).
    # SDPA: transformers' eager attention gives NaN at left padding in float64, on either path.
    model = build("full", "sdpa", torch.float64).eval()
    batch = make_batch(vocab(model), GROUPS, seed=2)
    with torch.no_grad():
        shared = sequence_logprobs(model, *batch, TEMPERATURE)
        per_row = sequence_logprobs(model, *batch, TEMPERATURE, shared_prompt=False)
    assert shared.dtype == torch.float64
    torch.testing.assert_close(shared, per_row, atol=1e-12, rtol=0)


def test_per_row_path_equals_the_original_completion_logprobs():
    model = build("full")
    batch = make_batch(vocab(model), GROUPS, seed=3)
    results = []
    for fn in (completion_logprobs, lambda *a: sequence_logprobs(*a, shared_prompt=False)):
        model.zero_grad(set_to_none=True)
        logps = fn(model, *batch, TEMPERATURE)
        (logps * torch.linspace(-1, 1, logps.numel()).view_as(logps)).sum().backward()
        results.append((logps.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    torch.testing.assert_close(results[0][0], results[1][0], atol=1e-5, rtol=0)
    for name, grad in results[0][1].items():
        torch.testing.assert_close(results[1][1][name], grad, atol=1e-5, rtol=0, msg=name)


def test_trimming_keeps_the_width_and_ignores_padding_columns(layout):
    model = build("full").eval()
    batch = make_batch(vocab(model), [(5, 3), (3, 2)], width_p=6, width_c=7, seed=4)
    wide = (torch.nn.functional.pad(batch[0], (9, 0)), torch.nn.functional.pad(batch[1], (9, 0)),
            torch.nn.functional.pad(batch[2], (0, 5)), torch.nn.functional.pad(batch[3], (0, 5)))
    with torch.no_grad():
        for shared in (True, False):
            narrow = sequence_logprobs(model, *batch, shared_prompt=shared)
            padded = sequence_logprobs(model, *wide, shared_prompt=shared)
            assert padded.shape == wide[2].shape and padded.dtype == torch.float32
            torch.testing.assert_close(padded[:, : narrow.shape[1]], narrow, atol=1e-6, rtol=0)
            assert not padded[:, narrow.shape[1]:].any()
        empty = sequence_logprobs(model, *batch[:3], torch.zeros_like(batch[3]))
        one_token = (*batch[:3], torch.zeros_like(batch[3]))
        one_token[3][:, 0] = True  # only the prompt pass has anything to predict
        first = sequence_logprobs(model, *one_token)
        torch.testing.assert_close(first, sequence_logprobs(model, *one_token, shared_prompt=False),
                                   atol=1e-5, rtol=0)
    assert empty.shape == batch[2].shape and not empty.any()
    assert first[:, 0].all() and not first[:, 1:].any()


def test_bfloat16_autocast_runs_both_paths_alike(layout):
    # mixed precision as the learner runs it: the paths differ by bfloat16 rounding only
    for variant in ("full", "eager"):
        model = build(variant)
        batch = make_batch(vocab(model), GROUPS, seed=7)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            shared = sequence_logprobs(model, *batch)
            per_row = sequence_logprobs(model, *batch, shared_prompt=False)
        shared.sum().backward()
        assert shared.dtype == torch.float32 and model.lm_head.weight.grad is not None
        torch.testing.assert_close(shared, per_row, atol=0.05, rtol=0)


def test_layout_choice():
    sdpa, eager, other = build("full"), build("eager"), build("full")
    other.config._attn_implementation = "flex_attention"  # takes no custom 4D tensor mask
    rows = torch.tensor([0, 0, 0, 0])
    lengths = torch.tensor([9, 3, 3, 3])
    mask = torch.arange(9) < lengths[:, None]
    assert lp._packs_completions(sdpa, rows, lengths, mask, 20) == "sdpa"
    assert lp._packs_completions(lora(eager), rows, lengths, mask, 20) == "eager"
    assert lp._packs_completions(other, rows, lengths, mask, 20) is None
    assert lp._packs_completions(sdpa, torch.arange(4), lengths, mask, 20) is None  # no prompt shared
    holes = mask.clone()
    holes[0, 2] = False  # tokens not a prefix of the row: only the padded layout keeps their places
    assert lp._packs_completions(sdpa, rows, lengths - 1, holes, 20) is None


def test_packing_pays_where_padding_costs_more_than_attention_over_the_group():
    from transformers import AutoConfig, LlamaConfig

    smollm2 = LlamaConfig(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                          num_key_value_heads=3, vocab_size=49152)
    qwen7b = AutoConfig.for_model("qwen2", hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                                  num_attention_heads=28, num_key_value_heads=4, vocab_size=152064)
    # the demo: G=8 answers of ~75 tokens, one truncated at 127, on a ~300-token prompt
    assert lp._packing_pays(smollm2, rows=8, row_tokens=127, groups=1, packed_tokens=8 * 75, prompt_len=300)
    # 7B, G=8 answers of 1,024 tokens each, no padding: attention over the packed group costs more
    assert not lp._packing_pays(qwen7b, rows=8, row_tokens=1024, groups=1, packed_tokens=8 * 1024, prompt_len=3072)
    # ... but not once half the rows are padding
    assert lp._packing_pays(qwen7b, rows=8, row_tokens=1024, groups=1, packed_tokens=8 * 512, prompt_len=3072)


def test_packed_completions_run_no_padding_token():
    """One long answer among short ones: the completion pass runs their real tokens only (17), not
    four rows padded to the longest (4 x 11), and gives the per-row logprobs."""
    model = build("full")
    prompt = torch.randint(5, vocab(model), (1, 20)).expand(4, -1)
    lengths = torch.tensor([12, 3, 3, 3])
    mask = torch.arange(12) < lengths[:, None]
    completions = torch.randint(5, vocab(model), (4, 12)) * mask
    seen = []
    hook = model.get_input_embeddings().register_forward_hook(lambda m, args, out: seen.append(args[0].numel()))
    try:
        shared = sequence_logprobs(model, prompt, torch.ones_like(prompt, dtype=torch.bool), completions, mask)
    finally:
        hook.remove()
    assert seen == [20, 11 + 2 + 2 + 2]  # the prompt once, then the packed answers
    per_row = sequence_logprobs(model, prompt, torch.ones_like(prompt, dtype=torch.bool), completions, mask,
                                shared_prompt=False)
    torch.testing.assert_close(shared, per_row, atol=1e-5, rtol=0)


def test_prompt_groups_are_consecutive_equal_rows():
    ids = torch.tensor([[0, 5, 6], [9, 5, 6], [0, 5, 6], [5, 5, 6], [0, 5, 6], [0, 5, 7]])
    mask = torch.tensor([[0, 1, 1]] * 3 + [[1, 1, 1]] + [[0, 1, 1]] * 2, dtype=torch.bool)
    # rows 0-2 differ only under padding; row 3 has the same real tokens at other places
    assert lp._prompt_groups(ids, mask).tolist() == [0, 0, 0, 1, 2, 3]


class NoCacheStandIn(torch.nn.Module):
    """Stand-in for a causal LM the shared path cannot run: its forward takes no past_key_values."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, input_ids, attention_mask=None, position_ids=None, use_cache=None, logits_to_keep=0):
        return self.inner(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                          use_cache=use_cache, logits_to_keep=logits_to_keep)


def test_fallback_stand_in_without_cache_warns_once_and_matches_per_row():
    inner = build("full")
    model = NoCacheStandIn(inner)
    batch = make_batch(vocab(inner), GROUPS, seed=5)
    with pytest.warns(UserWarning, match=f"{FALLBACK}.*NoCacheStandIn.forward takes no past_key_values"):
        first = sequence_logprobs(model, *batch, TEMPERATURE)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        second = sequence_logprobs(model, *batch, TEMPERATURE)
    assert not [w for w in caught if FALLBACK in str(w.message)]
    expected = completion_logprobs(inner, *batch, TEMPERATURE)
    torch.testing.assert_close(first, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(second, expected, atol=1e-5, rtol=0)


def test_reentrant_checkpointing_falls_back_with_correct_gradients():
    # reentrant checkpointing runs the forward without a graph: the prompt's keys/values would
    # carry no gradient, so the shared path must not run
    model = tiny_model(seed=1)
    model.gradient_checkpointing_enable({"use_reentrant": True})
    model.train()
    reference = tiny_model(seed=1).train()
    batch = make_batch(vocab(model), GROUPS, seed=6)
    with pytest.warns(UserWarning, match="reentrant"):
        logps = sequence_logprobs(model, *batch)
    logps.sum().backward()
    expected = completion_logprobs(reference, *batch)
    expected.sum().backward()
    torch.testing.assert_close(logps, expected, atol=1e-5, rtol=0)
    for (name, p), q in zip(model.named_parameters(), reference.parameters()):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-5, rtol=0, msg=name)


@pytest.mark.parametrize("reuse", [False, True], ids=["fresh-gradient", "gradient-over-logits"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("temperature", [1.0, 0.7, 0.0])
def test_token_logprobs_equals_log_softmax_gather(monkeypatch, dtype, temperature, reuse):
    monkeypatch.setattr(lp, "_CHUNK_ELEMENTS", 3 * 50)  # chunks of 3 rows over 10: a ragged last one
    g = torch.Generator().manual_seed(0)
    logits = (4 * torch.randn(2, 5, 50, generator=g)).to(dtype).requires_grad_()
    tokens = torch.randint(0, 50, (2, 5), generator=g)
    upstream = torch.randn(2, 5, generator=g)
    scaled = logits.float() / (temperature if temperature > 0 else 1.0)
    want = torch.log_softmax(scaled, -1).gather(-1, tokens[..., None]).squeeze(-1)
    (want_grad,) = torch.autograd.grad((want * upstream).sum(), logits)

    output = logits * 1  # a model's output: with reuse its memory becomes its gradient
    got = token_logprobs(output, tokens, temperature, reuse_logits=reuse)
    (grad,) = torch.autograd.grad((got * upstream).sum(), logits)
    overwritten = reuse and dtype == torch.float32  # bfloat16 logits stay: their gradient is a buffer of its own
    assert torch.equal(output, grad) == overwritten and torch.equal(output, logits) != overwritten

    assert got.shape == tokens.shape and got.dtype == torch.float32 and grad.dtype == dtype
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    torch.testing.assert_close(grad.float(), want_grad.float(), atol=tol, rtol=0)
