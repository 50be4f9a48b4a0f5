"""What every policy backend shares: input checks, prompt rendering, and the context guard.

A prompt that does not fit the model's context loses history lines (the user's oldest past
ratings first, then other users' reviews of the item), never the instructions; each policy
counts how often that happened in ``policy.stats``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from recgym.agents.types import Completion, Prompt, SamplingParams

#: History lines of the Think-before-Recommendation user prompt, in the order they are dropped:
#: the user's past ratings (``1. "Title" rated 4...``), then others' reviews (``- rated 5: ...``).
HISTORY_LINE_PATTERNS = (re.compile(r"^\d+\. \""), re.compile(r"^- rated "))


class PromptTooLongError(ValueError):
    """A prompt longer than the context even with every history line dropped."""


def check_request(prompts: Sequence[Prompt], n: int) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n (completions per prompt) must be an int >= 1, got {n!r}")
    if isinstance(prompts, (str, dict)):
        raise TypeError("prompts must be a sequence of prompts (chat messages or strings), not one prompt")
    for prompt in prompts:
        if isinstance(prompt, str):
            continue
        if not isinstance(prompt, list) or not all(isinstance(m, dict) and "role" in m for m in prompt):
            raise TypeError(f"a prompt must be a str or a list of chat messages, got {type(prompt).__name__}")


def _drop_history_line(text: str) -> str | None:
    """``text`` with its oldest remaining history line removed (None when none is left)."""
    lines = text.split("\n")
    for pattern in HISTORY_LINE_PATTERNS:
        for i, line in enumerate(lines):
            if pattern.match(line):
                return "\n".join(lines[:i] + lines[i + 1 :])
    return None


def _drop_from_prompt(prompt: Prompt) -> Prompt | None:
    if isinstance(prompt, str):
        return _drop_history_line(prompt)
    for i in range(len(prompt) - 1, -1, -1):  # the last user message holds the history
        if prompt[i].get("role") == "user":
            shorter = _drop_history_line(prompt[i]["content"])
            if shorter is None:
                return None
            return [*prompt[:i], {**prompt[i], "content": shorter}, *prompt[i + 1 :]]
    return None


class PromptEncoder:
    """Turns prompts into token ids with the tokenizer's chat template, applied once.

    ``max_prompt_tokens`` (when set) is enforced by dropping history lines; ``stats`` counts
    ``prompts``, ``truncated_prompts`` and ``history_lines_dropped``.
    """

    def __init__(self, tokenizer: Any, max_prompt_tokens: int | None = None) -> None:
        self.tokenizer = tokenizer
        self.max_prompt_tokens = max_prompt_tokens
        self.stats = {"prompts": 0, "truncated_prompts": 0, "history_lines_dropped": 0}
        self._turn_end: tuple[str, str] | None = None

    def _encode_once(self, prompt: Prompt) -> list[int]:
        if isinstance(prompt, str):
            return list(self.tokenizer(prompt, add_special_tokens=False)["input_ids"])
        ids = self.tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True)
        if isinstance(ids, dict) or hasattr(ids, "keys"):  # BatchEncoding in transformers 5
            ids = ids["input_ids"]
        return list(ids)

    def encode(self, prompt: Prompt) -> list[int]:
        self.stats["prompts"] += 1
        ids = self._encode_once(prompt)
        limit = self.max_prompt_tokens
        if limit is None or len(ids) <= limit:
            return ids
        dropped, current = 0, prompt
        while len(ids) > limit:
            shorter = _drop_from_prompt(current)
            if shorter is None:
                raise PromptTooLongError(
                    f"prompt has {len(ids)} tokens after dropping all {dropped} history lines; the limit is "
                    f"{limit} (context minus max_new_tokens). Shorten the instructions or raise max_model_len."
                )
            current, dropped = shorter, dropped + 1
            ids = self._encode_once(current)
        self.stats["truncated_prompts"] += 1
        self.stats["history_lines_dropped"] += dropped
        return ids

    def encode_all(self, prompts: Sequence[Prompt]) -> list[list[int]]:
        return [self.encode(p) for p in prompts]

    def continuation(self, messages: Sequence[dict[str, str]], after_eos: bool) -> list[int]:
        """Token ids that follow an assistant turn in a multi-turn episode: the end of that turn as
        the chat template writes it (left out where the turn's own last token was EOS), then
        ``messages`` (e.g. a tool result) and the next assistant header."""
        if self._turn_end is None:
            probe = [{"role": "user", "content": "?"}, {"role": "assistant", "content": "!"}]
            closed = self._render(probe, add_generation_prompt=False)
            self._turn_end = (closed, closed[closed.rindex("!") + 1 :])
        closed, turn_end = self._turn_end
        probe = [{"role": "user", "content": "?"}, {"role": "assistant", "content": "!"}, *messages]
        opened = self._render(probe, add_generation_prompt=True)
        if not opened.startswith(closed):
            raise ValueError("the chat template renders a conversation's earlier turns differently once a message "
                             "follows; multi-turn token ids cannot be built by appending")
        eos = self.tokenizer.eos_token or ""
        end = turn_end[len(eos) :] if after_eos and eos and turn_end.startswith(eos) else turn_end
        return list(self.tokenizer(end + opened[len(closed) :], add_special_tokens=False)["input_ids"])

    def _render(self, messages: list[dict[str, str]], add_generation_prompt: bool) -> str:
        return self.tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, tokenize=False)


class BasePolicy:
    """Checks requests, handles empty batches, and exposes ``stats``. Subclasses implement ``_generate``."""

    tokenizer: Any = None
    encoder: PromptEncoder | None = None

    @property
    def stats(self) -> dict[str, int]:
        return dict(self.encoder.stats) if self.encoder is not None else {}

    def generate(
        self, prompts: Sequence[Prompt], n: int = 1, sampling: SamplingParams | None = None
    ) -> list[list[Completion]]:
        """Return, per prompt, ``n`` completions (an empty batch gives ``[]``)."""
        check_request(prompts, n)
        if len(prompts) == 0:
            return []
        return self._generate(list(prompts), n, sampling or SamplingParams())

    def _generate(self, prompts: list[Prompt], n: int, sampling: SamplingParams) -> list[list[Completion]]:
        raise NotImplementedError

    #: Whether the backend continues raw token ids (``generate_from_ids``): multi-turn training needs it.
    supports_token_ids: bool = False

    def generate_from_ids(
        self, prompt_ids: Sequence[Sequence[int]], n: int = 1, sampling: SamplingParams | None = None
    ) -> list[list[Completion]]:
        """Continue each token sequence as it is (no chat template, no history dropping): the turns
        of multi-turn episodes, whose context is the model's earlier turns and the tool results."""
        if not self.supports_token_ids:
            raise NotImplementedError(f"{type(self).__name__} cannot continue raw token ids")
        check_request([""] * len(prompt_ids), n)
        if len(prompt_ids) == 0:
            return []
        return self._generate_ids([list(map(int, ids)) for ids in prompt_ids], n, sampling or SamplingParams())

    def _generate_ids(self, prompt_ids: list[list[int]], n: int, sampling: SamplingParams) -> list[list[Completion]]:
        raise NotImplementedError

    def close(self) -> None:
        """Release the backend's resources (engines, connections)."""


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """``text`` up to the first stop string (excluded) and whether one was found."""
    cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def token_strings(completion: Completion, decode: Callable[[list[int]], str] | None) -> list[str]:
    """The completion's tokens as text pieces (from the backend, or decoded one by one)."""
    if completion.tokens is not None:
        return list(completion.tokens)
    if decode is None:
        return []
    return [decode([t]) for t in completion.completion_token_ids]
