"""Yelp Open Dataset: ``yelp_academic_dataset_review.json`` + ``yelp_academic_dataset_business.json``."""

from __future__ import annotations

from datetime import datetime

from recgym.data.readers.base import JsonFilesSource, date_seconds, field, ident, number, text_of
from recgym.data.readers.records import MALFORMED, SkipRecord

PUBLISHED = "https://www.yelp.com/dataset (Yelp Open Dataset, JSON download)"
EXPECTED = (
    "  yelp_academic_dataset_review.json    (reviews: user_id, business_id, stars, text, date)\n"
    "  yelp_academic_dataset_business.json  (optional: name, categories, city, state)"
)


def parse_date(value: str) -> int:
    """Seconds since the epoch of a Yelp ``YYYY-MM-DD HH:MM:SS`` date (read as UTC)."""
    try:
        moment = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        raise SkipRecord(MALFORMED, f"date {value!r} is not YYYY-MM-DD[ HH:MM:SS]") from None
    return date_seconds(moment.replace(tzinfo=None))


def _review(record: dict) -> tuple:
    return (
        ident(field(record, "user_id"), "user_id"),
        ident(field(record, "business_id"), "business_id"),
        number(field(record, "stars"), "stars"),
        parse_date(field(record, "date")),
        text_of(record.get("text")),
        "",
    )


def _business(record: dict) -> tuple:
    place = ", ".join(p for p in (text_of(record.get("city")), text_of(record.get("state"))) if p)
    return (
        ident(field(record, "business_id"), "business_id"),
        text_of(record.get("name")),
        text_of(record.get("categories")),
        place,
    )


class YelpSource(JsonFilesSource):
    """Reviews (scale 1-5) and businesses of the Yelp Open Dataset (any sample of it)."""

    dataset = "yelp"
    format_name, review_fields = "Yelp", ("user_id", "business_id", "stars", "text", "date")
    review_patterns = ("yelp_academic_dataset_review*.json*", "*review*.json*")
    item_patterns = ("yelp_academic_dataset_business*.json*", "*business*.json*")
    expected, published = EXPECTED, PUBLISHED
    review_record = staticmethod(_review)
    item_record = staticmethod(_business)
