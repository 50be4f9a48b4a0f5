"""IMDb, in the layout of the IMDB Spoiler dataset: ``IMDB_reviews.json`` + ``IMDB_movie_details.json``."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from recgym.data.readers.base import (
    Interaction,
    Item,
    Progress,
    RawSource,
    field,
    find_file,
    mapped,
    missing_file,
    number,
    require_dir,
    text_of,
)
from recgym.data.readers.records import MALFORMED, BadRecords, SkipRecord, iter_json_records
from recgym.data.schema import RatingScale

PUBLISHED = "https://www.kaggle.com/datasets/rmisra/imdb-spoiler-dataset (Misra, 2019)"
EXPECTED = (
    "  IMDB_reviews.json        (user_id, movie_id, rating 1-10, review_text, review_date)\n"
    "  IMDB_movie_details.json  (optional: movie_id, plot_summary, genre, ...)"
)


def parse_review_date(value: str) -> int:
    """Seconds since the epoch of an IMDb date such as ``10 February 2006`` (or ISO)."""
    for parse in (lambda v: datetime.strptime(v, "%d %B %Y"), datetime.fromisoformat):
        try:
            return int(parse(value.strip()).replace(tzinfo=UTC).timestamp())
        except (TypeError, ValueError, AttributeError):
            continue
    raise SkipRecord(MALFORMED, f"review_date {value!r} is not like '10 February 2006'")


def _review(record: dict) -> tuple:
    return (
        str(field(record, "user_id")),
        str(field(record, "movie_id")),
        number(field(record, "rating"), "rating"),
        parse_review_date(field(record, "review_date")),
        record.get("review_text") or "",
        record.get("review_summary") or "",
    )


def _movie(record: dict) -> tuple:
    return (
        str(field(record, "movie_id")),
        text_of(record.get("title") or record.get("movie_id")),
        text_of(record.get("genre"), ", "),
        text_of(record.get("plot_summary")),
    )


class ImdbSource(RawSource):
    """IMDb user reviews, rated 1-10 (kept on that scale)."""

    scale = RatingScale(1, 10)

    def __init__(self, data_dir: Path | str | None) -> None:
        root = require_dir(data_dir, "imdb", EXPECTED, PUBLISHED)
        self._reviews = find_file(root, ["IMDB_reviews*.json*", "*reviews*.json*"])
        if self._reviews is None:
            raise missing_file("imdb", root, EXPECTED, PUBLISHED)
        self._movies = find_file(root, ["IMDB_movie_details*.json*", "*movie_details*.json*"])

    @property
    def review_path(self) -> Path:
        return self._reviews

    @property
    def item_path(self) -> Path | None:
        return self._movies

    def interactions(self, bad: BadRecords, progress: Progress | None = None) -> Iterator[Interaction]:
        return mapped(iter_json_records(self._reviews, bad, progress=progress), self._reviews, bad, _review)

    def items(self, bad: BadRecords, progress: Progress | None = None) -> Iterator[Item]:
        if self._movies is None:
            return iter(())
        records = iter_json_records(self._movies, bad, progress=progress)
        return (item[:4] for item in mapped(records, self._movies, bad, _movie))
