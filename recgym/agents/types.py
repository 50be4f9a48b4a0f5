"""The agents layer's shared types: sampling settings, completions, the Policy protocol, rollouts.

A :class:`Policy` turns a batch of prompts into ``n`` :class:`Completion` s each; rollout
collection turns those and the environment's rewards into a :class:`RolloutBatch`; an
algorithm turns a RolloutBatch into advantages and a loss.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

#: A prompt is either chat messages (``[{"role": ..., "content": ...}, ...]``) or plain text.
Prompt = list[dict[str, str]] | str


@dataclass(frozen=True)
class SamplingParams:
    """Sampling settings shared by every policy backend."""

    temperature: float = 1.0
    """0 means greedy decoding."""
    top_p: float = 1.0
    max_new_tokens: int = 256
    seed: int | None = None
    stop: tuple[str, ...] = ()
    """Strings that end a completion (kept out of its text)."""
    logprobs: int = 0
    """How many top alternatives' logprobs to return per token besides the sampled one."""

    def __post_init__(self) -> None:
        for name in ("temperature", "top_p"):  # NaN passes every comparison below
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
        for name in ("max_new_tokens", "logprobs", "seed"):
            value = getattr(self, name)
            whole = isinstance(value, numbers.Integral) or (isinstance(value, float) and value.is_integer())
            if not (whole and not isinstance(value, bool)) and not (name == "seed" and value is None):
                raise ValueError(f"{name} must be a whole number, got {value!r}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.logprobs < 0:
            raise ValueError(f"logprobs must be >= 0, got {self.logprobs}")


@dataclass
class Completion:
    """One sampled completion, with the exact tokens generation saw (never re-tokenized)."""

    text: str
    prompt_token_ids: list[int]
    completion_token_ids: list[int]
    logprobs: list[float]
    """Log-probability of each sampled completion token (same length as completion_token_ids)."""
    finish_reason: str
    """``"stop"`` (EOS or a stop string) or ``"length"`` (hit max_new_tokens)."""
    top_logprobs: list[dict[int | str, float]] | None = None
    """Per token, the top alternatives' logprobs, when ``SamplingParams.logprobs > 0``. Keys are
    token ids, or token strings where the backend gives no ids (OpenAI-compatible servers)."""
    tokens: list[str] | None = None
    """The sampled tokens as text, where the backend gives text but no token ids (OpenAI-compatible
    servers); None where ``completion_token_ids`` are known."""

    @property
    def truncated(self) -> bool:
        return self.finish_reason == "length"


@runtime_checkable
class Policy(Protocol):
    """Anything that can sample completions for a batch of prompts."""

    def generate(
        self, prompts: Sequence[Prompt], n: int = 1, sampling: SamplingParams | None = None
    ) -> list[list[Completion]]:
        """Return, per prompt, ``n`` completions."""
        ...


@dataclass
class RolloutBatch:
    """A batch of scored completions, grouped by prompt (``group_size`` consecutive rows share one).

    Token arrays are right-padded to the longest row. ``completion_mask`` marks the tokens the
    policy sampled (what the loss covers); ``old_logprobs`` are the behaviour policy's logprobs of
    those tokens. In multi-turn episodes the completion is the model's turns interleaved with the
    environment's tool results: ``observation_mask`` marks the result tokens, which the model
    attends to as context but is never trained on (their ``old_logprobs`` are 0).
    """

    prompt_ids: np.ndarray  # int64 [B, P], left-padded with pad_token_id
    prompt_mask: np.ndarray  # bool [B, P]
    completion_ids: np.ndarray  # int64 [B, C], right-padded
    completion_mask: np.ndarray  # bool [B, C]
    old_logprobs: np.ndarray  # float32 [B, C], 0 where masked
    rewards: np.ndarray  # float32 [B]
    group_ids: np.ndarray  # int64 [B]; rows with equal id share a prompt
    truncated: np.ndarray  # bool [B]; hit max_new_tokens
    reward_components: dict[str, np.ndarray] = field(default_factory=dict)  # e.g. format, accuracy
    texts: list[str] = field(default_factory=list)
    infos: list[dict[str, Any]] = field(default_factory=list)
    observation_mask: np.ndarray | None = None  # bool [B, C]; tool-result tokens; None: single-turn

    @property
    def attention_mask(self) -> np.ndarray:
        """``[B, C]``: every real token after the prompt, the model's and the environment's."""
        if self.observation_mask is None:
            return self.completion_mask
        return self.completion_mask | self.observation_mask

    def longest_turn(self) -> np.ndarray:
        """``[B]``: each row's most tokens in one turn (``max_new_tokens`` caps each turn); the
        completion's length when single-turn."""
        mask = np.asarray(self.completion_mask, dtype=np.int64)
        if self.observation_mask is None:
            return mask.sum(1)
        best = run = np.zeros(len(mask), dtype=np.int64)
        for column in mask.T:
            run = (run + 1) * column
            best = np.maximum(best, run)
        return best

    def __len__(self) -> int:
        return int(self.rewards.shape[0])

    @property
    def group_size(self) -> int:
        _, counts = np.unique(self.group_ids, return_counts=True)
        return int(counts[0]) if len(counts) else 0
