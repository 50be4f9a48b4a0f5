"""``HFPolicy``: transformers ``generate``, batched with left padding.

The policy holds the very ``torch.nn.Module`` it samples from (``policy.model``), so a learner
that trains that module always samples from its current weights: there is nothing to sync.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from transformers import StoppingCriteria

from recgym.agents.models import load_model
from recgym.agents.policies.base import BasePolicy, PromptEncoder, cut_at_stop
from recgym.agents.types import Completion, Prompt, SamplingParams


def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
    eos = getattr(model.generation_config, "eos_token_id", None)
    if eos is None:
        eos = tokenizer.eos_token_id
    ids = set(eos if isinstance(eos, (list, tuple)) else [eos])
    return {int(i) for i in ids if i is not None}


@contextmanager
def neutral_generation_config(model: Any) -> Iterator[None]:
    """Run ``generate`` with transformers' neutral defaults instead of the checkpoint's generation_config.

    ``generate`` fills every option the call leaves unset from ``model.generation_config``, so a
    checkpoint's ``repetition_penalty``, ``no_repeat_ngram_size``, ``top_k``, ``min_length``,
    suppressed tokens, ... would reshape the sampling distribution away from the plain softmax the
    learner scores. The generating module (a PEFT model's base model) gets an empty config for the call.
    """
    from transformers import GenerationConfig

    target = model.get_base_model() if hasattr(model, "get_base_model") else model
    saved = target.generation_config
    target.generation_config = GenerationConfig()
    try:
        yield
    finally:
        target.generation_config = saved


class StopInCompletion(StoppingCriteria):
    """Stops a row once its generated text holds a stop string, as vLLM does: the prompt is never
    matched (transformers' ``stop_strings`` look at the whole sequence). ``stopped_at[row]`` is the
    number of tokens the row had generated then (None: not stopped); what ``generate`` appends to a
    finished row is padding, never read as the row's tokens."""

    def __init__(self, tokenizer: Any, stop: tuple[str, ...], prompt_width: int, rows: int) -> None:
        self.tokenizer, self.stop, self.prompt_width = tokenizer, stop, prompt_width
        self.stopped_at: list[int | None] = [None] * rows

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        for r, ids in enumerate(input_ids[:, self.prompt_width :].tolist()):
            if self.stopped_at[r] is None and cut_at_stop(self.tokenizer.decode(ids, skip_special_tokens=True),
                                                          self.stop)[1]:
                self.stopped_at[r] = len(ids)
        return torch.tensor([at is not None for at in self.stopped_at], device=input_ids.device)


class HFPolicy(BasePolicy):
    """Sample with ``model.generate``.

    Args:
        model: a model name (see :func:`recgym.agents.models.load_model`) or a loaded causal LM.
        tokenizer: needed when ``model`` is a module; loaded with the model otherwise.
        dtype, device: used when ``model`` is a name.
        batch_size: rows (prompts x n) per ``generate`` call.
        max_context: the model's context length (default: its ``max_position_embeddings``);
            a prompt longer than ``max_context - max_new_tokens`` loses history lines.

    Logprobs are those of the distribution actually sampled from (after temperature and top-p;
    raw for greedy), like vLLM's ``processed_logprobs`` that :class:`VLLMPolicy` returns. Only
    ``SamplingParams`` shape that distribution: the model's ``generation_config`` (repetition
    penalty, top-k, n-gram blocking, ...) is ignored, so samples come from the softmax the learner
    scores (its EOS ids are still used to stop). Stop strings match the generated text only.

    A seed (``SamplingParams.seed``) is per call, not per prompt: the same call repeats its samples,
    but a prompt's samples depend on the rest of the batch. A seeded call draws from a forked torch
    RNG, so the caller's random stream is left as it was.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any = None,
        *,
        dtype: Any = "float32",
        device: str = "cpu",
        batch_size: int = 16,
        max_context: int | None = None,
    ) -> None:
        if isinstance(model, (str, bytes)) or hasattr(model, "__fspath__"):
            model, loaded_tokenizer = load_model(model, dtype=dtype, device=device)
            tokenizer = tokenizer or loaded_tokenizer
        if tokenizer is None:
            raise ValueError("HFPolicy needs a tokenizer when given a loaded model")
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = max(1, int(batch_size))
        self.max_context = int(max_context or getattr(model.config, "max_position_embeddings", 0) or 2048)
        self.encoder = PromptEncoder(tokenizer)
        self.eos_ids = _eos_ids(model, tokenizer)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    supports_token_ids = True

    def _generate(self, prompts: list[Prompt], n: int, sampling: SamplingParams) -> list[list[Completion]]:
        self.encoder.max_prompt_tokens = max(1, self.max_context - sampling.max_new_tokens)
        return self._generate_ids(self.encoder.encode_all(prompts), n, sampling)

    def _generate_ids(self, prompt_ids: list[list[int]], n: int, sampling: SamplingParams) -> list[list[Completion]]:
        results: list[list[Completion]] = []
        per_call = max(1, self.batch_size // n)
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices, enabled=sampling.seed is not None):  # the caller's stream stays as it was
            if sampling.seed is not None:
                torch.manual_seed(sampling.seed)
            for start in range(0, len(prompt_ids), per_call):
                chunk = prompt_ids[start : start + per_call]
                rows = self._generate_chunk(chunk, n, sampling)
                results.extend(rows[i * n : (i + 1) * n] for i in range(len(chunk)))
        return results

    @torch.no_grad()
    def _generate_chunk(self, chunk: list[list[int]], n: int, sampling: SamplingParams) -> list[Completion]:
        pad = int(self.tokenizer.pad_token_id)
        rows = [ids for ids in chunk for _ in range(n)]  # (greedy generate refuses num_return_sequences > 1)
        width = max(len(ids) for ids in rows)
        input_ids = torch.tensor([[pad] * (width - len(ids)) + ids for ids in rows], device=self.device)
        attention = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in rows], device=self.device)
        greedy = sampling.temperature == 0
        kwargs: dict[str, Any] = {
            "do_sample": not greedy,
            "max_new_tokens": sampling.max_new_tokens,
            "return_dict_in_generate": True,
            "output_scores": True,
            "pad_token_id": pad,
            "eos_token_id": sorted(self.eos_ids),
        }
        if not greedy:
            kwargs.update(temperature=sampling.temperature, top_p=sampling.top_p, top_k=0)
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        stop = StopInCompletion(self.tokenizer, tuple(sampling.stop), width, len(rows))
        if sampling.stop:
            kwargs["stopping_criteria"] = [stop]
        was_training = self.model.training
        self.model.eval()
        try:
            with neutral_generation_config(self.model):
                out = self.model.generate(input_ids=input_ids, attention_mask=attention, **kwargs)
        finally:
            self.model.train(was_training)
        new_tokens = out.sequences[:, width:]
        # [steps, rows, vocab] -> per-row logprobs of the sampled tokens (and the top-k when asked)
        steps = len(out.scores)
        logprobs = torch.empty(new_tokens.shape[0], steps, dtype=torch.float32)
        top: list[list[dict[int | str, float]]] = [[] for _ in range(new_tokens.shape[0])]
        for t, scores in enumerate(out.scores):
            lp = torch.log_softmax(scores.float(), dim=-1)
            logprobs[:, t] = lp.gather(1, new_tokens[:, t : t + 1]).squeeze(1).cpu()
            if sampling.logprobs > 0:
                values, indices = lp.topk(sampling.logprobs, dim=-1)
                for r in range(lp.shape[0]):
                    top[r].append(dict(zip(indices[r].tolist(), values[r].tolist())))
        completions = []
        for r in range(new_tokens.shape[0]):
            tokens = new_tokens[r].tolist()[: stop.stopped_at[r]]  # after a stop string: padding
            completions.append(self._completion(rows[r], tokens, stop.stopped_at[r] is not None, logprobs[r], top[r],
                                                sampling))
        return completions

    def _completion(self, prompt: list[int], tokens: list[int], stopped: bool, logprobs: torch.Tensor, top: list,
                    sampling: SamplingParams) -> Completion:
        """A row's completion: its tokens up to its first EOS (a row that stopped at a stop string
        comes cut already; one that ran on ends at ``max_new_tokens``)."""
        eos_end = next((i + 1 for i, token in enumerate(tokens) if token in self.eos_ids), None)
        finish = "stop" if stopped or eos_end else "length"
        ids = tokens[:eos_end]
        text_ids = ids[:-1] if ids and ids[-1] in self.eos_ids else ids
        text = self.tokenizer.decode(text_ids, skip_special_tokens=True)
        if sampling.stop:
            text, stopped = cut_at_stop(text, sampling.stop)
            finish = "stop" if stopped else finish
        return Completion(
            text=text,
            prompt_token_ids=list(prompt),
            completion_token_ids=ids,
            logprobs=logprobs[: len(ids)].tolist(),
            finish_reason=finish,
            top_logprobs=top[: len(ids)] if sampling.logprobs > 0 else None,
        )
