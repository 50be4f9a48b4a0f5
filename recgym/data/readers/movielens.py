"""MovieLens: ml-100k (``u.data``, ``u.item``) and ml-latest(-small) (``ratings.csv``, ``movies.csv``).

Titles and genres, no review text. ml-100k rates 1-5; ml-latest rates 0.5-5 in half steps.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from recgym.data.readers.base import (
    Interaction,
    Item,
    Progress,
    RawSource,
    epoch,
    field,
    find_file,
    ident,
    mapped,
    missing_file,
    number,
    require_dir,
)
from recgym.data.readers.records import BadRecords, iter_delimited_records
from recgym.data.schema import RatingScale

PUBLISHED = "https://grouplens.org/datasets/movielens/ (ml-latest-small.zip or ml-100k.zip, unzipped)"
EXPECTED = (
    "  ml-latest-small: ratings.csv (userId,movieId,rating,timestamp) and movies.csv (movieId,title,genres)\n"
    "  or ml-100k:      u.data (user, item, rating, timestamp; tab-separated) and u.item"
)
_GENRES_100K = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western"]


def _rating(record: dict) -> tuple:
    return (
        ident(field(record, "userId"), "userId"),
        ident(field(record, "movieId"), "movieId"),
        number(field(record, "rating"), "rating"),
        epoch(field(record, "timestamp")),
        "",
        "",
    )


def _movie(record: dict) -> tuple:
    return (ident(field(record, "movieId"), "movieId"), record.get("title") or "", _genres(record), "")


def _genres(record: dict) -> str:
    genres = record.get("genres")
    if genres is not None:
        return "" if genres == "(no genres listed)" else genres.replace("|", ", ")
    flags = [record.get(f"g{i}") == "1" for i in range(len(_GENRES_100K))]
    return ", ".join(g for g, on in zip(_GENRES_100K, flags) if on)


class MovieLensSource(RawSource):
    """Either MovieLens layout, detected from the files present."""

    has_text = False

    def __init__(self, data_dir: Path | str | None) -> None:
        root = require_dir(data_dir, "movielens", EXPECTED, PUBLISHED)
        self.review_path = find_file(root, ["ratings.csv*"])
        self.variant = "ml-latest"
        if self.review_path is None:
            self.review_path = find_file(root, ["u.data*"])
            self.variant = "ml-100k"
        if self.review_path is None:
            raise missing_file("movielens", root, EXPECTED, PUBLISHED)
        self.item_path = find_file(root, ["movies.csv*"] if self.variant == "ml-latest" else ["u.item*"])
        self.scale = RatingScale(0.5, 5, 0.5) if self.variant == "ml-latest" else RatingScale(1, 5)



    def params(self) -> dict[str, Any]:
        return {"reader": "MovieLensSource", "variant": self.variant}

    def interactions(self, bad: BadRecords, progress: Progress | None = None) -> Iterator[Interaction]:
        if self.variant == "ml-latest":
            rows = iter_delimited_records(self.review_path, bad, progress=progress)
        else:
            names = ["userId", "movieId", "rating", "timestamp"]
            rows = iter_delimited_records(self.review_path, bad, "\t", names, progress=progress)
        return mapped(rows, self.review_path, bad, _rating)

    def items(self, bad: BadRecords, progress: Progress | None = None) -> Iterator[Item]:
        if self.item_path is None:
            return iter(())
        if self.variant == "ml-latest":
            rows = iter_delimited_records(self.item_path, bad, progress=progress)
        else:
            names = ["movieId", "title", "release", "video_release", "url"]
            names += [f"g{i}" for i in range(len(_GENRES_100K))]
            rows = iter_delimited_records(self.item_path, bad, "|", names, "latin-1", progress)
        return (item[:4] for item in mapped(rows, self.item_path, bad, _movie))
