"""Evaluation of a policy over one split of a RecRating environment (what ``recgym eval`` runs).

Each sample's record (ids, prompt hash, completions, parsed ratings, truth, reward breakdowns)
is appended to a JSONL file as soon as it is scored; a rerun with the same file skips the samples
already there. Metrics are the task layer's honest ones (MAE/RMSE with the declared fallback for
unparsed predictions, MAE on parsed only, coverage, format rate, mean reward), with classical
baselines scored on exactly the same samples beside them (except on the train split, which they are
fit on: a one-line note says so instead).

Multi-turn environments (``RecRatingTools-*``) are played turn by turn, a batch of episodes at a
time (:mod:`recgym.agents.rollout.episodes`); their records add each episode's tool calls, tools used,
tokens read and turns, and ``EvalResult.episode_stats`` their means.

With ``k`` completions per sample the prediction is the mean of their ratings, each unparsed one
counted as the sample's declared fallback (so ``k`` = 1 is the single-sample rule); coverage is the
share of completions that parsed.

With ``rating_from_probs`` the prediction is the expected rating under the model's probabilities
of the scale's digits at the rating position (the rating tag the reward parses, as Reason4Rec
decodes), where the backend returns top logprobs; where it cannot (no rating tag, no digit among the
alternatives, a rating of more than one digit token such as ``4.5``), the parsed rating stands and the
record says so (``EvalResult.probs_decoded`` counts
the samples where it decoded one). A scale whose values are not single digits, or a ranking
environment, is refused (:func:`rating_from_probs_problem`).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from recgym.agents.policies.base import token_strings
from recgym.agents.types import Completion, Policy, SamplingParams
from recgym.data.schema import RatingScale
from recgym.metrics import RankingMetrics, RatingMetrics, fallback_predictions, rating_metrics
from recgym.rewards import rating_tag

#: How many alternatives per token to ask for when decoding the rating from probabilities.
RATING_TOP_LOGPROBS = 20
#: The sampling ``evaluate`` uses when given none.
GREEDY = SamplingParams(temperature=0.0, max_new_tokens=512)


def prompt_hash(messages: Any) -> str:
    return hashlib.sha1(json.dumps(messages, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:16]


def _scale_digits(scale: RatingScale) -> dict[str, float] | None:
    values = scale.values()
    if len(values) > 10 or not all(float(v).is_integer() and 0 <= v <= 9 for v in values):
        return None
    return {str(int(v)): float(v) for v in values}


def rating_from_probs_problem(env: Any) -> str | None:
    """Why ``rating_from_probs`` cannot apply to ``env`` (ranking environments, a scale whose values are not
    single digits: :func:`expected_rating` finds nothing there), or None."""
    core = env.unwrapped
    if getattr(core, "task", "rating") == "ranking":
        return "a ranking environment has no rating to decode"
    if _scale_digits(core.scale) is None:
        return f"the {core.dataset.name} scale {core.scale.label} has values that are not single digits"
    return None


def expected_rating(
    completion: Completion,
    scale: RatingScale,
    decode: Callable[[list[int]], str] | None = None,
    tag: str = "rate",
) -> float | None:
    """The expected rating over the scale's digits at the first token inside the ``<tag>`` the reward
    reads the rating from (the first one that holds a number, :func:`recgym.rewards.parse_completion`).

    Needs ``completion.top_logprobs``; token ids are turned into text with ``decode``. None when
    the scale's values are not single digits, no tag holds a number, that number is not one digit token
    (``4.5`` written as ``4``, ``.``, ``5``: the first digit's alternatives do not say the rating), or no
    digit is among the alternatives there.
    """
    digits = _scale_digits(scale)
    if digits is None or not completion.top_logprobs:
        return None
    pieces = token_strings(completion, decode)
    if not pieces:
        return None
    text, starts = "", []
    for piece in pieces:
        starts.append(len(text))
        text += piece
    found = rating_tag(text, tag)
    if found is None:
        return None
    open_at = found[0]
    after = open_at + len(tag) + 2
    number = text[after : text.find(f"</{tag}>", after)].strip()
    position = next(
        (i for i, (s, piece) in enumerate(zip(starts, pieces)) if s + len(piece) > after and piece.strip()), None
    )
    if (position is None or position >= len(completion.top_logprobs) or number not in digits
            or pieces[position].strip() != number):
        return None
    probs: dict[float, float] = {}
    for key, logprob in completion.top_logprobs[position].items():
        token = (decode([key]) if isinstance(key, int) and decode else str(key)).strip()
        if token in digits and math.isfinite(logprob):
            probs[digits[token]] = probs.get(digits[token], 0.0) + math.exp(logprob)
    total = sum(probs.values())
    if total <= 0:
        return None
    return float(sum(v * p for v, p in probs.items()) / total)


@dataclass
class EvalResult:
    metrics: RatingMetrics | RankingMetrics
    """``RatingMetrics``; for ranking envs ``RankingMetrics`` (``ndcg@5`` ... ``mrr``, ``coverage``, ...)."""
    records: list[dict[str, Any]]
    baselines: dict[str, dict[str, float]] = field(default_factory=dict)
    """``{baseline: {"mae", "rmse", "n"}}`` on the same samples (ranking: ``ranking_metrics``
    plus ``paired_ndcg@10`` and its ``paired_se`` against the LLM); empty when unavailable."""
    baselines_note: str = ""
    seconds: float = 0.0
    """This call's time; a resumed file's earlier samples took theirs before (:attr:`seconds_total`)."""
    skipped: int = 0
    """Samples found already done in the output file (resume)."""
    episode_stats: dict[str, float] = field(default_factory=dict)
    """Multi-turn environments: per episode, the mean ``tool_calls``, ``tokens_read``, ``turns`` and
    ``invalid_turns`` (empty for single-turn ones)."""
    probs_decoded: int | None = None
    """With ``rating_from_probs``: the samples where the rating was decoded from probabilities for at
    least one completion (None without it)."""

    @property
    def seconds_total(self) -> float | None:
        """The time every record took, by the records' own ``seconds`` (its batch's time over its
        samples), resumed ones included; None where a record from an older recgym has none."""
        times = [r.get("seconds") for r in self.records]
        if not times or not all(isinstance(t, int | float) for t in times):
            return None
        return float(sum(times))


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """The records of an existing JSONL file (a torn last line, from an interrupted run, is dropped)."""
    return read_appendable(Path(path))[0]


def read_appendable(path: Path, hint: str = "is it a recgym eval results file?") -> tuple[list[Any], bool]:
    """The JSON lines of a file that runs append to, and whether it needs a repair before more lines
    are appended (a torn last line dropped, or a last line without its newline); a line before the
    last that is not JSON is a ValueError ending in ``hint``."""
    records: list[dict[str, Any]] = []
    if not path.exists():
        return records, False
    repair = False
    with path.open() as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            repair = not line.endswith("\n")
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                if f.readline():  # only the very last line may be torn
                    raise ValueError(f"{path}:{line_no}: not JSON; {hint}") from None
                repair = True
    return records, repair


def dataset_key(dataset: Any) -> str:
    """What a prepared dataset was built from: its cache key (``recgym.data.pipeline.cache_key``: the raw
    files' paths, sizes and modification times and the preparation options; its cache folder is named by
    it), or for one made in memory (the synthetic worlds) a hash of its ratings and splits."""
    cached = dataset.stats.get("cache_dir")
    if cached:
        return Path(cached).name
    digest = hashlib.sha1()
    for values in (dataset.user_codes, dataset.item_codes, dataset.ratings, dataset.timestamps, dataset.split_codes,
                   *(dataset.samples[split] for split in sorted(dataset.samples))):
        digest.update(np.ascontiguousarray(values).tobytes())
    return digest.hexdigest()[:20]


#: How ``evaluate`` averages a sample's k completions; a file that averaged otherwise is not resumed.
MEAN_OF_K = "each unparsed completion counts as the fallback"


def record_header(
    env: Any,
    sampling: SamplingParams | None = None,
    samples_per_prompt: int = 1,
    rating_from_probs: bool = False,
    header: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The settings ``evaluate`` writes into every record, which a file it resumes must hold: the split,
    dataset (its name and :func:`dataset_key`) and template (ranking: the lists' settings), the sampling,
    and ``header`` (e.g. env id, model)."""
    from recgym.prompts import RANKING_TEMPLATES, TEMPLATES

    core, sampling = env.unwrapped, sampling or GREEDY
    ranking = getattr(core, "task", "rating") == "ranking"
    templates = RANKING_TEMPLATES if ranking else TEMPLATES
    template = next((name for name, t in templates.items() if t == getattr(core, "template", None)), None)
    task = ({"task": "ranking", "num_candidates": core.num_candidates, "negatives": core.negatives} if ranking
            else {"scale": core.scale.label, "rating_from_probs": rating_from_probs})
    if samples_per_prompt > 1:  # older recgym averaged the parsed completions only (ranking: scored the first)
        task["mean_of_k"] = MEAN_OF_K
    return {"split": core.split, "dataset": core.dataset.name, "dataset_key": dataset_key(core.dataset), **task,
            "template": template, "temperature": sampling.temperature, "top_p": sampling.top_p, "max_new_tokens": sampling.max_new_tokens,
            "seed": sampling.seed, "stop": list(sampling.stop), "samples_per_prompt": samples_per_prompt,
            **(header or {})}


def _with_policy(policy: Any, header: dict[str, Any] | None = None) -> dict[str, Any]:
    """``header`` with who scores where it does not say: ``policy``, the policy's class name, and ``model``,
    its ``model_name`` or ``name`` where it has one (so a file another policy scored is not resumed);
    ``header`` as it is for no policy (a finished file read back, whoever scored it)."""
    if policy is None:
        return dict(header or {})
    model = next((v for v in (getattr(policy, "model_name", None), getattr(policy, "name", None))
                  if isinstance(v, str)), None)
    return {"policy": type(policy).__name__, **({"model": model} if model else {}), **(header or {})}


#: Fields of a caller's ``header`` (``recgym eval``'s) that a file may hold where a new header leaves them
#: out: a difference too (a context length given, then left out). Not ``policy`` and ``model``: a header
#: lacks them only where no policy scores (:func:`_with_policy`), and another policy's class differs.
CALLER_FIELDS = ("env_id", "env_kwargs", "dtype", "max_model_len")


def check_resumable(path: str | Path, header: dict[str, Any], env: Any = None, total: int | None = None) -> None:
    """A ValueError where ``path`` holds records of other settings than ``header`` (see
    :func:`record_header`) or a sample twice, where another eval is writing it, or, given ``env``, where
    records among its first ``total`` samples (all where None) were scored on other prompts than ``env``
    gives: resuming it would mix them in one result."""
    check_not_being_written(path)
    records = read_records(Path(path))
    _check_resumable(records, header, Path(path))
    if env is not None:
        _check_prompts(env, [r for r in records if total is None or r.get("index", total) < total], Path(path))


def check_not_being_written(path: str | Path) -> None:
    """A ValueError where another eval is writing ``path`` now (:func:`_lock`)."""
    if Path(path).exists():
        _lock(Path(path)).close()


def _check_resumable(records: list[dict[str, Any]], header: dict[str, Any], path: Path) -> None:
    held: set[Any] = set()
    for record in records:
        if record.get("index") in held:
            raise ValueError(f"{path} holds sample {record['index']} twice (two evals wrote it at once, or files "
                             "were joined); pass another --out (out=), or --no-resume (resume=False) to overwrite it")
        held.add(record.get("index"))
    for record in records[:1]:  # every record of a file carries the same header
        header = json.loads(json.dumps(header))
        greedy = record.get("temperature") == header.get("temperature") == 0  # a seed changes nothing there
        differ = [f"{key}={record[key]!r}, not {value!r}" if key in record else f"no {key}, not {value!r}"
                  for key, value in header.items()
                  if record.get(key, ...) != value and not (greedy and key == "seed")]
        differ += [f"{key}={record[key]!r}, not given" for key in CALLER_FIELDS if key in record and key not in header]
        if differ:
            raise ValueError(f"{path} holds results of other settings ({'; '.join(differ)}); pass another --out, "
                             "or delete the file (or --no-resume to overwrite it)")


#: Why no baselines are scored on train samples: they would be scored on their own training data.
IN_SAMPLE_NOTE = ("no baselines on the train split: they are fit on it, so they would score their own training "
                  "ratings; compare on --split valid or test")


def baseline_scores(dataset: Any, split: str, indices: Sequence[int]) -> tuple[dict[str, dict[str, float]], str]:
    """Classical baselines (``recgym.baselines``) on exactly these samples, or ``({}, why not)``; none
    on the train split, which they are fit on."""
    predictions, targets, note = baseline_predictions(dataset, split, indices)
    if not predictions:
        return {}, note
    from recgym.baselines import error_metrics

    return {name: error_metrics(p, targets) for name, p in predictions.items()}, ""


def baseline_predictions(dataset: Any, split: str, indices: Sequence[int]) -> tuple[
        dict[str, np.ndarray], np.ndarray | None, str]:
    """:func:`baseline_scores`' per-sample figures: each baseline's predictions on these samples and
    their targets, or ``({}, None, why not)``."""
    if split == "train":
        return {}, None, IN_SAMPLE_NOTE
    try:
        from recgym.baselines import fit_baselines, split_arrays
    except ImportError as exc:
        return {}, None, f"baselines unavailable ({exc})"
    try:
        predictors = fit_baselines(dataset)
    except ValueError as exc:
        return {}, None, f"baselines unavailable ({exc})"
    users, items, targets = split_arrays(dataset, split, indices)
    return {name: np.asarray(predict(users, items), dtype=np.float64) for name, predict in predictors.items()}, targets, ""


def evaluate(
    env: Any,
    policy: Policy,
    *,
    n: int | None = None,
    out: str | Path | None = None,
    resume: bool = True,
    sampling: SamplingParams | None = None,
    samples_per_prompt: int = 1,
    batch_size: int = 8,
    rating_from_probs: bool = False,
    baselines: bool = True,
    header: dict[str, Any] | None = None,
    on_record: Callable[[dict[str, Any], dict[str, float]], None] | None = None,
) -> EvalResult:
    """Score ``policy`` on the first ``n`` samples (default: all) of ``env``'s split.

    Args:
        env: a RecRatingEnv (or a gymnasium wrapper of one); its split is the one evaluated.
        sampling: default greedy (temperature 0) with 512 new tokens. Under greedy decoding a file
            written with another ``seed`` is resumed (the seed changes nothing there).
        samples_per_prompt: k completions per sample; the prediction is their mean, each unparsed
            one counted as the sample's fallback (None where none parsed); coverage is per completion.
        out: JSONL file; records are appended as samples finish. With ``resume``, samples
            already in it are skipped; the file must hold the same settings (:func:`record_header`)
            and each record the prompt (ranking: and candidates) ``env`` gives for its index.
        rating_from_probs: decode the rating as the expected value over the scale's digits.
        header: more fields written into every record and checked on resume (e.g. env id, model);
            ``policy`` and ``model`` default to the policy's (:func:`_with_policy`).
        on_record: called after each sample with the record and the running figures
            (``done``, ``total``, ``mae``, ``coverage``; ranking: ``ndcg@10`` for ``mae``), e.g. to
            drive a progress bar.
    """
    core = env.unwrapped
    if rating_from_probs and (problem := rating_from_probs_problem(env)):
        raise ValueError(f"rating_from_probs cannot apply: {problem}")
    if getattr(core, "task", "rating") == "ranking":
        return evaluate_ranking(env, policy, n=n, out=out, resume=resume, sampling=sampling,
                                samples_per_prompt=samples_per_prompt, batch_size=batch_size,
                                baselines=baselines, header=header, on_record=on_record)
    dataset, split, scale = core.dataset, core.split, core.scale
    total = len(core) if n is None else min(int(n), len(core))
    if total < 1:
        raise ValueError(f"nothing to evaluate: n={n}, split {split!r} has {len(core)} samples")
    _check_sizes(samples_per_prompt, batch_size)
    header = record_header(env, sampling, samples_per_prompt, rating_from_probs, _with_policy(policy, header))
    sampling = sampling or GREEDY
    if rating_from_probs and sampling.logprobs < RATING_TOP_LOGPROBS:
        sampling = SamplingParams(**{**sampling.__dict__, "logprobs": RATING_TOP_LOGPROBS})
    tokenizer = getattr(policy, "tokenizer", None)
    decode = tokenizer.decode if tokenizer is not None else None

    user_avg, item_avg = dataset.prior_averages(split)
    fallbacks = fallback_predictions(user_avg, item_avg, dataset.train_mean())

    path = Path(out) if out is not None else None
    records, sink = _open_records(path, resume, header, total, env)
    done = {int(r["index"]) for r in records}
    skipped = len(done)
    todo = [i for i in range(total) if i not in done]
    errors = [abs(r["prediction_or_fallback"] - r["target"]) for r in records]
    parsed = [parsed_share(r) for r in records]
    multi_turn = bool(getattr(core, "multi_turn", False))
    episode_envs: list[Any] = []

    def score(indices: list[int]) -> list[dict[str, Any]]:
        if multi_turn:
            scored = _play_episodes(core, episode_envs, indices, policy, sampling, samples_per_prompt, fallbacks,
                                    rating_from_probs, decode)
        else:
            reset_infos = [env.reset(options={"index": index})[1] for index in indices]
            groups = policy.generate([i["messages"] for i in reset_infos], n=samples_per_prompt, sampling=sampling)
            scored = [_score(env, info, completions, float(fallbacks[index]), rating_from_probs, decode)
                      for index, info, completions in zip(indices, reset_infos, groups)]
        return [{**header, **record} for record in scored]

    def progress(record: dict[str, Any]) -> dict[str, float]:
        errors.append(abs(record["prediction_or_fallback"] - record["target"]))
        parsed.append(parsed_share(record))
        return {"mae": float(np.mean(errors)), "coverage": float(np.mean(parsed))}

    seconds = _record_batches(sink, todo, batch_size, score, records, total, on_record, progress)

    records.sort(key=lambda r: r["index"])
    metrics = rating_metrics(
        [r["target"] for r in records],
        [r["prediction"] for r in records],
        [r["fallback"] for r in records],
        scale,
        format_ok=[r["format_rate"] for r in records],
        rewards=[r["reward"] for r in records],
        parsed_share=[parsed_share(r) for r in records],
    )
    scores, note = baseline_scores(dataset, split, [r["index"] for r in records]) if baselines else ({}, "")
    stats = {}
    if multi_turn and records:
        stats = {f"{key}_mean": float(np.mean([np.mean(r[key]) for r in records]))
                 for key in ("tool_calls", "tokens_read", "turns", "invalid_turns")}
    decoded = None
    if rating_from_probs:
        decoded = sum(any(q is not None for q in r.get("prob_ratings") or []) for r in records)
        if records and not decoded:
            warnings.warn(f"rating_from_probs decoded no rating on any of the {len(records)} samples (no completion "
                          "had top logprobs at its rating tag's digit): every prediction is the parsed one",
                          stacklevel=2)
    return EvalResult(metrics, records, scores, note, seconds, skipped, stats, decoded)


def completion_ranks(record: dict[str, Any]) -> list[int]:
    """The target's rank in each completion's order of a ranking record (files from before 2026-12-07
    hold the first completion's only)."""
    return record.get("ranks") or [record["rank"]]


def ranking_parsed_share(record: dict[str, Any]) -> float:
    """The share of a ranking record's completions whose list parsed."""
    return float(np.mean([bool(b["format_ok"]) for b in record["reward_breakdowns"]]))


def parsed_share(record: dict[str, Any]) -> float:
    """The share of a record's completions that parsed (for a record of an older recgym, which has no
    ``parsed_share``: 1 where it has a prediction, else 0)."""
    share = record.get("parsed_share")
    return float(share) if share is not None else float(record["prediction"] is not None)


def _play_episodes(
    core: Any,
    envs: list[Any],
    indices: list[int],
    policy: Policy,
    sampling: SamplingParams,
    samples_per_prompt: int,
    fallbacks: np.ndarray,
    rating_from_probs: bool,
    decode: Callable[[list[int]], str] | None,
) -> list[dict[str, Any]]:
    """Multi-turn environments: play ``samples_per_prompt`` episodes of each sample, all turn by
    turn together, each in its own copy of the environment, and score them."""
    import copy

    from recgym.agents.rollout.episodes import list_stepper, run_episodes

    needed = len(indices) * samples_per_prompt
    envs += [copy.copy(core) for _ in range(needed - len(envs))]
    envs = envs[:needed]
    reset_infos = [env.reset(options={"index": indices[k // samples_per_prompt]})[1] for k, env in enumerate(envs)]
    episodes = run_episodes(list_stepper(envs), reset_infos, policy, sampling, samples_per_prompt,
                            end_episode=lambda k, reason: envs[k].end_episode(reason))
    records = []
    for n, index in enumerate(indices):
        played = episodes[n * samples_per_prompt : (n + 1) * samples_per_prompt]
        infos = [e.info for e in played]
        record = _record(core, reset_infos[n * samples_per_prompt], [e.turns[-1] for e in played], infos,
                         float(fallbacks[index]), rating_from_probs, decode)
        record.update(
            completions=[e.transcript for e in played],
            completion_tokens=[sum(len(t.completion_token_ids) or len(t.logprobs) for t in e.turns) for e in played],
            tool_calls=[i["num_calls"] for i in infos],
            tools=[[c["tool"] for c in i["calls"]] for i in infos],
            tokens_read=[i["tokens_read"] for i in infos],
            turns=[i["turn"] for i in infos],
            invalid_turns=[i["invalid_turns"] for i in infos],
            truncated=[e.truncated for e in played],
        )
        records.append(record)
    return records


def _score(
    env: Any,
    reset_info: dict[str, Any],
    completions: list[Completion],
    fallback: float,
    rating_from_probs: bool,
    decode: Callable[[list[int]], str] | None,
) -> dict[str, Any]:
    index = int(reset_info["index"])
    infos = []
    for completion in completions:
        env.reset(options={"index": index})
        _, _, _, _, info = env.step(completion.text)
        infos.append(info)
    return _record(env.unwrapped, reset_info, completions, infos, fallback, rating_from_probs, decode)


def _record(
    core: Any,
    reset_info: dict[str, Any],
    completions: list[Completion],
    infos: list[dict[str, Any]],
    fallback: float,
    rating_from_probs: bool,
    decode: Callable[[list[int]], str] | None,
) -> dict[str, Any]:
    """One sample's record from its (final) completions and the env's infos after them: the
    prediction is the mean over completions, each unparsed one counted as ``fallback`` (None where
    none parsed)."""
    index, scale = int(reset_info["index"]), core.scale
    parsed = [info["parsed_rating"] for info in infos]
    prob_ratings = None
    if rating_from_probs:
        tag = core.template.tags[-1]
        prob_ratings = [expected_rating(c, scale, decode, tag) for c in completions]
        # the expected rating replaces the parsed one where it could be decoded
        parsed = [p if q is None else scale.clip(q) for p, q in zip(parsed, prob_ratings)]
    share = float(np.mean([p is not None for p in parsed]))
    values = [fallback if p is None else scale.clip(p) for p in parsed]
    prediction = float(np.mean(values)) if share > 0 else None
    target = float(infos[0]["target_rating"])
    breakdowns = [info["reward_breakdown"] for info in infos]
    return {
        "index": index,
        "user_id": reset_info["user_id"],
        "item_id": reset_info["item_id"],
        "prompt_sha1": prompt_hash(reset_info["messages"]),
        "completions": [c.text for c in completions],
        "finish_reasons": [c.finish_reason for c in completions],
        "completion_tokens": [len(c.completion_token_ids) or len(c.logprobs) for c in completions],
        "parsed_ratings": [info["parsed_rating"] for info in infos],
        "prob_ratings": prob_ratings,
        "prediction": prediction,
        "parsed_share": share,
        "fallback": fallback,
        "prediction_or_fallback": prediction if prediction is not None else fallback,
        "target": target,
        "reward_breakdowns": breakdowns,
        "reward": float(np.mean([b["total"] for b in breakdowns])),
        "format_rate": float(np.mean([bool(b["format_ok"]) for b in breakdowns])),
    }


def _check_sizes(samples_per_prompt: int, batch_size: int) -> None:
    if samples_per_prompt < 1:
        raise ValueError(f"samples_per_prompt must be >= 1, got {samples_per_prompt}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")


def _lock(path: Path) -> IO[str]:
    """``path`` opened to append to, locked against another eval's writing it until it is closed."""
    sink = path.open("a")
    try:
        fcntl.flock(sink, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        sink.close()
        raise ValueError(f"{path} is being written by another eval now; pass another --out (out=), or wait for "
                         "it to finish") from None
    return sink


def _open_records(
    path: Path | None, resume: bool, header: dict[str, Any], total: int, env: Any
) -> tuple[list[dict[str, Any]], IO[str] | None]:
    """The records of the first ``total`` samples already in ``path`` to resume from, each checked
    against what ``env`` gives for its index (:func:`_check_prompts`), and ``path`` locked to append to
    (:func:`_lock`; None without a path). A file with a torn last line is rewritten without it, whole or
    not at all (a temporary file, then a rename)."""
    if path is None:
        return [], None
    path.parent.mkdir(parents=True, exist_ok=True)
    sink = _lock(path)
    try:
        if not resume:
            sink.truncate(0)
            return [], sink
        records, repair = read_appendable(path)
        _check_resumable(records, header, path)
        resumed = [r for r in records if r.get("index", total) < total]
        _check_prompts(env, resumed, path)
        if repair:
            from recgym.agents.run_log import write_text_atomic

            write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in records))
            sink.close()  # it holds the file the rename replaced
            sink = _lock(path)
    except BaseException:
        sink.close()
        raise
    return resumed, sink


def _check_prompts(env: Any, records: list[dict[str, Any]], path: Path) -> None:
    """A ValueError at the first record whose prompt (ranking: or candidate list) is not the one ``env``
    gives for its index now: settings the header does not hold (``candidate_seed``,
    ``max_user_history``, ...) differ. A record of an older recgym without a field is not checked on it."""
    for record in sorted(records, key=lambda r: r["index"]):
        _, info = env.reset(options={"index": int(record["index"])})
        now = {"prompt_sha1": prompt_hash(info["messages"]), "candidates": info.get("candidates")}
        differ = [name for key, name in (("prompt_sha1", "prompt"), ("candidates", "candidate list"))
                  if key in record and record[key] != now[key]]
        if differ:
            example = "candidate_seed or max_user_history" if "candidates" in info else "max_user_history"
            raise ValueError(f"{path}: sample {record['index']} was scored on another {' and '.join(differ)} than "
                             f"this environment gives (other env settings, e.g. {example}); "
                             "pass another --out (out=), or --no-resume (resume=False) to overwrite it")


def _record_batches(
    sink: IO[str] | None,
    todo: list[int],
    batch_size: int,
    score: Callable[[list[int]], list[dict[str, Any]]],
    records: list[dict[str, Any]],
    total: int,
    on_record: Callable[[dict[str, Any], dict[str, float]], None] | None,
    progress: Callable[[dict[str, Any]], dict[str, float]],
) -> float:
    """Score ``todo`` in batches of ``batch_size`` (``score(indices) -> records``), appending each
    record, with its share of its batch's ``seconds``, to ``records`` and to the JSONL ``sink`` (closed
    at the end) as soon as it exists, and reporting ``progress(record)`` with ``done``/``total`` to
    ``on_record``; returns the seconds taken."""
    start = time.perf_counter()
    try:
        for offset in range(0, len(todo), batch_size):
            began = time.perf_counter()
            batch = score(todo[offset : offset + batch_size])
            each = (time.perf_counter() - began) / max(1, len(batch))
            for record in batch:
                record["seconds"] = each
                records.append(record)
                stats = progress(record)
                if sink is not None:
                    sink.write(json.dumps(record) + "\n")
                    sink.flush()
                if on_record is not None:
                    on_record(record, {"done": len(records), "total": total, **stats})
    finally:
        if sink is not None:
            sink.close()
    return time.perf_counter() - start


def evaluate_ranking(
    env: Any,
    policy: Policy,
    *,
    n: int | None = None,
    out: str | Path | None = None,
    resume: bool = True,
    sampling: SamplingParams | None = None,
    samples_per_prompt: int = 1,
    batch_size: int = 8,
    baselines: bool = True,
    header: dict[str, Any] | None = None,
    on_record: Callable[[dict[str, Any], dict[str, float]], None] | None = None,
) -> EvalResult:
    """``evaluate`` for a RecRank env: NDCG@5/@10, HR@1/@5/@10, MRR (of each completion's order, the
    prompt's order where it does not parse; with k completions a list's figure is their mean),
    coverage (per completion), format rate, mean reward, and the ranking baselines on the same
    candidate lists with paired standard errors."""
    from recgym.metrics import paired_ranking_difference, ranking_metrics
    from recgym.rewards import ndcg_at_k

    core = env.unwrapped
    total = len(core) if n is None else min(int(n), len(core))
    if total < 1:
        raise ValueError(f"nothing to evaluate: n={n}, split {core.split!r} has {len(core)} lists")
    _check_sizes(samples_per_prompt, batch_size)
    header = record_header(env, sampling, samples_per_prompt, header=_with_policy(policy, header))
    sampling = sampling or GREEDY
    path = Path(out) if out is not None else None
    records, sink = _open_records(path, resume, header, total, env)
    skipped = len(records)
    done = {int(r["index"]) for r in records}
    todo = [i for i in range(total) if i not in done]
    gains = [np.mean([ndcg_at_k(rank, 10) for rank in completion_ranks(r)]) for r in records]
    parsed = [ranking_parsed_share(r) for r in records]

    def score(indices: list[int]) -> list[dict[str, Any]]:
        reset_infos = [env.reset(options={"index": index})[1] for index in indices]
        groups = policy.generate([i["messages"] for i in reset_infos], n=samples_per_prompt, sampling=sampling)
        scored = []
        for index, info, completions in zip(indices, reset_infos, groups):
            breakdowns = []
            for completion in completions:
                env.reset(options={"index": index})
                breakdowns.append(env.step(completion.text)[4]["reward_breakdown"])
            scored.append({**header, "index": index, "user_id": info["user_id"],
                           "prompt_sha1": prompt_hash(info["messages"]), "candidates": info["candidates"],
                           "completions": [c.text for c in completions],
                           "finish_reasons": [c.finish_reason for c in completions],
                           "reward_breakdowns": breakdowns, "rank": breakdowns[0]["rank_of_target"],
                           "ranks": [b["rank_of_target"] for b in breakdowns],
                           # the rating records' error fields, as the distance from the top
                           "target": 1, "prediction_or_fallback": breakdowns[0]["rank_of_target"],
                           "reward": float(np.mean([b["total"] for b in breakdowns])),
                           "format_rate": float(np.mean([bool(b["format_ok"]) for b in breakdowns]))})
        return scored

    def progress(record: dict[str, Any]) -> dict[str, float]:
        gains.append(np.mean([ndcg_at_k(rank, 10) for rank in completion_ranks(record)]))
        parsed.append(ranking_parsed_share(record))
        return {"ndcg@10": float(np.mean(gains)), "coverage": float(np.mean(parsed))}

    seconds = _record_batches(sink, todo, batch_size, score, records, total, on_record, progress)
    records.sort(key=lambda r: r["index"])
    ranks = [completion_ranks(r) for r in records]
    metrics = RankingMetrics(ranking_metrics(ranks, [ranking_parsed_share(r) for r in records]))
    metrics.update(format_rate=float(np.mean([r["format_rate"] for r in records])),
                   mean_reward=float(np.mean([r["reward"] for r in records])))
    scores: dict[str, dict[str, float]] = {}
    if baselines:
        from recgym.baselines import ranking_baseline_ranks

        lists = [core.lists[r["index"]] for r in records]
        for name, base in ranking_baseline_ranks(core.dataset, core.split, lists).items():
            scores[name] = ranking_metrics(base)
            if len(ranks) >= 2:
                gain, se = paired_ranking_difference(base, ranks)
                scores[name].update({"paired_ndcg@10": gain, "paired_se": se})
    return EvalResult(metrics, records, scores, "", seconds, skipped)
