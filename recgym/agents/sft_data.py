"""The rows RecOne's SFT trains on (:mod:`recgym.agents.sft`): cold-start JSONL read and checked
(:func:`read_sft_rows`: a row that is not a chat-format prompt/completion pair is refused with its
file and line; :func:`check_splits`: rows of the valid or test split are refused unless allowed;
:func:`check_rows`: rows that train but look wrong are counted for one warning), then made a
``datasets.Dataset`` (:func:`load_sft_data`; multi-turn episodes tokenized by :func:`episode_tokens`
in the rollout's own layout)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from recgym.agents.teachers.cold_start import HINT


class SFTDataError(ValueError):
    """Rows ``recgym sft train`` cannot train on; the message is one line naming the file (and line)."""


#: What a malformed row is told.
CHAT_FORMAT = ("prompt and completion must be lists of {role, content} messages (chat format); plain-text rows "
               "are not supported")
#: The opening words of the cold-start hint (:data:`~recgym.agents.teachers.cold_start.HINT`): a prompt
#: that still holds them teaches a model to rate from an answer it is given.
HINT_WORDS = HINT.split("{rating")[0].strip()


def _json_kind(value: Any) -> str:
    return {dict: "object", list: "list", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), "number")


def row_problem(row: Any) -> str | None:
    """Why ``row`` (one parsed JSONL line) is not a chat-format prompt/completion pair; None if it is."""
    if not isinstance(row, dict):
        return f"a row must be a JSON object with prompt and completion, got a JSON {_json_kind(row)}: {CHAT_FORMAT}"
    if "messages" in row and "prompt" not in row and "completion" not in row:
        return ("a single messages list is not supported: give the messages before the answer as prompt and the "
                "assistant's answer as completion, two lists of {role, content} messages")
    for key in ("prompt", "completion"):
        value = row.get(key)
        if value is None:
            return f"no {key}: {CHAT_FORMAT}"
        if isinstance(value, dict):
            return f"{key} is one message, not a list: {CHAT_FORMAT}"
        if not isinstance(value, list):
            return f"{key} is a JSON {_json_kind(value)}: {CHAT_FORMAT}"
        if not value:
            return f"{key} is an empty list: {CHAT_FORMAT}"
        for k, message in enumerate(value, 1):
            if not isinstance(message, dict) or not isinstance(message.get("role"), str):
                return f"{key} message {k} is not a {{role, content}} message: {CHAT_FORMAT}"
            if not isinstance(message.get("content"), str):
                got = "no content" if "content" not in message else f"content {json.dumps(message['content'])[:40]}"
                return f"{key} message {k} ({message['role']}) has {got}: every message needs its text as a string"
    if (role := row["completion"][0]["role"]) != "assistant":
        return f"completion must start with an assistant turn, not {role!r} (the loss is on the assistant's turns)"
    return None


def read_sft_rows(path: str | Path) -> list[dict[str, Any]]:
    """The JSONL's rows, each with ``prompt`` and ``completion`` chat messages (:func:`row_problem`).
    Each line is parsed on its own, so a bad one is an :class:`SFTDataError` naming ``FILE:LINE``
    (the first bad line, and how many there are)."""
    rows: list[dict[str, Any]] = []
    bad: list[str] = []
    for n, line in enumerate(Path(path).read_bytes().splitlines(), 1):  # bytes: only \n and \r end a line
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except UnicodeDecodeError:
            bad.append(f"{path}:{n}: not UTF-8 text")
            continue
        except json.JSONDecodeError as exc:
            bad.append(f"{path}:{n}: not JSON ({exc.msg} at column {exc.colno})")
            continue
        if problem := row_problem(row):
            bad.append(f"{path}:{n}: {problem}")
        else:
            rows.append(row)
    if bad:
        more = f" ({len(bad)} bad lines in all)" if len(bad) > 1 else ""
        raise SFTDataError(bad[0] + more)
    if not rows:
        raise SFTDataError(f"{path} holds no training rows (did make-data keep any?)")
    return rows


def check_splits(path: str | Path, rows: list[dict[str, Any]], allow: bool = False) -> dict[str, int]:
    """How many rows come from each split other than train (the ``split`` ``sft make-data`` records);
    an :class:`SFTDataError` when there are any and ``allow`` is off."""
    other = dict(Counter(str(r["split"]) for r in rows if r.get("split", "train") != "train"))
    if other and not allow:
        shown = ", ".join(f"{count} from {split}" for split, count in sorted(other.items()))
        raise SFTDataError(f"{path}: {sum(other.values())} of {len(rows)} rows come from other splits than train "
                           f"({shown}): GRPO validates on them and `recgym eval` scores them, so training on them leaks "
                           "the answers; make the traces with --split train, or give --allow_eval_splits true")
    return other


def is_multi_turn(row: dict[str, Any]) -> bool:
    """A row whose completion holds more than one turn (a tool env's episode)."""
    return len(row["completion"]) > 1


def _answer_checker(env_id: str, env_kwargs: dict[str, Any]):
    """``text -> (format broken, rating off the scale)`` by the env's own reward and parser, or the
    reason it cannot be had here (an env that does not build, or has no answer format)."""
    import gymnasium as gym

    import recgym.envs  # noqa: F401  (registers the environments)
    from recgym.rewards import parse_completion

    try:
        core = gym.make(env_id, **env_kwargs).unwrapped
    except (gym.error.Error, OSError, ValueError, TypeError, KeyError, ImportError) as exc:
        return f"{env_id} does not build here ({' '.join(str(exc).split())[:200]})"
    reward = getattr(core, "reward_fn", None)
    if reward is None or not hasattr(core, "template"):
        return f"{env_id} has no answer format to check"
    if hasattr(core, "num_candidates"):  # a ranking env
        return lambda text: (not reward(text, 0, core.num_candidates).get("format_ok", False), False)

    def rating(text: str) -> tuple[bool, bool]:
        parsed = parse_completion(text, core.scale, core.template.tags)
        off = parsed.rating is not None and not core.scale.contains(parsed.rating)
        broken = not getattr(reward(text, core.scale.low, core.scale), "format_ok", parsed.format_ok)
        return broken and not (off and parsed.reason.startswith("rating ")), off

    return rating


def check_rows(rows: list[dict[str, Any]], env_id: str = "") -> dict[str, Any]:
    """Counts of rows that train but look wrong: an answer (the last assistant turn) whose format the
    env's reward refuses, or whose rating is off the env's scale (for rows naming an ``env_id``, else
    ``env_id``), an empty assistant turn, a prompt ending in an assistant turn, a duplicate of an
    earlier row, a cold-start hint left in the prompt; and the rows per env_id."""
    checkers: dict[str, Any] = {}
    counts: Counter[str] = Counter()
    not_checked: dict[str, str] = {}
    seen: set[str] = set()
    envs: Counter[str] = Counter()
    for row in rows:
        prompt, completion = row["prompt"], row["completion"]
        name = str(row.get("env_id") or env_id or "")
        envs[name or "(none)"] += 1
        if name:
            kwargs = row.get("env_kwargs") if isinstance(row.get("env_kwargs"), dict) else {}
            env_key = json.dumps([name, kwargs], sort_keys=True, default=repr)
            if env_key not in checkers:
                checkers[env_key] = _answer_checker(name, kwargs)
            checker = checkers[env_key]
            if isinstance(checker, str):
                not_checked.setdefault(name, checker)
            else:
                answer = next(m["content"] for m in reversed(completion) if m["role"] == "assistant")
                broken, off = checker(answer)
                counts["answers_checked"] += 1
                counts["format_broken"] += broken
                counts["rating_off_scale"] += off
        counts["empty_assistant_content"] += any(m["role"] == "assistant" and not m["content"].strip() for m in completion)
        counts["prompt_ends_with_assistant"] += prompt[-1]["role"] == "assistant"
        counts["hint_in_prompt"] += any(HINT_WORDS in m["content"] for m in prompt)
        row_key = json.dumps([prompt, completion], sort_keys=True)
        counts["duplicate_rows"] += row_key in seen
        seen.add(row_key)
    names = ("answers_checked", "format_broken", "rating_off_scale", "empty_assistant_content",
             "prompt_ends_with_assistant", "duplicate_rows", "hint_in_prompt")
    return {**{k: counts[k] for k in names}, "env_ids": dict(envs), "not_checked": not_checked}


def data_warning(path: str | Path, checks: dict[str, Any], total: int) -> str | None:
    """One line summing up :func:`check_rows`' counts; None when nothing looks wrong."""
    words = {"format_broken": "break the env's answer format (tags missing, repeated or out of order)",
             "rating_off_scale": "rate off the env's scale",
             "empty_assistant_content": "have an empty assistant turn",
             "prompt_ends_with_assistant": "have a prompt that ends in an assistant turn",
             "duplicate_rows": "repeat an earlier row",
             "hint_in_prompt": f"still hold the cold-start hint in the prompt ({HINT_WORDS!r} ...)"}
    parts = [f"{checks[k]} {text}" for k, text in words.items() if checks[k]]
    if len(checks["env_ids"]) > 1:
        parts.append("rows of several envs (" + ", ".join(f"{n} {e}" for e, n in checks["env_ids"].items()) + ")")
    if not parts:
        return None
    unchecked = "; answers not checked: " + "; ".join(checks["not_checked"].values()) if checks["not_checked"] else ""
    return (f"SFT data {path}: of {total} rows, " + ", ".join(parts) + unchecked +
            "; training on them anyway (counts in sft_log.json)")


def load_sft_data(path: str | Path, tokenizer: Any = None, max_length: int | None = None,
                  rows: list[dict[str, Any]] | None = None):
    """The cold-start JSONL (or its ``rows``, already read) as a ``datasets.Dataset``, and how many
    rows were skipped: ``prompt`` and ``completion`` for single-turn rows (TRL tokenizes them);
    ``input_ids`` and ``completion_mask`` (:func:`episode_tokens`, with ``tokenizer``) when any row is a
    multi-turn episode. With ``max_length`` (and ``tokenizer``), rows longer than that many tokens, as
    TRL would tokenize them, are skipped; an :class:`SFTDataError` when every row is."""
    from datasets import Dataset

    rows = read_sft_rows(path) if rows is None else rows
    total, multi = len(rows), any(is_multi_turn(r) for r in rows)
    if tokenizer is None and (multi or max_length is not None):
        raise ValueError(f"{path}: tokenizing its rows (multi-turn episodes, or to measure them against max_length) "
                         "needs the model's tokenizer")
    tokens = [episode_tokens(tokenizer, r["prompt"], r["completion"]) for r in rows] if multi else []
    if max_length is not None:  # single-turn rows: the length TRL's prompt/completion path gives them
        lengths = [len(t[0]) for t in tokens] if multi else [len(tokenizer.apply_chat_template(
            r["prompt"] + r["completion"], tokenize=True, return_dict=True)["input_ids"]) for r in rows]
        keep = [i for i, length in enumerate(lengths) if length <= max_length]
        if not keep:
            raise SFTDataError(f"{path}: all {total} rows are longer than max_length={max_length} tokens (prompt + "
                               f"completion; the shortest has {min(lengths)}): raise max_length")
        rows, tokens = [rows[i] for i in keep], [tokens[i] for i in keep] if multi else []
    if multi:
        data = {"input_ids": [t[0] for t in tokens], "completion_mask": [t[1] for t in tokens]}
    else:
        data = {"prompt": [r["prompt"] for r in rows], "completion": [r["completion"] for r in rows]}
    return Dataset.from_dict(data), total - len(rows)


def check_chat_template(tokenizer: Any, model: str) -> None:
    """A ValueError when ``model``'s tokenizer has no chat template (prompts and traces are chat messages)."""
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(f"model {model!r} has no chat template: recgym's prompts and SFT traces are chat messages; "
                         "use an instruct (chat) model, or set its tokenizer's chat_template and save it with the model")


class _ReplayPolicy:
    """Plays recorded assistant turns at the token level (their tokens, then EOS, as a model that
    stopped would have sampled them)."""

    supports_token_ids = True

    def __init__(self, tokenizer: Any, turns: list[str]) -> None:
        from recgym.agents.policies import PromptEncoder

        self.tokenizer, self.encoder, self._turns = tokenizer, PromptEncoder(tokenizer), iter(turns)

    def generate_from_ids(self, contexts, n=1, sampling=None):
        from recgym.agents.types import Completion

        out = []
        for ids in contexts:
            text = next(self._turns)
            own = [*self.tokenizer(text, add_special_tokens=False)["input_ids"], self.tokenizer.eos_token_id]
            out.append([Completion(text, list(ids), own, [0.0] * len(own), "stop")])
        return out


def episode_tokens(tokenizer: Any, prompt: list[dict[str, str]], completion: list[dict[str, str]]
                   ) -> tuple[list[int], list[int]]:
    """Token ids of a recorded conversation and its loss mask (1 on the assistant's own tokens),
    laid out by the rollout (:func:`~recgym.agents.rollout.episodes.run_episodes` replaying the
    turns; the mask is its ``Episode.own``). Messages after the last assistant turn are dropped."""
    from recgym.agents.rollout.episodes import run_episodes
    from recgym.agents.types import SamplingParams

    turns: list[tuple[str, list[dict[str, str]]]] = []
    for message in completion:
        if message["role"] == "assistant":
            turns.append((message["content"], []))
        else:
            turns[-1][1].append(message)
    played = iter(range(len(turns)))

    def step(actions):
        k = next(played)
        return [("", 0.0, k == len(turns) - 1, False, {"messages": turns[k][1]})]

    policy = _ReplayPolicy(tokenizer, [text for text, _ in turns])
    (episode,) = run_episodes(step, [{"messages": prompt}], policy, SamplingParams(temperature=0.0), token_level=True)
    return episode.context, [0] * len(episode.prompt_ids) + [int(own) for own in episode.own]
