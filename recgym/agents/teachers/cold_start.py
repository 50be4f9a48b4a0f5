"""RecOne's cold-start data: reasoning traces from a teacher, kept, rationalized or dropped.

**Data** (:func:`make_cold_start_data`). For each training sample a teacher (any
:class:`~recgym.agents.types.Policy`: a larger local model, an OpenAI-compatible endpoint, or
offline the base model itself with several samples) writes the four-step reasoning. A trace is
*kept* when its format holds and its rating is within ``tolerance`` of the truth. Otherwise the
teacher is asked again with the true rating given as a hint (*rationalization*); a valid answer is
stored with the hint removed from the prompt. Samples with neither are *dropped*. Every row of
the JSONL output carries its provenance (kept / rationalized, teacher, sample index, env).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from recgym.agents.config import ConfigMixin
from recgym.agents.types import Policy, SamplingParams

HINT = (
    "\n\nHint for writing this example: the user's actual rating was {rating:g}. Reason step by step "
    "towards it in the required format, as if you did not know it, and give {rating:g} in <{tag}>."
)


@dataclass
class ColdStartConfig(ConfigMixin):
    """Settings for ``recgym sft make-data``."""

    env_id: str = "RecRating-Synthetic-v0"
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    split: str = "train"
    num_samples: int = 64
    """Training samples to write traces for (a seeded random subset)."""
    teacher: str = "smollm2-135m-instruct"
    """Teacher model name/path (hf, vllm) or served model name (openai)."""
    teacher_policy: str = "hf"
    """hf, vllm or openai (an OpenAI-compatible server; set ``teacher_kwargs: {base_url: ...}``)."""
    teacher_kwargs: dict[str, Any] = field(default_factory=dict)
    samples_per_prompt: int = 4
    """Teacher attempts per sample (the first valid one is kept)."""
    tolerance: float = 0.5
    """A trace is kept when ``|rating - truth| <= tolerance`` and its format holds."""
    rationalize: bool = True
    """Ask again with the true rating as a hint when no attempt is kept."""
    temperature: float = 0.8
    max_new_tokens: int = 384
    output: str = "runs/sft/cold_start.jsonl"
    seed: int = 0


@dataclass
class ColdStartReport:
    path: str
    kept: int
    rationalized: int
    dropped: int
    seconds: float

    @property
    def total(self) -> int:
        return self.kept + self.rationalized + self.dropped

    def summary(self) -> str:
        n = max(self.total, 1)
        return (
            f"{self.total} samples: {self.kept} kept ({self.kept / n:.0%}), {self.rationalized} rationalized "
            f"({self.rationalized / n:.0%}), {self.dropped} dropped ({self.dropped / n:.0%}) -> {self.path}"
        )


def with_hint(messages: list[dict[str, str]], rating: float, tag: str) -> list[dict[str, str]]:
    """The prompt with the true rating appended to the last user message."""
    out = [dict(m) for m in messages]
    for m in reversed(out):
        if m["role"] == "user":
            m["content"] += HINT.format(rating=rating, tag=tag)
            break
    return out


def _first_valid(env: Any, index: int, completions: list[Any], tolerance: float) -> tuple[Any, dict] | None:
    """The first completion whose format holds and whose rating is within ``tolerance``."""
    for completion in completions:
        env.reset(options={"index": index})
        _, reward, _, _, info = env.step(completion.text)
        breakdown = info["reward_breakdown"]
        if breakdown["format_ok"] and info["abs_error"] is not None and info["abs_error"] <= tolerance:
            return completion, {**info, "reward": reward}
    return None


def make_cold_start_data(
    env: Any,
    teacher: Policy,
    indices: list[int],
    output: str | Path,
    *,
    samples_per_prompt: int = 4,
    tolerance: float = 0.5,
    rationalize: bool = True,
    sampling: SamplingParams | None = None,
    provenance: dict[str, Any] | None = None,
    batch_size: int = 8,
) -> ColdStartReport:
    """Write kept and rationalized traces for ``indices`` of ``env`` to ``output`` (JSONL)."""
    start = time.perf_counter()
    sampling = sampling or SamplingParams(temperature=0.8, max_new_tokens=384)
    core = env.unwrapped
    tag = core.template.tags[-1]
    targets = np.asarray(core.dataset.targets(core.split), dtype=float)
    counts: Counter[str] = Counter()
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".tmp")
    with tmp.open("w") as f:
        for first in range(0, len(indices), batch_size):
            chunk = indices[first : first + batch_size]
            prompts = [env.reset(options={"index": i})[1]["messages"] for i in chunk]
            attempts = teacher.generate(prompts, n=samples_per_prompt, sampling=sampling)
            pending = []
            for index, messages, completions in zip(chunk, prompts, attempts):
                found = _first_valid(env, index, completions, tolerance)
                if found is not None:
                    f.write(_row(index, messages, found, "kept", core, provenance) + "\n")
                    counts["kept"] += 1
                else:
                    pending.append((index, messages))
            if rationalize and pending:
                hinted = [with_hint(m, targets[i], tag) for i, m in pending]
                retries = teacher.generate(hinted, n=samples_per_prompt, sampling=sampling)
                for (index, messages), completions in zip(pending, retries):
                    found = _first_valid(env, index, completions, tolerance)
                    if found is not None:  # stored with the hint-free prompt
                        f.write(_row(index, messages, found, "rationalized", core, provenance) + "\n")
                        counts["rationalized"] += 1
                    else:
                        counts["dropped"] += 1
            else:
                counts["dropped"] += len(pending)
    tmp.replace(output)
    return ColdStartReport(str(output), counts["kept"], counts["rationalized"], counts["dropped"],
                           time.perf_counter() - start)


def _row(index: int, messages: list, found: tuple[Any, dict], how: str, core: Any, provenance: dict | None) -> str:
    completion, info = found
    return json.dumps({
        "prompt": messages,
        "completion": [{"role": "assistant", "content": completion.text}],
        "target_rating": info["target_rating"],
        "parsed_rating": info["parsed_rating"],
        "reward": info["reward"],
        "provenance": how,
        "index": int(index),
        "split": core.split,
        "dataset": core.dataset.name,
        **(provenance or {}),
    })


def run_cold_start(config: ColdStartConfig, teacher: Policy | None = None) -> ColdStartReport:
    """``recgym sft make-data``: build the env and teacher from ``config`` and write the JSONL."""
    import gymnasium as gym

    import recgym.envs  # noqa: F401  (registers the environments)

    env = gym.make(config.env_id, split=config.split, **config.env_kwargs)
    n = len(env.unwrapped)
    rng = np.random.default_rng(config.seed)
    indices = sorted(rng.choice(n, size=min(config.num_samples, n), replace=False).tolist())
    if teacher is None:
        from recgym.agents.policies import make_policy

        teacher = make_policy(config.teacher_policy, config.teacher, **config.teacher_kwargs)
    sampling = SamplingParams(temperature=config.temperature, max_new_tokens=config.max_new_tokens, seed=config.seed)
    return make_cold_start_data(
        env, teacher, indices, config.output, samples_per_prompt=config.samples_per_prompt,
        tolerance=config.tolerance, rationalize=config.rationalize, sampling=sampling,
        provenance={"teacher": config.teacher, "teacher_policy": config.teacher_policy, "env_id": config.env_id},
    )
