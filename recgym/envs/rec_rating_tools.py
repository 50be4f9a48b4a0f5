"""``RecRatingToolsEnv``: predict a rating after choosing, turn by turn, what evidence to read."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, ClassVar

from recgym.data.dataset import RatingDataset
from recgym.data.schema import check_int
from recgym.envs.rec_rating import RecRatingEnv, check_breakdown, check_observation, step_text
from recgym.envs.tools import CALL_OPEN, TOOLS, HistoryTools, ToolCallError, has_call, parse_call
from recgym.prompts import PromptTemplate, messages_to_text, truncate
from recgym.rewards import RatingReward

_NUMBERS = {2: "two", 3: "three", 4: "four", 5: "five", 6: "six"}


def count_words(text: str) -> int:
    """The default ``token_counter``: words and punctuation marks, a tokenizer-free approximation."""
    return len(re.findall(r"\w+|[^\w\s]", text))


class RecRatingToolsEnv(RecRatingEnv):
    """One episode is one rating to predict, in as many turns as the agent needs to read evidence.

    ## Description
    The same samples, template and reward as :class:`RecRatingEnv`, but no history is pasted into
    the prompt: the agent reads what it chooses through tools, one call per turn, each reading only
    ratings strictly before the target's timestamp (:mod:`recgym.envs.tools`). Tools:
    ``recent_reviews(offset, limit)`` (the user's newest ratings and reviews, paged),
    ``search_reviews(query, limit)`` (BM25 over the user's own past reviews),
    ``item_reviews(offset, limit)`` (others' past reviews of the target), ``similar_items(limit)``
    (the user's rated items closest to the target by category and text, with ratings) and
    ``user_stats()``. ``tools_schema`` holds them as an OpenAI function-calling schema.

    ## Observation space
    ``UnicodeText(max_observation_length)``. ``reset``: the system prompt (the template's answer
    format, the call format and the tools with their arguments) and the task (the target item's
    title, categories and description, the rating scale, the user's number of past ratings and
    their mean). ``step``: the tool's result, or an error message saying what was wrong with the
    turn; ``""`` once the episode ends. ``info["messages"]`` holds the chat message(s) to append.
    A result longer than ``max_observation_length`` keeps the whole lines that fit, then
    ``(cut: N more characters)``; a prompt longer than it is a ValueError at ``reset``.

    ## Action space
    ``UnicodeText(max_action_length)``: the model's turn. A turn containing ``<call>`` is a tool call
    (``<call>similar_items(limit=3)</call>``); otherwise a turn containing ``<rate>`` is the final
    answer; anything else is an invalid turn.

    ## Rewards
    0 on every turn but the last. Final answer: the template's ``RatingReward`` (format ±0.5 plus
    accuracy ``1 - |y - ŷ| / max_error``) minus ``tool_cost`` per tool call made (including calls
    that failed). Truncation: the reward an empty answer gets (the format penalty, no accuracy)
    minus the same cost. ``info["reward_breakdown"]`` logs ``tool_cost`` (≤ 0) as its own component
    beside ``format`` and ``accuracy``; ``total`` is their sum.

    ## Episode end
    Terminates on the final answer. Truncates when the ``max_turns``-th turn is not a final answer
    (malformed calls, unknown tools and text that is neither count as turns, so loops end too), or
    when :meth:`end_episode` is called (an agent whose context is full; on ``env.unwrapped`` when
    the env comes from ``gym.make``). Bound turns with ``max_turns``, not gymnasium's
    ``max_episode_steps``: its ``TimeLimit`` truncates with that turn's reward (0.0), no
    ``reward_breakdown``, and leaves this episode open.

    ## Arguments
    - ``dataset``, ``split``, ``template``, ``reward`` and dataset loader keywords: as
      :class:`RecRatingEnv`.
    - ``max_turns`` (int, 6): model turns per episode, the final answer included.
    - ``tool_cost`` (float, 0.02): subtracted from the final reward per tool call.
    - ``max_results`` (int, 10): the most entries a tool returns (a larger ``limit`` is capped).
    - ``max_review_chars`` (int, 200): reviews in results are cut to this many characters.
    - ``token_counter`` (callable str -> int, default :func:`count_words`): what ``tokens_read``
      counts; pass e.g. ``lambda t: len(tokenizer(t)["input_ids"])`` for a model's tokens.
    - ``render_mode``: None or ``"ansi"``: ``render()`` returns the prompt after ``reset``, then
      the last turn and the tool's result, or the reward once the episode is over.

    ## Reset and info
    ``reset(seed=None, options=None)`` as :class:`RecRatingEnv` (``options={"index": i}`` pins a
    sample). ``info``: ``messages``, ``user_id``, ``item_id``, ``index``, ``scale``, ``tokens_read``
    (of the task message). After every ``step``: ``turn``, ``calls`` (one dict per call: ``tool``,
    ``arguments``, ``error``, ``rows`` read, ``tokens``), ``num_calls``, ``tokens_read`` (task +
    every result so far), ``invalid_turns``, ``error`` (this turn's, or None) and ``messages``; at
    the end also ``reward_breakdown``, ``target_rating``, ``parsed_rating``, ``abs_error``.
    """

    #: Episodes take several steps (rollout and evaluation code checks this).
    multi_turn: ClassVar[bool] = True
    tools_schema: ClassVar[list[dict[str, Any]]] = [t.openai_schema() for t in TOOLS]

    def __init__(
        self,
        dataset: str | RatingDataset = "synthetic",
        split: str = "train",
        template: str | PromptTemplate = "think",
        reward: RatingReward | None = None,
        max_turns: int = 6,
        tool_cost: float = 0.02,
        max_results: int = 10,
        max_review_chars: int = 200,
        token_counter: Callable[[str], int] | None = None,
        max_observation_length: int = 200_000,
        max_action_length: int = 100_000,
        render_mode: str | None = None,
        **dataset_kwargs: Any,
    ) -> None:
        if fixed := sorted({"max_user_history", "max_item_history"} & dataset_kwargs.keys()):
            raise TypeError(f"{type(self).__name__} takes no {', '.join(fixed)}: the agent reads histories through "
                            "its tools (max_results and max_review_chars bound what one call returns)")
        super().__init__(dataset, split, template, reward, 0, 0, max_observation_length, max_action_length,
                         render_mode, **dataset_kwargs)
        self.max_turns = check_int("max_turns", max_turns, 1)  # the final answer is a turn
        if isinstance(tool_cost, bool) or not isinstance(tool_cost, int | float) or not tool_cost >= 0:
            raise ValueError(f"tool_cost must be a number >= 0, got {tool_cost!r}")
        self.tool_cost = float(tool_cost)
        self.max_results = check_int("max_results", max_results, 1)
        self.tools = HistoryTools(self.dataset, check_int("max_review_chars", max_review_chars, 1))
        self.count_tokens = token_counter or count_words
        self._calls: list[dict[str, Any]] | None = None

    # ---- prompts ----
    def system_prompt(self) -> str:
        tools = "\n".join(f"- {t.signature()}: {t.description}" for t in TOOLS)
        return (
            f"{self.template.system_prompt(self.scale)}\n\n"
            f"Before you answer you may read the user's history with tools, one call per turn, written as\n"
            f'{CALL_OPEN}tool_name(argument=value)</call>\n'
            f"The result comes back as the next message. Tools (at most {self.max_results} entries each):\n"
            f"{tools}\n"
            f"You have {self.max_turns} turns, the answer included; each call costs a little reward. "
            f"When you know enough, answer in the format above, with no call."
        )

    def task_prompt(self, row: int) -> str:
        ds, scale = self.dataset, self.scale
        item = int(ds.item_codes[row])
        count, mean = self.tools.profile(row)
        lines = [f"Ratings are on a scale from {scale.low:g} (worst) to {scale.high:g} (best).", ""]
        lines.append(f"The user has rated {count} items before, {mean:.2f} on average." if mean is not None
                     else "The user has rated no items before.")
        lines += ["", "The target item:", f"Title: {truncate(ds.item_titles[item], 200)}"]
        if ds.item_categories[item]:
            lines.append(f"Categories: {truncate(ds.item_categories[item], 200)}")
        if ds.item_descriptions[item]:
            lines.append(f"Description: {truncate(ds.item_descriptions[item], self.template.max_description_chars)}")
        lines += ["", "How will this user rate the target item? Call a tool, or answer."]
        return "\n".join(lines)

    # ---- the episode ----
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        super(RecRatingEnv, self).reset(seed=seed)
        self._index = None
        index = self._choose_index(options)
        row = self.dataset.row(self.split, index)
        messages = [{"role": "system", "content": self.system_prompt()},
                    {"role": "user", "content": self.task_prompt(row)}]
        text = check_observation(messages_to_text(messages), self.observation_space.max_length, f"sample {index}",
                                 "the template's max_description_chars")
        self._index, self._row = index, row
        self._target = float(self.dataset.ratings[row])
        self._turn, self._calls, self._invalid = 0, [], 0
        self._tokens_read = self.count_tokens(messages[1]["content"])
        self._rendered = text
        info = {
            "messages": messages,
            "user_id": str(self.dataset.user_ids[int(self.dataset.user_codes[row])]),
            "item_id": str(self.dataset.item_ids[int(self.dataset.item_codes[row])]),
            "index": index,
            "scale": self.scale,
            "tokens_read": self._tokens_read,
        }
        return text, info

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        self._check_action(action, "reset() was never called, or never succeeded" if self._calls is None
                           else "the episode has ended; reset() starts the next")
        self._turn += 1
        tags = self.template.tags
        answer_tag = f"<{tags[-1]}>"
        if has_call(action):
            observation, error = self._call(action)
        elif answer_tag in action:
            return self._finish(action, truncated=False)
        else:
            steps = (f"in the {_NUMBERS.get(len(tags), len(tags))} tagged steps ending in {answer_tag}" if len(tags) > 1
                     else f"as {answer_tag}...</{tags[-1]}>")
            observation = error = (f"This turn is neither a tool call nor an answer. Call a tool as "
                                   f"{CALL_OPEN}similar_items(limit=3)</call>, or answer {steps}.")
        if error is not None:
            self._invalid += 1
        if self._turn >= self.max_turns:  # the episode ends: this turn's result is never delivered, so not read
            ended = self.end_episode(f"max_turns={self.max_turns} reached without an answer", error)
            self._rendered = step_text(action, "", ended[4])
            return ended
        tokens = self.count_tokens(observation)
        self._tokens_read += tokens
        if has_call(action):
            self._calls[-1]["tokens"] = tokens
        info = {**self._progress(), "error": error, "messages": [{"role": "user", "content": observation}]}
        self._rendered = step_text(action, observation, info)
        return observation, 0.0, False, False, info

    def end_episode(self, reason: str = "ended by the agent", error: str | None = None
                    ) -> tuple[str, float, bool, bool, dict[str, Any]]:
        """Truncate the current episode now (a turn budget, or an agent's full context): the reward
        of an empty answer minus the tool costs, as ``step`` would give it."""
        if self._index is None:
            raise RuntimeError("no episode in progress: call reset() before end_episode()")
        return self._finish("", truncated=True, reason=reason, error=error)

    # ---- helpers ----
    def _call(self, action: str) -> tuple[str, str | None]:
        """This turn's result (or error message) and error; ``step`` sets the call's ``tokens`` once
        the result is delivered."""
        record: dict[str, Any] = {"tool": None, "arguments": {}, "error": None, "rows": (), "tokens": 0}
        self._calls.append(record)
        try:
            call = parse_call(action, max_limit=self.max_results)
        except ToolCallError as exc:
            record["error"] = str(exc)
            return f"Tool call error: {exc}.", str(exc)
        record.update(tool=call.name, arguments=dict(call.arguments))
        result = self.tools.run(self._row, call)
        record["rows"] = result.rows
        return self._fit(f"Result of {call}:\n{result.text}"), None

    def _fit(self, text: str) -> str:
        """``text`` cut to the observation space: the whole lines that fit, then a note of what was cut."""
        limit = self.observation_space.max_length
        if len(text) <= limit:
            return text
        kept = text[: max(0, limit - len(f"\n(cut: {len(text)} more characters)"))]
        if (line_end := kept.rfind("\n")) > 0:
            kept = kept[:line_end]
        return f"{kept}\n(cut: {len(text) - len(kept)} more characters)"

    def _progress(self) -> dict[str, Any]:
        return {
            "index": self._index,
            "turn": self._turn,
            "calls": [dict(c) for c in self._calls],
            "num_calls": len(self._calls),
            "tokens_read": self._tokens_read,
            "invalid_turns": self._invalid,
        }

    def _finish(self, answer: str, truncated: bool, reason: str | None = None, error: str | None = None):
        breakdown = check_breakdown(self.reward_fn(answer, self._target, self.scale), self.reward_fn)
        cost = 0.0 - self.tool_cost * len(self._calls)  # 0.0, not -0.0, without calls
        parts = breakdown.as_dict()
        parts.update(tool_cost=cost, total=float(breakdown.total) + cost)
        info = {
            **self._progress(),
            "error": error,
            "messages": [],
            "reward_breakdown": parts,
            "target_rating": self._target,
            "parsed_rating": breakdown.parsed_rating,
            "abs_error": breakdown.abs_error,
        }
        if reason is not None:
            info["truncation"] = reason
        self._index = None
        self._rendered = step_text(answer, "", info)
        return "", float(parts["total"]), not truncated, truncated, info
