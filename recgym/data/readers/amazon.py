"""Amazon reviews, all three public generations, detected from the fields of the first record.

- 2014: ``reviewerID, asin, overall, reviewText, summary, unixReviewTime``; metadata lines are
  Python literals (parsed with ``ast.literal_eval``): ``asin, title, categories, description``.
- 2018: the same review fields plus ``vote, verified, style``; JSON metadata with
  ``asin, title, category, brand, description``.
- 2023: ``user_id, parent_asin, rating, title, text, timestamp`` (milliseconds); metadata
  ``parent_asin, title, categories, description, features, store``.

Review files may also be CSV with the same column names (e.g. the Kaggle copies of 2014 files).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from recgym.data.readers.base import (
    Interaction,
    Item,
    Progress,
    RawSource,
    check_format,
    epoch,
    field,
    ident,
    mapped,
    missing_file,
    number,
    require_dir,
    text_of,
)
from recgym.data.readers.records import (
    BadRecords,
    iter_delimited_records,
    iter_json_records,
)

PUBLISHED = (
    "2023: https://amazon-reviews-2023.github.io (McAuley-Lab/Amazon-Reviews-2023 on the HF hub); "
    "2018: https://nijianmo.github.io/amazon/; 2014: https://jmcauley.ucsd.edu/data/amazon/"
)
_SUFFIXES = (".json", ".jsonl", ".json.gz", ".jsonl.gz", ".csv", ".csv.gz")


def detect_generation(record: dict) -> int:
    """2014, 2018 or 2023, from a review or metadata record's field names."""
    if "parent_asin" in record or ("user_id" in record and "rating" in record):
        return 2023
    if {"vote", "verified", "style", "category", "brand"} & record.keys():
        return 2018
    return 2014


#: The review fields of the 2014/2018 and the 2023 files (a first record with fewer than half is refused).
FIELDS_2014 = ("reviewerID", "asin", "overall", "reviewText", "unixReviewTime")
FIELDS_2023 = ("user_id", "parent_asin", "rating", "text", "timestamp")


def _review_2014(record: dict) -> tuple:
    return (
        ident(field(record, "reviewerID"), "reviewerID"),
        ident(field(record, "asin"), "asin"),
        number(field(record, "overall"), "overall"),
        epoch(field(record, "unixReviewTime"), "unixReviewTime"),
        text_of(record.get("reviewText")),
        text_of(record.get("summary")),
    )


def _review_2023(record: dict) -> tuple:
    return (
        ident(field(record, "user_id"), "user_id"),
        ident(field(record, "parent_asin", "asin"), "parent_asin"),
        number(field(record, "rating"), "rating"),
        epoch(field(record, "timestamp")),  # milliseconds, as published
        text_of(record.get("text")),
        text_of(record.get("title")),
    )


def _meta(record: dict) -> tuple:
    categories: Any = record.get("categories") or record.get("category") or record.get("main_category")
    if isinstance(categories, list) and categories and isinstance(categories[0], list):
        categories = categories[0]  # 2014: a list of category paths; the first is the main one
    description = text_of(record.get("description"))
    features = text_of(record.get("features") or record.get("feature"))
    return (
        ident(field(record, "parent_asin", "asin"), "parent_asin"),
        text_of(record.get("title")),
        text_of(categories, " > " if isinstance(categories, list) else ", "),
        " ".join(p for p in (description, features) if p),
    )


def _records(path: Path, bad: BadRecords, progress: Progress | None, literals: bool = False):
    name = path.name.lower()
    if name.endswith((".csv", ".csv.gz")):
        return iter_delimited_records(path, bad, progress=progress)
    return iter_json_records(path, bad, python_literals=literals, progress=progress)


class AmazonSource(RawSource):
    """One Amazon category: a review file and an optional ``meta_*`` file in ``data_dir``.

    ``category_hint`` (e.g. ``"Books"``) picks the review file when the folder holds several (a
    folder with no file of that category loads the one it has, with a warning naming it; one with
    several files and none or several of that category is refused, naming them);
    ``reviews_file`` / ``meta_file`` name them explicitly (relative to ``data_dir`` or absolute).
    """

    def __init__(
        self,
        data_dir: Path | str | None,
        dataset: str = "amazon",
        category_hint: tuple[str, ...] = (),
        reviews_file: str | None = None,
        meta_file: str | None = None,
    ) -> None:
        expected = self._expected(category_hint)
        root = require_dir(data_dir, dataset, expected, PUBLISHED)
        candidates = sorted(
            p for p in root.iterdir() if p.is_file() and p.name.lower().endswith(_SUFFIXES)
        )
        metas = [p for p in candidates if p.name.lower().startswith("meta")]
        reviews = [p for p in candidates if p not in metas]
        self.review_path = self._pick(root, reviews_file, reviews, category_hint, dataset, "reviews_file")
        if self.review_path is None:
            raise missing_file(dataset, root, expected, PUBLISHED)
        self.item_path = self._pick(root, meta_file, metas, category_hint, dataset, "meta_file")
        self._generation: int | None = None

    @staticmethod
    def _expected(hint: tuple[str, ...]) -> str:
        cat = hint[0] if hint else "<Category>"
        return (
            f"  one review file, e.g. {cat}.jsonl (2023), {cat}_5.json / reviews_{cat}_5.json (2018/2014)\n"
            f"  optional metadata: meta_{cat}.jsonl (2023/2018 JSON) or meta_{cat}.json (2014 Python literals)"
        )

    @staticmethod
    def _pick(
        root: Path, named: str | None, found: list[Path], hint: tuple[str, ...], dataset: str, option: str
    ) -> Path | None:
        if named is not None:
            path = Path(named).expanduser()
            path = path if path.is_absolute() else root / path
            if not path.is_file():
                raise FileNotFoundError(f"{path} does not exist")
            return path
        preferred = [p for p in found if any(h.lower() in p.name.lower() for h in hint)]
        if hint and found and not preferred:
            warnings.warn(
                f"dataset {dataset!r}: {found[0]} is not named for the category expected "
                f"({' or '.join(hint)}, e.g. {hint[0]}.jsonl); loading it anyway",
                stacklevel=3,
            )
        pool = preferred or found
        if len(pool) > 1:
            raise ValueError(
                f"dataset {dataset!r}: {len(pool)} candidate files in {root} ({', '.join(p.name for p in pool)}): "
                f"name the one to read with {option}= (--{option.replace('_', '-')} in the CLI)")
        return pool[0] if pool else None

    @property
    def generation(self) -> int | None:
        """Detected once reading has started."""
        return self._generation

    def params(self) -> dict[str, Any]:
        return {"reader": "AmazonSource"}

    def interactions(self, bad: BadRecords, progress: Progress | None = None) -> Iterator[Interaction]:
        records = _records(self.review_path, bad, progress)
        first = next(records, None)
        if first is None:
            return iter(())
        self._generation = detect_generation(first[1])
        check_format(self.review_path, first[1], FIELDS_2023 if self._generation == 2023 else FIELDS_2014, "Amazon",
                     f"{', '.join(FIELDS_2014)} (2014/2018) or {', '.join(FIELDS_2023)} (2023)",
                     "data_dir (--data-dir) or reviews_file (--reviews-file)")
        mapper = _review_2023 if self._generation == 2023 else _review_2014
        return mapped(_chain(first, records), self.review_path, bad, mapper)

    def items(self, bad: BadRecords, progress: Progress | None = None) -> Iterator[Item]:
        if self.item_path is None:
            return iter(())
        records = _records(self.item_path, bad, progress, literals=True)
        return (item[:4] for item in mapped(records, self.item_path, bad, _meta))


def _chain(first: tuple, rest: Iterator) -> Iterator:
    yield first
    yield from rest
