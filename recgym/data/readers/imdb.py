"""IMDb, in the layout of the IMDB Spoiler dataset: ``IMDB_reviews.json`` + ``IMDB_movie_details.json``."""

from __future__ import annotations

from datetime import datetime

from recgym.data.readers.base import JsonFilesSource, date_seconds, field, ident, number, text_of
from recgym.data.readers.records import MALFORMED, SkipRecord
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
            moment = parse(value.strip())
        except (TypeError, ValueError, AttributeError):
            continue
        return date_seconds(moment.replace(tzinfo=None), "review_date")
    raise SkipRecord(MALFORMED, f"review_date {value!r} is not like '10 February 2006'")


def _review(record: dict) -> tuple:
    return (
        ident(field(record, "user_id"), "user_id"),
        ident(field(record, "movie_id"), "movie_id"),
        number(field(record, "rating"), "rating"),
        parse_review_date(field(record, "review_date")),
        text_of(record.get("review_text")),
        text_of(record.get("review_summary")),
    )


def _movie(record: dict) -> tuple:
    return (
        ident(field(record, "movie_id"), "movie_id"),
        text_of(record.get("title") or record.get("movie_id")),
        text_of(record.get("genre"), ", "),
        text_of(record.get("plot_summary")),
    )


class ImdbSource(JsonFilesSource):
    """IMDb user reviews, rated 1-10 (kept on that scale)."""

    scale = RatingScale(1, 10)
    dataset = "imdb"
    format_name, review_fields = "IMDb", ("user_id", "movie_id", "rating", "review_text", "review_date")
    review_patterns = ("IMDB_reviews*.json*", "*reviews*.json*")
    item_patterns = ("IMDB_movie_details*.json*", "*movie_details*.json*")
    expected, published = EXPECTED, PUBLISHED
    review_record = staticmethod(_review)
    item_record = staticmethod(_movie)
