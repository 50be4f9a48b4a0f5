"""RecOne's cold-start data: reasoning traces from a teacher, kept, rationalized or dropped.

**Data** (:func:`make_cold_start_data`). For each training sample a teacher (any
:class:`~recgym.agents.types.Policy`: a larger local model, an OpenAI-compatible endpoint, or
offline the base model itself with several samples) writes the four-step reasoning. A trace is
*kept* when its format holds and its rating is within ``tolerance`` of the truth. Otherwise the
teacher is asked again with the true rating given as a hint (*rationalization*); a valid answer is
stored with the hint removed from the prompt. Samples with neither are *dropped*. Every row of
the JSONL output carries its provenance (kept / rationalized, teacher, sample index, env). Rows are
appended as they are made; ``<output>.json`` beside them (:func:`progress_path`) records the
settings and the samples dropped, so that a killed run can be resumed (``resume=True``).
With ``match_ratings`` the kept traces follow the split's rating proportions (:func:`rating_quotas`),
not the ratings the teacher happens to get right.

**Tool environments** (``RecRatingTools-*``, :func:`make_tool_cold_start_data`). The teacher plays
whole episodes (``teacher_policy: scripted``, ``teacher: similar_items`` is the scripted tool agent);
an episode is kept when it ends in an answer whose format holds within ``tolerance`` and none of
its turns hit ``max_new_tokens`` (an episode with a cut turn is dropped). Its row's ``completion``
is the rest of the conversation: the teacher's turns and the tool results between them, which
``recgym sft train`` masks out of the loss as the GRPO trainer does (no rationalization).
"""

from __future__ import annotations

import json
import time
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from recgym.agents.config import ConfigMixin, changed_fields, plain_values
from recgym.agents.teachers.scripted import (
    SimilarItemsToolPolicy,
    SyntheticRankerPolicy,
    SyntheticReasonerPolicy,
    UserAveragePolicy,
)
from recgym.agents.types import Policy, SamplingParams
from recgym.data.schema import SPLITS

#: The scripted teachers ``teacher_policy: scripted`` names (``similar_items`` plays tool envs,
#: ``ranker`` ranks ``RecRank-Synthetic-v0`` lists).
SCRIPTED_TEACHERS = {"similar_items": SimilarItemsToolPolicy, "reasoner": SyntheticReasonerPolicy,
                     "user_average": UserAveragePolicy, "ranker": SyntheticRankerPolicy}

#: ``ColdStartConfig`` fields a resumed run may change (not recorded: ``teacher_kwargs`` may hold a
#: server's address or key).
RESUMABLE_CHANGES = ("output", "teacher_kwargs")

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
    """Teacher model name/path (hf, vllm), served model name (openai), or with ``teacher_policy:
    scripted`` a scripted teacher's name (``SCRIPTED_TEACHERS``; ``similar_items`` for a tool env)."""
    teacher_policy: str = "hf"
    """hf, vllm, openai (an OpenAI-compatible server; set ``teacher_kwargs: {base_url: ...}``) or scripted."""
    teacher_kwargs: dict[str, Any] = field(default_factory=dict)
    samples_per_prompt: int = 4
    """Teacher attempts per sample (the first valid one is kept)."""
    tolerance: float = 0.5
    """A trace is kept when ``|rating - truth| <= tolerance`` and its format holds (``RecRank-*``: the
    env's ``abs_error``, the target's distance from the top, ``rank - 1``)."""
    rationalize: bool = True
    """Ask again with the true rating as a hint when no attempt is kept (envs with a rating scale only)."""
    temperature: float = 0.8
    max_new_tokens: int = 384
    output: str = "runs/sft/cold_start.jsonl"
    seed: int = 0
    match_ratings: bool = False
    """Keep traces in the split's rating proportions (``RecRating-*`` envs): ``num_samples`` is then the
    number of traces to keep, each rating at most its share of the split's ratings times
    ``num_samples``; samples are drawn in a seeded random order, one whose rating has its share is
    not asked, and a shortfall (the split ran out) is reported. Without it the ``tolerance`` filter
    keeps the ratings the teacher gets right: the demo's scripted teacher kept truths averaging 2.64
    against the split's 2.92 (seed 0), and the SFT student learned that lean."""

    def __post_init__(self) -> None:
        self.require(1, "num_samples", "samples_per_prompt", "max_new_tokens")
        self.require(0, "tolerance", "temperature")
        if self.split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {self.split!r}")


@dataclass
class ColdStartReport:
    path: str
    kept: int
    rationalized: int
    dropped: int
    seconds: float
    short: int = 0
    """With ``match_ratings``: traces the rating quotas still wanted when the split ran out."""
    earlier: int = 0
    """Samples a resumed run found done (counted in ``kept``, ``rationalized`` and ``dropped``)."""

    @property
    def total(self) -> int:
        return self.kept + self.rationalized + self.dropped

    def summary(self) -> str:
        n = max(self.total, 1)
        short = f"; {self.short} short of the rating quotas (the split ran out)" if self.short else ""
        earlier = f" ({self.earlier} from the run resumed)" if self.earlier else ""
        return (
            f"{self.total} samples{earlier}: {self.kept} kept ({self.kept / n:.0%}), {self.rationalized} rationalized "
            f"({self.rationalized / n:.0%}), {self.dropped} dropped ({self.dropped / n:.0%}){short} -> {self.path}"
        )


def rating_quotas(targets: np.ndarray, total: int) -> dict[float, int]:
    """``total`` traces shared over the ratings in ``targets`` in proportion to their counts (largest
    remainders, so the quotas sum to ``total``)."""
    values, counts = np.unique(np.asarray(targets, dtype=float), return_counts=True)
    exact = total * counts / counts.sum()
    quotas = np.floor(exact).astype(int)
    for j in np.argsort(-(exact - quotas), kind="stable")[: total - int(quotas.sum())]:
        quotas[j] += 1
    return {float(v): int(q) for v, q in zip(values, quotas)}


def _batches(indices: list[int], targets: np.ndarray, batch_size: int,
             wanted: dict[float, int] | None) -> Iterator[list[int]]:
    """``indices`` in batches, in order. With ``wanted`` (traces still wanted per rating, updated by the
    caller between batches) only samples whose rating still has room, at most that many per rating in
    one batch; a sample held back by its rating's pending answers waits for the next batch, one whose
    rating is full is never asked."""
    if wanted is None:
        for first in range(0, len(indices), batch_size):
            yield indices[first : first + batch_size]
        return
    waiting = list(indices)
    while any(v > 0 for v in wanted.values()):
        batch: list[int] = []
        rest: list[int] = []
        asked: Counter[float] = Counter()
        for position, index in enumerate(waiting):
            if len(batch) == batch_size:
                rest.extend(waiting[position:])  # scanned with the next batch
                break
            rating = float(targets[index])
            if wanted.get(rating, 0) <= 0:
                continue
            if wanted[rating] - asked[rating] > 0:
                batch.append(index)
                asked[rating] += 1
            else:
                rest.append(index)
        if not batch:
            return
        waiting = rest
        yield batch


def with_hint(messages: list[dict[str, str]], rating: float, tag: str) -> list[dict[str, str]]:
    """The prompt with the true rating appended to the last user message."""
    out = [dict(m) for m in messages]
    for m in reversed(out):
        if m["role"] == "user":
            m["content"] += HINT.format(rating=rating, tag=tag)
            break
    return out


def _keeps(info: dict[str, Any], tolerance: float) -> bool:
    """A trace is kept when its format holds and its error is within ``tolerance``."""
    return (info.get("reward_breakdown", {}).get("format_ok", False)
            and info.get("abs_error") is not None and info["abs_error"] <= tolerance)


def _first_valid(env: Any, index: int, completions: list[Any], tolerance: float) -> tuple[Any, dict] | None:
    """The first completion whose format holds and whose rating is within ``tolerance``."""
    for completion in completions:
        env.reset(options={"index": index})
        _, reward, _, _, info = env.step(completion.text)
        if _keeps(info, tolerance):
            return completion, {**info, "reward": reward}
    return None


def progress_path(output: str | Path) -> Path:
    """``<output>.json``, beside the traces: the settings that made them and the samples dropped."""
    output = Path(output)
    return output.with_name(output.name + ".json")


def count_traces(path: str | Path) -> int:
    """The non-empty lines of a trace file (0 when there is none)."""
    path = Path(path)
    return sum(1 for line in path.read_text().splitlines() if line.strip()) if path.is_file() else 0


def read_traces(path: str | Path) -> tuple[list[dict[str, Any]], bool]:
    """The rows of a trace file, and whether it needs a repair before rows are appended (its last line
    cut short by a kill, left out here, or without its newline: :func:`~recgym.agents.evaluation.read_appendable`).
    A ValueError names a line that is not JSON before the last, or a row without the ``index`` and
    ``provenance`` that make-data writes."""
    from recgym.agents.evaluation import read_appendable

    rows, repair = read_appendable(Path(path), "remove that line to resume")
    for number, row in enumerate(rows, 1):
        if not isinstance(row, dict) or "index" not in row or row.get("provenance") not in ("kept", "rationalized"):
            raise ValueError(f"{path}: row {number} is not a row of `recgym sft make-data` (no index or provenance): "
                             "it cannot be resumed; choose another output")
    return rows, repair


class _TraceFile:
    """The JSONL output, each row appended and flushed as it is made (a killed run keeps them), and
    :func:`progress_path`: ``settings`` and the samples dropped, rewritten atomically after each batch
    (:meth:`save`). A fresh file replaces what is there; with ``resume`` the rows and drops already
    there are kept, ``done`` holds their sample indices and ``counts`` their provenance."""

    def __init__(self, output: str | Path, settings: dict[str, Any] | None, resume: bool) -> None:
        from recgym.agents.run_log import write_text_atomic

        self.path, self.progress, self.settings = Path(output), progress_path(output), settings
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.counts: Counter[str] = Counter()
        self.dropped: list[int] = []
        self.ratings: Counter[float] = Counter()  # of the rows already there, for the quotas
        if resume and self.path.exists():
            rows, repair = read_traces(self.path)
            if repair:
                warnings.warn(f"{self.path}: its last line was cut short (the run stopped while writing it): left "
                              "out, its sample is asked again", stacklevel=3)
                write_text_atomic(self.path, "".join(json.dumps(row) + "\n" for row in rows))
            if self.progress.is_file():
                self.dropped = [int(i) for i in json.loads(self.progress.read_text()).get("dropped", [])]
            for row in rows:
                self.counts[row["provenance"]] += 1
                if "target_rating" in row:
                    self.ratings[float(row["target_rating"])] += 1
            self.counts["dropped"] = len(self.dropped)
            self.done = {int(row["index"]) for row in rows} | set(self.dropped)
        else:
            self.progress.unlink(missing_ok=True)
            self.path.write_text("")
            self.done = set()
        self.earlier = len(self.done)
        self.save()
        self.file = self.path.open("a")

    def write(self, row: str, how: str) -> None:
        self.file.write(row + "\n")
        self.file.flush()
        self.counts[how] += 1

    def drop(self, index: int) -> None:
        self.dropped.append(int(index))
        self.counts["dropped"] += 1

    def save(self) -> None:
        from recgym.agents.run_log import write_text_atomic

        write_text_atomic(self.progress, json.dumps({"settings": self.settings, "dropped": self.dropped}) + "\n")

    def close(self) -> None:
        self.file.close()
        self.save()


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
    quotas: dict[float, int] | None = None,
    resume: bool = False,
    settings: dict[str, Any] | None = None,
) -> ColdStartReport:
    """Write kept and rationalized traces for ``indices`` of ``env`` to ``output`` (JSONL), each row
    appended as it is made, and ``settings`` with the samples dropped to :func:`progress_path`. With
    ``quotas`` ({rating: traces}), ``indices`` are candidates in order, asked only while their
    rating's quota is open (:func:`rating_quotas`). With ``resume`` the rows already in ``output`` are
    kept and their samples, and those dropped, are not asked again (the caller checks that the
    settings are the same: :func:`check_cold_start_output`); the report counts the whole file."""
    start = time.perf_counter()
    sampling = sampling or SamplingParams(temperature=0.8, max_new_tokens=384)
    core = env.unwrapped
    tag = core.template.tags[-1]
    rationalize = rationalize and hasattr(core, "scale")  # the hint is a rating; ranking envs have none
    targets = np.asarray(core.dataset.targets(core.split), dtype=float)
    traces = _TraceFile(output, settings, resume)
    wanted = None if quotas is None else {r: q - traces.ratings[r] for r, q in quotas.items()}

    def write(index: int, messages: list, found: tuple[Any, dict], how: str) -> None:
        traces.write(_row(index, messages, _turn(found), found[1], how, core, provenance), how)
        if wanted is not None:
            wanted[float(targets[index])] -= 1

    try:
        for chunk in _batches([i for i in indices if i not in traces.done], targets, batch_size, wanted):
            prompts = [env.reset(options={"index": i})[1]["messages"] for i in chunk]
            attempts = teacher.generate(prompts, n=samples_per_prompt, sampling=sampling)
            pending = []
            for index, messages, completions in zip(chunk, prompts, attempts):
                found = _first_valid(env, index, completions, tolerance)
                if found is not None:
                    write(index, messages, found, "kept")
                else:
                    pending.append((index, messages))
            if rationalize and pending:
                hinted = [with_hint(m, targets[i], tag) for i, m in pending]
                retries = teacher.generate(hinted, n=samples_per_prompt, sampling=sampling)
                for (index, messages), completions in zip(pending, retries):
                    found = _first_valid(env, index, completions, tolerance)
                    if found is not None:  # stored with the hint-free prompt
                        write(index, messages, found, "rationalized")
                    else:
                        traces.drop(index)
            else:
                for index, _ in pending:
                    traces.drop(index)
            traces.save()
    finally:
        traces.close()
    counts = traces.counts
    return ColdStartReport(str(traces.path), counts["kept"], counts["rationalized"], counts["dropped"],
                           time.perf_counter() - start, short=sum(wanted.values()) if wanted else 0,
                           earlier=traces.earlier)


def _turn(found: tuple[Any, dict]) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": found[0].text}]


def _row(index: int, messages: list, completion: list[dict[str, str]], info: dict, how: str, core: Any,
         provenance: dict | None) -> str:
    return json.dumps({
        "prompt": messages,
        "completion": completion,
        **{key: info[key] for key in ("target_rating", "parsed_rating", "rank_of_target") if key in info},
        "reward": info["reward"],
        "provenance": how,
        "index": int(index),
        "split": core.split,
        "dataset": core.dataset.name,
        **(provenance or {}),
    })


def make_tool_cold_start_data(
    env: Any,
    teacher: Policy,
    indices: list[int],
    output: str | Path,
    *,
    samples_per_prompt: int = 1,
    tolerance: float = 0.5,
    sampling: SamplingParams | None = None,
    provenance: dict[str, Any] | None = None,
    batch_size: int = 16,
    resume: bool = False,
    settings: dict[str, Any] | None = None,
) -> ColdStartReport:
    """:func:`make_cold_start_data` for a multi-turn tool env: the teacher plays ``samples_per_prompt``
    episodes of each sample (all turn by turn together, each in its own copy of the env, as
    evaluation plays them); the first kept one is written with the conversation after the prompt
    as its ``completion``."""
    import copy

    from recgym.agents.rollout.episodes import list_stepper, run_episodes
    from recgym.console import make_console

    start = time.perf_counter()
    sampling = sampling or SamplingParams(temperature=0.8, max_new_tokens=384)
    core = env.unwrapped
    traces = _TraceFile(output, settings, resume)
    indices = [i for i in indices if i not in traces.done]
    try:
        with Progress(TextColumn("tool-agent traces"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=make_console(stderr=True)) as bar:
            task = bar.add_task("traces", total=len(indices))
            for first in range(0, len(indices), batch_size):
                chunk = indices[first : first + batch_size]
                envs = [copy.copy(core) for _ in range(len(chunk) * samples_per_prompt)]
                resets = [e.reset(options={"index": chunk[k // samples_per_prompt]})[1] for k, e in enumerate(envs)]
                episodes = run_episodes(list_stepper(envs), resets, teacher, sampling, samples_per_prompt,
                                        end_episode=lambda k, reason, envs=envs: envs[k].end_episode(reason))
                for n, index in enumerate(chunk):
                    played = episodes[n * samples_per_prompt : (n + 1) * samples_per_prompt]
                    kept = next((e for e in played if not e.cut_short and _keeps(e.info, tolerance)), None)
                    if kept is None:
                        traces.drop(index)
                        continue
                    prompt = kept.reset_info["messages"]
                    info = kept.info
                    traces.write(_row(index, prompt, kept.messages[len(prompt):], {**info, "reward": kept.reward},
                                      "kept", core, {"num_calls": info["num_calls"], "tokens_read": info["tokens_read"],
                                                     **(provenance or {})}), "kept")
                traces.save()
                bar.advance(task, len(chunk))
    finally:
        traces.close()
    counts = traces.counts
    return ColdStartReport(str(traces.path), counts["kept"], 0, counts["dropped"], time.perf_counter() - start,
                           earlier=traces.earlier)


def teacher_key(name: str) -> str:
    """A scripted teacher's name as ``SCRIPTED_TEACHERS`` keys it: ``user-average`` is ``user_average``."""
    return name.replace("-", "_")


def scripted_teacher(name: str, template: Any = None) -> Policy:
    """A scripted teacher by name (``SCRIPTED_TEACHERS``, ``-`` or ``_`` between words), with a one-line
    error for an unknown one. For the ``rate_only`` / ``rank_only`` template, a teacher that has that
    form answers without the steps."""
    import inspect

    kind = SCRIPTED_TEACHERS.get(teacher_key(name))
    if kind is None:
        raise ValueError(f"unknown scripted teacher {name!r}; choose one of {', '.join(SCRIPTED_TEACHERS)} "
                         "(similar_items plays the RecRatingTools-* envs)")
    short = template in ("rate_only", "rank_only") and template in inspect.signature(kind).parameters
    return kind(**{template: True}) if short else kind()


def _plain_env_kwargs(env_kwargs: dict[str, Any]) -> dict[str, Any]:
    """``{"env_kwargs": env_kwargs}`` for the rows' provenance when they are plain JSON (``sft train``
    builds the env from them to check the answers), else nothing."""
    if not env_kwargs:
        return {}
    try:
        return {"env_kwargs": json.loads(json.dumps(env_kwargs, allow_nan=False))}
    except (TypeError, ValueError):
        return {}


def cold_start_settings(config: ColdStartConfig) -> dict[str, Any]:
    """What :func:`progress_path` records of ``config``: its fields but :data:`RESUMABLE_CHANGES`."""
    return {k: v for k, v in plain_values(config.to_dict()).items() if k not in RESUMABLE_CHANGES}


def check_cold_start_output(config: ColdStartConfig, resume: bool = False, overwrite: bool = False) -> None:
    """Whether ``config.output`` can take this run, before the teacher loads. A ValueError says what to
    do where a fresh run would replace traces without ``overwrite``, where there is nothing to resume,
    or where the traces were made with other settings."""
    out, progress = Path(config.output), progress_path(config.output)
    if resume and overwrite:
        raise ValueError("--resume continues the traces in output and --overwrite replaces them: give one of them")
    if not resume:
        if not overwrite and ((out.is_file() and out.stat().st_size) or progress.is_file()):
            how = "continue its run with --resume, or " if progress.is_file() else ""
            raise ValueError(f"output {out} holds {count_traces(out)} traces: {how}give --overwrite to replace them, or choose "
                             "another output")
        return
    if not out.is_file():
        raise ValueError(f"nothing to resume: output {out} does not exist; start without --resume")
    saved = json.loads(progress.read_text()).get("settings") if progress.is_file() else None
    if not saved:  # no record, or one written without settings (make_cold_start_data called directly)
        raise ValueError(f"output {out} cannot be resumed: {progress.name}, which records the settings that made it, "
                         "is missing; give --overwrite to start afresh, or choose another output")
    read_traces(out)  # a line before the last that is not JSON, or a row make-data did not write
    now = cold_start_settings(config)
    if changed := changed_fields(ColdStartConfig, now, saved):
        shown = ", ".join(f"{k}: {saved.get(k)!r} -> {now[k]!r}" for k in changed)
        raise ValueError(f"output {out} was made with other settings ({shown}): resume with its settings ({progress}), "
                         "or start afresh with --overwrite or another output")


def run_cold_start(config: ColdStartConfig, teacher: Policy | None = None, resume: bool = False) -> ColdStartReport:
    """``recgym sft make-data``: build the env and teacher from ``config`` and write the JSONL (over
    what is there; with ``resume``, after its rows: :func:`check_cold_start_output`)."""
    import gymnasium as gym

    import recgym.envs  # noqa: F401  (registers the environments)

    if resume:
        check_cold_start_output(config, resume=True)

    if config.split != "train":
        warnings.warn(f"split {config.split!r}: these traces come from a split that GRPO validates on and `recgym eval` "
                      "scores, so training on them leaks the answers; `recgym sft train` refuses them unless "
                      "--allow_eval_splits true (use --split train for training data)", stacklevel=2)
    env = gym.make(config.env_id, split=config.split, **config.env_kwargs)
    n = len(env.unwrapped)
    rng = np.random.default_rng(config.seed)
    quotas = None
    if config.match_ratings:
        core = env.unwrapped
        if getattr(core, "multi_turn", False) or not hasattr(core, "scale"):
            raise ValueError(f"match_ratings keeps traces in the proportions of the ratings of a single-turn "
                             f"RecRating-* env; {config.env_id} has none: leave it false")
        quotas = rating_quotas(core.dataset.targets(config.split), min(config.num_samples, n))
        indices = rng.permutation(n).tolist()
    else:
        indices = sorted(rng.choice(n, size=min(config.num_samples, n), replace=False).tolist())
    if teacher is None and config.teacher_policy == "scripted":
        teacher = scripted_teacher(config.teacher, config.env_kwargs.get("template"))
    elif teacher is None:
        from recgym.agents.policies import make_policy

        teacher = make_policy(config.teacher_policy, config.teacher, **config.teacher_kwargs)
    sampling = SamplingParams(temperature=config.temperature, max_new_tokens=config.max_new_tokens, seed=config.seed)
    provenance = {"teacher": config.teacher, "teacher_policy": config.teacher_policy, "env_id": config.env_id,
                  **_plain_env_kwargs(config.env_kwargs)}
    resuming = {"resume": resume, "settings": cold_start_settings(config)}
    if getattr(env.unwrapped, "multi_turn", False):
        return make_tool_cold_start_data(env, teacher, indices, config.output, samples_per_prompt=config.samples_per_prompt,
                                         tolerance=config.tolerance, sampling=sampling, provenance=provenance, **resuming)
    return make_cold_start_data(
        env, teacher, indices, config.output, samples_per_prompt=config.samples_per_prompt,
        tolerance=config.tolerance, rationalize=config.rationalize, sampling=sampling, provenance=provenance,
        quotas=quotas, **resuming,
    )
