"""Yelp Open Dataset: ``yelp_academic_dataset_review.json`` + ``yelp_academic_dataset_business.json``."""

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

PUBLISHED = "https://www.yelp.com/dataset (Yelp Open Dataset, JSON download)"
EXPECTED = (
    "  yelp_academic_dataset_review.json    (reviews: user_id, business_id, stars, text, date)\n"
    "  yelp_academic_dataset_business.json  (optional: name, categories, city, state)"
)


def parse_date(value: str) -> int:
    """Seconds since the epoch of a Yelp ``YYYY-MM-DD HH:MM:SS`` date (read as UTC)."""
    try:
        return int(datetime.fromisoformat(value).replace(tzinfo=UTC).timestamp())
    except (TypeError, ValueError):
        raise SkipRecord(MALFORMED, f"date {value!r} is not YYYY-MM-DD[ HH:MM:SS]") from None


def _review(record: dict) -> tuple:
    return (
        str(field(record, "user_id")),
        str(field(record, "business_id")),
        number(field(record, "stars"), "stars"),
        parse_date(field(record, "date")),
        record.get("text") or "",
        "",
    )


def _business(record: dict) -> tuple:
    place = ", ".join(p for p in (text_of(record.get("city")), text_of(record.get("state"))) if p)
    return (
        str(field(record, "business_id")),
        text_of(record.get("name")),
        text_of(record.get("categories")),
        place,
    )


class YelpSource(RawSource):
    """Reviews (scale 1-5) and businesses of the Yelp Open Dataset (any sample of it)."""

    def __init__(self, data_dir: Path | str | None) -> None:
        root = require_dir(data_dir, "yelp", EXPECTED, PUBLISHED)
        reviews = find_file(root, ["yelp_academic_dataset_review*.json*", "*review*.json*"])
        if reviews is None:
            raise missing_file("yelp", root, EXPECTED, PUBLISHED)
        self._reviews = reviews
        self._business = find_file(root, ["yelp_academic_dataset_business*.json*", "*business*.json*"])

    @property
    def review_path(self) -> Path:
        return self._reviews

    @property
    def item_path(self) -> Path | None:
        return self._business

    def interactions(self, bad: BadRecords, progress: Progress | None = None) -> Iterator[Interaction]:
        records = iter_json_records(self._reviews, bad, progress=progress)
        return mapped(records, self._reviews, bad, _review)

    def items(self, bad: BadRecords, progress: Progress | None = None) -> Iterator[Item]:
        if self._business is None:
            return iter(())
        records = iter_json_records(self._business, bad, progress=progress)
        return (item[:4] for item in mapped(records, self._business, bad, _business))
