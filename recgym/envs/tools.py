"""The tools of the tool-using rating environment (``RecRatingTools-*-v0``): what each reads, the
tagged call format a small model writes, its parser, and the same tools as an OpenAI
function-calling schema.

**Leakage.** Every tool reads only ratings strictly before the target rating's timestamp, through
the dataset's history index (``RatingDataset.history``), the same one the single-turn prompt is
built from; :meth:`HistoryTools.run` returns the rows it read, so tests check every one.

**Call format.** One call per turn, written like a Python call with literal keyword arguments
inside ``<call>`` tags; text before the call (a thought) is allowed, text after it is ignored::

    <call>similar_items(limit=3)</call>
    <call>search_reviews(query="spicy noodles", limit=5)</call>
    <call>user_stats()</call>

Positional arguments are taken in the order the tool lists them. Data text in results passes
through :func:`recgym.prompts.neutralize`, so a review can never open a ``<call>`` or ``<rate>``.
"""

from __future__ import annotations

import ast
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from recgym.data.dataset import RatingDataset
from recgym.prompts import truncate

CALL_OPEN, CALL_CLOSE = "<call>", "</call>"

#: Words too common to carry similarity (the text parts of similar_items and search_reviews).
_STOPWORDS = frozenset([
    "a", "an", "and", "the", "of", "to", "in", "on", "for", "with", "its", "it", "is", "was", "were",
    "be", "i", "my", "me", "we", "our", "you", "your", "this", "that", "at", "as", "by", "or", "not",
    "but", "so", "very", "from", "they", "them", "their", "there", "are", "has", "have", "had",
])
_WORD = re.compile(r"[a-z0-9]+")


def words(text: str) -> list[str]:
    """Lower-case word tokens without stopwords (what BM25 and the text similarity compare)."""
    return [w for w in _WORD.findall(str(text).lower()) if w not in _STOPWORDS]


class ToolCallError(ValueError):
    """A turn's ``<call>`` that cannot run: malformed, an unknown tool, or bad arguments."""


@dataclass(frozen=True)
class ToolParam:
    name: str
    type: str
    """``integer`` or ``string`` (JSON-schema names)."""
    description: str
    default: Any = None
    """None: required."""
    minimum: int | None = None


@dataclass(frozen=True)
class ToolSpec:
    name: str
    description: str
    params: tuple[ToolParam, ...] = ()

    def signature(self) -> str:
        """``similar_items(limit=5)``: how the prompt lists the tool."""
        args = ", ".join(p.name if p.default is None else f"{p.name}={p.default!r}" for p in self.params)
        return f"{self.name}({args})"

    def openai_schema(self) -> dict[str, Any]:
        """The tool as an OpenAI chat-completions ``tools`` entry."""
        properties: dict[str, Any] = {}
        for p in self.params:
            prop: dict[str, Any] = {"type": p.type, "description": p.description}
            if p.default is not None:
                prop["default"] = p.default
            if p.minimum is not None:
                prop["minimum"] = p.minimum
            properties[p.name] = prop
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": {
                    "type": "object",
                    "properties": properties,
                    "required": [p.name for p in self.params if p.default is None],
                    "additionalProperties": False,
                },
            },
        }


_LIMIT = ToolParam("limit", "integer", "how many entries to return", 5, 1)
_OFFSET = ToolParam("offset", "integer", "how many of the newest entries to skip (paging)", 0, 0)

#: The tools, in the order the prompt lists them.
TOOLS: tuple[ToolSpec, ...] = (
    ToolSpec("recent_reviews", "The user's most recent past ratings and reviews, newest first.", (_OFFSET, _LIMIT)),
    ToolSpec("search_reviews", "Search the user's own past reviews (BM25 over review, title and categories).",
             (ToolParam("query", "string", "words to look for"), _LIMIT)),
    ToolSpec("item_reviews", "Other users' past ratings and reviews of the target item, newest first.",
             (_OFFSET, _LIMIT)),
    ToolSpec("similar_items", "The items the user rated that are most similar to the target (by category, "
             "then by title and description), with the user's ratings.", (_LIMIT,)),
    ToolSpec("user_stats", "The user's rating statistics: count, mean, spread and how often each rating."),
)
TOOL_NAMES = tuple(t.name for t in TOOLS)


def openai_tools() -> list[dict[str, Any]]:
    """Every tool as an OpenAI function-calling schema (the ``tools=`` argument of chat completions)."""
    return [t.openai_schema() for t in TOOLS]


def call_text(name: str, arguments: dict[str, Any] | str | None = None) -> str:
    """The tagged call for a function call (``name``, arguments as a dict or a JSON string): how an
    API policy's native tool call becomes the environment's action."""
    import json

    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments or "{}")
        except json.JSONDecodeError:
            arguments = {"arguments": arguments}  # the environment answers with an error naming it
    args = ", ".join(f"{k}={v!r}" for k, v in (arguments or {}).items()) if isinstance(arguments, dict) else ""
    return f"{CALL_OPEN}{name}({args}){CALL_CLOSE}"


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.name}({', '.join(f'{k}={v!r}' for k, v in self.arguments.items())})"


def has_call(text: str) -> bool:
    """Whether a turn is a tool call (it opens ``<call>``)."""
    return CALL_OPEN in text


#: What ``ast`` raises on text it cannot turn into a literal.
_UNREADABLE = (ValueError, TypeError, MemoryError, RecursionError, SyntaxError)


def parse_call(text: str, tools: tuple[ToolSpec, ...] = TOOLS, max_limit: int = 10) -> ToolCall:
    """The one call in ``text`` with its arguments checked and defaults filled; raises
    :class:`ToolCallError` with a one-line reason the model can read."""
    start = text.find(CALL_OPEN)
    if start < 0:
        raise ToolCallError(f"no {CALL_OPEN} in the turn")
    end = text.find(CALL_CLOSE, start)
    if end < 0:
        raise ToolCallError(f"{CALL_OPEN} is not closed with {CALL_CLOSE}")
    if text.find(CALL_OPEN, start + 1, end) >= 0 or text.find(CALL_OPEN, end) >= 0:
        raise ToolCallError("one tool call per turn")
    source = text[start + len(CALL_OPEN) : end].strip()
    example = 'write it like similar_items(limit=3) or search_reviews(query="spicy")'
    if len(source) > 500:
        raise ToolCallError("the call is longer than 500 characters")
    try:
        node = ast.parse(source, mode="eval").body
    except _UNREADABLE:
        raise ToolCallError(f"cannot read the call {truncate(source, 80)!r}: {example}") from None
    if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
        raise ToolCallError(f"the call must be a tool name with arguments in parentheses: {example}")
    specs = {t.name: t for t in tools}
    spec = specs.get(node.func.id)
    if spec is None:
        raise ToolCallError(f"unknown tool {node.func.id!r}; the tools are {', '.join(specs)}")
    try:
        positional = [ast.literal_eval(a) for a in node.args]
        keywords = {k.arg: ast.literal_eval(k.value) for k in node.keywords if k.arg is not None}
    except _UNREADABLE:  # e.g. {[1]: 2}: TypeError (unhashable)
        raise ToolCallError(f"arguments of {spec.name} must be plain numbers or quoted strings") from None
    if any(k.arg is None for k in node.keywords):
        raise ToolCallError(f"arguments of {spec.name} must be plain numbers or quoted strings")
    if len(positional) > len(spec.params):
        raise ToolCallError(f"{spec.name} takes at most {len(spec.params)} argument(s): {spec.signature()}")
    names = [p.name for p in spec.params]
    given = dict(zip(names, positional))
    for key, value in keywords.items():
        if key not in names:
            raise ToolCallError(f"{spec.name} has no argument {key!r}: {spec.signature()}")
        if key in given:
            raise ToolCallError(f"{spec.name} got {key!r} twice")
        given[key] = value
    arguments: dict[str, Any] = {}
    for p in spec.params:
        value = given.get(p.name, p.default)
        if value is None:
            raise ToolCallError(f"{spec.name} needs {p.name!r}: {spec.signature()}")
        if p.type == "integer":
            if isinstance(value, bool) or not isinstance(value, int):
                raise ToolCallError(f"{spec.name}: {p.name} must be a whole number, got {value!r}")
            if p.minimum is not None and value < p.minimum:
                raise ToolCallError(f"{spec.name}: {p.name} must be >= {p.minimum}, got {value}")
            if p.name == "limit":
                value = min(value, max_limit)
        elif not isinstance(value, str) or not value.strip():
            raise ToolCallError(f"{spec.name}: {p.name} must be a non-empty quoted string")
        arguments[p.name] = value
    return ToolCall(spec.name, arguments)


@dataclass(frozen=True)
class ToolResult:
    text: str
    rows: tuple[int, ...]
    """The interaction rows whose data the result shows or summarizes (all strictly before the target)."""


def bm25_scores(query: list[str], documents: list[list[str]], k1: float = 1.2, b: float = 0.75) -> np.ndarray:
    """Okapi BM25 of each tokenized document for a tokenized query (IDF over these documents)."""
    n = len(documents)
    if n == 0 or not query:
        return np.zeros(n)
    lengths = np.array([len(d) for d in documents], dtype=np.float64)
    average = max(lengths.mean(), 1e-9)
    counts = [Counter(d) for d in documents]
    scores = np.zeros(n)
    for term in set(query):
        tf = np.array([c.get(term, 0) for c in counts], dtype=np.float64)
        df = int((tf > 0).sum())
        if df == 0:
            continue
        idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
        scores += idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * lengths / average))
    return scores


def _categories(text: str) -> set[str]:
    return {c.strip().lower() for c in str(text).split(",") if c.strip()}


def _cosine(a: Counter, b: Counter, idf: dict[str, float]) -> float:
    dot = sum(a[w] * b[w] * idf.get(w, 0.0) ** 2 for w in a.keys() & b.keys())
    na = math.sqrt(sum((c * idf.get(w, 0.0)) ** 2 for w, c in a.items()))
    nb = math.sqrt(sum((c * idf.get(w, 0.0)) ** 2 for w, c in b.items()))
    return dot / (na * nb) if na > 0 and nb > 0 else 0.0


class HistoryTools:
    """Runs the tools for one target rating of a :class:`RatingDataset`.

    ``run(row, call)`` answers ``call`` about the rating at interaction ``row``, from that row's
    strictly-earlier user and item histories only.
    """

    def __init__(self, dataset: RatingDataset, max_review_chars: int = 200) -> None:
        self.dataset = dataset
        self.max_review_chars = int(max_review_chars)

    # ---- histories (the single-turn prompt's own index) ----
    def user_rows(self, row: int) -> np.ndarray:
        """The user's ratings strictly before ``row``'s time, oldest first."""
        h = self.dataset.history
        return h.user_order[h.user_start[row] : h.user_end[row]]

    def item_rows(self, row: int) -> np.ndarray:
        """Other users' ratings of ``row``'s item strictly before its time, oldest first."""
        h = self.dataset.history
        return h.item_order[h.item_start[row] : h.item_end[row]]

    def profile(self, row: int) -> tuple[int, float | None]:
        """Number of the user's past ratings and their mean (None when there are none)."""
        rows = self.user_rows(row)
        return len(rows), (float(self.dataset.ratings[rows].mean()) if len(rows) else None)

    # ---- dispatch ----
    def run(self, row: int, call: ToolCall) -> ToolResult:
        return getattr(self, call.name)(row, **call.arguments)

    # ---- the tools ----
    def recent_reviews(self, row: int, offset: int = 0, limit: int = 5) -> ToolResult:
        rows = self.user_rows(row)[::-1]
        return self._page(rows, offset, limit, "the user's past ratings", with_item=True, call="recent_reviews")

    def item_reviews(self, row: int, offset: int = 0, limit: int = 5) -> ToolResult:
        rows = self.item_rows(row)[::-1]
        return self._page(rows, offset, limit, "other users' ratings of the target item", with_item=False,
                          call="item_reviews")

    def search_reviews(self, row: int, query: str, limit: int = 5) -> ToolResult:
        rows = self.user_rows(row)
        q = words(query)
        documents = [words(self._document(int(r))) for r in rows]
        scores = bm25_scores(q, documents)
        order = [i for i in np.argsort(-scores, kind="stable") if scores[i] > 0][:limit]
        head = f"Search of the user's {len(rows)} past reviews for {truncate(query, 80)!r}:"
        if not order:
            return ToolResult(f"{head} no past review matches.", ())
        chosen = [int(rows[i]) for i in order]
        lines = [head] + [f"{n}. {self._line(r, with_item=True)}" for n, r in enumerate(chosen, 1)]
        return ToolResult("\n".join(lines), tuple(chosen))

    def similar_items(self, row: int, limit: int = 5) -> ToolResult:
        rows = self.user_rows(row)
        if len(rows) == 0:
            return ToolResult("The user has rated no items before.", ())
        ds = self.dataset
        target = int(ds.item_codes[row])
        target_cats = _categories(ds.item_categories[target])
        texts = [Counter(words(f"{ds.item_titles[i]} {ds.item_descriptions[i]}"))
                 for i in [target, *(int(ds.item_codes[r]) for r in rows)]]
        df = Counter(w for t in texts for w in t)
        idf = {w: math.log(1 + len(texts) / c) for w, c in df.items()}
        scores = []
        for r, text in zip(rows, texts[1:]):
            cats = _categories(ds.item_categories[int(ds.item_codes[r])])
            union = target_cats | cats
            category = len(target_cats & cats) / len(union) if union else 0.0
            scores.append(category + 0.5 * _cosine(texts[0], text, idf))
        scores = np.asarray(scores)
        # highest score first; ties: the more recent rating first
        order = sorted(range(len(rows)), key=lambda i: (-round(float(scores[i]), 9), -i))[:limit]
        chosen = [int(rows[i]) for i in order]
        lines = [f"The {len(chosen)} items most similar to the target among the user's {len(rows)} past ratings:"]
        lines += [f"{n}. {self._line(r, with_item=True)} (similarity {scores[i]:.2f})"
                  for n, (r, i) in enumerate(zip(chosen, order), 1)]
        return ToolResult("\n".join(lines), tuple(chosen))

    def user_stats(self, row: int) -> ToolResult:
        rows = self.user_rows(row)
        if len(rows) == 0:
            return ToolResult("The user has rated no items before.", ())
        ratings = self.dataset.ratings[rows].astype(np.float64)
        values, counts = np.unique(ratings, return_counts=True)
        spread = ", ".join(f"{v:g}: {c}" for v, c in zip(values[::-1], counts[::-1]))
        text = (f"The user rated {len(rows)} items before: mean {ratings.mean():.2f}, standard deviation "
                f"{ratings.std():.2f}, last 5 mean {ratings[-5:].mean():.2f}. Ratings given: {spread}.")
        return ToolResult(text, tuple(int(r) for r in rows))

    # ---- rendering ----
    def _page(self, rows: np.ndarray, offset: int, limit: int, what: str, with_item: bool, call: str) -> ToolResult:
        chosen = [int(r) for r in rows[offset : offset + limit]]
        if not chosen:
            return ToolResult(f"There are {len(rows)} of {what}; nothing at offset {offset}.", ())
        head = f"{what.capitalize()}, newest first: {offset + 1}-{offset + len(chosen)} of {len(rows)}"
        if len(rows):
            head += f" (mean rating {float(self.dataset.ratings[rows].mean()):.2f})"
        lines = [head + ":"] + [f"{offset + n}. {self._line(r, with_item)}" for n, r in enumerate(chosen, 1)]
        if offset + len(chosen) < len(rows):
            lines.append(f"(more: {call}(offset={offset + len(chosen)}))")
        return ToolResult("\n".join(lines), tuple(chosen))

    def _document(self, row: int) -> str:
        ds = self.dataset
        item = int(ds.item_codes[row])
        return f"{ds.item_titles[item]} {ds.item_categories[item]} {ds.review_texts[row] or ''}"

    def _line(self, row: int, with_item: bool) -> str:
        ds = self.dataset
        item = int(ds.item_codes[row])
        review = truncate(ds.review_texts[row] or "", self.max_review_chars)
        line = f"rated {float(ds.ratings[row]):g}"
        if with_item:
            categories = truncate(ds.item_categories[item], 80)
            line = f'"{truncate(ds.item_titles[item], 120)}"' + (f" ({categories})" if categories else "") + " " + line
        return f'{line}. Review: "{review}"' if review else line + "."
