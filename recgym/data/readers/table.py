"""Any ratings table (CSV/TSV, JSON lines or Parquet; plain or ``.gz``) with a column mapping."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Mapping
from datetime import date, datetime
from pathlib import Path
from typing import Any

from recgym.data.readers.base import (
    Interaction,
    Item,
    Progress,
    RawSource,
    accepted_seconds,
    date_seconds,
    epoch,
    field,
    ident,
    mapped,
    number,
    text_of,
)
from recgym.data.readers.records import (
    CORRUPT,
    MALFORMED,
    BadRecords,
    SkipRecord,
    iter_delimited_records,
    iter_json_records,
    open_binary,
)
from recgym.data.schema import RatingScale

#: Keys of the column mapping: required ones first, then optional.
REQUIRED_COLUMNS = ("user", "item", "rating", "timestamp")
OPTIONAL_COLUMNS = ("review", "review_title", "title", "categories", "item_text")
#: Optional keys that describe the item, not one rating of it.
ITEM_COLUMNS = ("title", "categories", "item_text")


def parse_timestamp(value: Any) -> float | int:
    """An epoch number (seconds or milliseconds, as written) or the seconds of an ISO-8601
    string (naive = UTC)."""
    if isinstance(value, datetime):  # a Parquet timestamp column
        return date_seconds(value, "timestamp")
    if isinstance(value, date):  # a Parquet date32 column: midnight UTC, as an ISO date string is read
        return date_seconds(datetime(value.year, value.month, value.day), "timestamp")
    try:
        return epoch(value)
    except SkipRecord as skip:
        if skip.reason != MALFORMED or not isinstance(value, str):
            raise
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise SkipRecord(MALFORMED, f"timestamp {value[:50]!r} is neither a number nor ISO-8601") from None
    return date_seconds(moment, "timestamp")


def iter_parquet_records(
    path: Path, bad: BadRecords, progress: Progress | None = None
) -> Iterator[tuple[int, dict]]:
    """``(row_number, record)`` per row; a file pyarrow cannot read goes through ``bad``
    (as ``corrupt_file`` at the row where reading stopped)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    row = 0
    try:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=65536):
            for record in batch.to_pylist():
                row += 1
                yield row, record
            if progress is not None:
                progress(row)
    except (pa.ArrowException, OSError) as exc:
        bad.report(path, row + 1, CORRUPT, f"not a readable Parquet file ({exc})"[:300])


class TableSource(RawSource):
    """A user's own ratings file. ``columns`` maps ``user``, ``item``, ``rating``, ``timestamp``
    (and optionally ``review``, ``review_title``, ``title``, ``categories``, ``item_text``) to the
    file's column names."""

    scale_option = "scale=(low, high[, step]) / --scale LOW HIGH [STEP]"

    def __init__(
        self, path: Path | str | None, columns: Mapping[str, str] | None, scale: Any = (1, 5)
    ) -> None:
        if path is None:
            raise FileNotFoundError(
                "dataset 'custom' needs path=<ratings file (.csv, .tsv, .jsonl, .parquet, optionally .gz)>"
            )
        self.review_path = Path(path).expanduser()
        if self.review_path.is_dir():
            raise FileNotFoundError(f"dataset 'custom': {self.review_path} is a directory: path (--path) names the "
                                    "ratings file itself (.csv, .tsv, .jsonl, .parquet, optionally .gz)")
        if not self.review_path.is_file():
            raise FileNotFoundError(f"dataset 'custom': ratings file {self.review_path} does not exist")
        if columns is not None and not isinstance(columns, Mapping):
            raise TypeError(f"columns must be a mapping of field to column name, such as {{'user': 'uid', 'item': "
                            f"'iid', 'rating': 'stars', 'timestamp': 'ts'}}; got a {type(columns).__name__}")
        columns = dict(columns or {})
        unknown = set(columns) - set(REQUIRED_COLUMNS) - set(OPTIONAL_COLUMNS)
        missing = [c for c in REQUIRED_COLUMNS if c not in columns]
        if unknown or missing:
            raise ValueError(
                f"columns must map {', '.join(REQUIRED_COLUMNS)} (and optionally "
                f"{', '.join(OPTIONAL_COLUMNS)}) to column names; missing {missing}, unknown {sorted(unknown)}"
            )
        not_names = [f"{key}={col!r}" for key, col in columns.items() if not isinstance(col, str) or not col]
        if not_names:
            raise TypeError(f"columns must map each field to a column name (a non-empty string); got {', '.join(not_names)}")
        _check_shared(columns)
        self.columns = columns
        scale = RatingScale.coerce(scale)  # in floats: (1, 5), (1.0, 5.0) and (1, 5, 1) are one cache key
        self.scale = RatingScale(float(scale.low), float(scale.high), float(scale.step))
        self.has_text = "review" in columns
        self._check_columns()

    def _check_columns(self) -> None:
        """Refuse a mapping that names a column the file does not have, before anything is read
        (otherwise every row fails with a missing field, or an optional column is silently empty)."""
        names = self._file_columns()
        if names is None:  # unreadable: reading reports it, record by record
            return
        path = self.review_path
        if not names:
            raise ValueError(f"dataset 'custom': {path} has no header row or records (is it empty?)")
        repeated = next((col for col in self.columns.values() if names.count(col) > 1), None)
        if repeated is not None:
            raise ValueError(f"dataset 'custom': column {repeated!r} appears {names.count(repeated)} times in {path.name}'s "
                             "header (only the last one would be read): rename the copies")
        absent = [f"{key}={col!r}" for key, col in self.columns.items() if col not in names]
        if absent:
            shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
            hint = ""
            if len(names) == 1 and any(d in names[0] for d in (";", "\t", ",", "|")):
                hint = " (one column: .csv files are read comma-separated, .tsv tab-separated)"
            raise ValueError(f"dataset 'custom': columns {', '.join(absent)} not in {path.name}, "
                             f"whose columns are: {shown}{hint}")

    def _file_columns(self) -> list[str] | None:
        """The file's column names: the CSV/TSV header or the Parquet schema; None for JSON lines
        (a key may be missing from some records: those are counted as bad records) and where the
        file cannot be read."""
        import csv
        import io

        name = self.review_path.name.lower().removesuffix(".gz")
        if name.endswith((".jsonl", ".json", ".ndjson")):
            return None
        try:
            if name.endswith(".parquet"):
                import pyarrow.parquet as pq

                return list(pq.read_schema(self.review_path).names)
            with io.TextIOWrapper(open_binary(self.review_path), encoding="utf-8-sig", errors="replace") as text:
                header = next(csv.reader(text, delimiter="\t" if name.endswith(".tsv") else ","), [])
            return [column.strip() for column in header]
        except Exception:  # noqa: BLE001 - any reading failure is reported by interactions()
            return None


    def params(self) -> dict[str, Any]:
        return {"reader": "TableSource", "columns": dict(sorted(self.columns.items()))}

    def _records(self, bad: BadRecords, progress: Progress | None) -> Iterator[tuple[int, dict]]:
        name = self.review_path.name.lower().removesuffix(".gz")
        if name.endswith(".parquet"):
            return iter_parquet_records(self.review_path, bad, progress)
        if name.endswith((".jsonl", ".json", ".ndjson")):
            return iter_json_records(self.review_path, bad, progress=progress)
        return iter_delimited_records(
            self.review_path, bad, "\t" if name.endswith(".tsv") else ",", progress=progress, row_like=self._row_like
        )

    def _row(self, record: dict) -> tuple:
        """``(user, item, rating, timestamp, review, review_title)`` of one row; a SkipRecord where a
        required field is missing or unreadable."""
        c = self.columns
        return (
            ident(field(record, c["user"]), c["user"]),
            ident(field(record, c["item"]), c["item"]),
            number(field(record, c["rating"]), "rating"),
            parse_timestamp(field(record, c["timestamp"])),
            text_of(record.get(c["review"])) if "review" in c else "",
            text_of(record.get(c["review_title"])) if "review_title" in c else "",
        )

    def _row_like(self, fields: dict[str, str]) -> bool:
        """Whether a line that csv read inside a quoted field (already of the header's width) reads as a
        rating row of this table: a user, an item, and a rating or a time that parse (a bad row's
        other field may not)."""
        c = self.columns
        if not fields.get(c["user"], "").strip() or not fields.get(c["item"], "").strip():
            return False
        for key, parse in (("rating", lambda v: number(v, "rating")), ("timestamp", parse_timestamp)):
            try:
                parse(field(fields, c[key]))
            except SkipRecord:
                continue
            return True
        return False

    def interactions(self, bad: BadRecords, progress: Progress | None = None) -> Iterator[Interaction]:
        return mapped(self._records(bad, progress), self.review_path, bad, self._row)

    def items(self, bad: BadRecords, progress: Progress | None = None) -> Iterator[Item]:
        """One item row per accepted rating row (rejected rows carry no metadata); preparation takes each
        item's first non-empty title, categories and description."""
        c = self.columns
        if not set(ITEM_COLUMNS) & c.keys():
            return iter(())

        def item(record: dict) -> tuple:
            rating = self._row(record)
            accepted_seconds(rating, self.scale, self.has_text)
            return (
                rating[1],
                text_of(record.get(c["title"])) if "title" in c else "",
                text_of(record.get(c["categories"])) if "categories" in c else "",
                text_of(record.get(c["item_text"])) if "item_text" in c else "",
            )

        quiet = BadRecords(skip=True)  # rows are validated and counted by interactions(); don't count twice
        return (i[:4] for i in mapped(self._records(quiet, None), self.review_path, quiet, item))


def _check_shared(columns: dict[str, str]) -> None:
    """Refuse two required fields read from one column (``timestamp=stars`` would order each user's
    ratings by their value), and an item field read from a column that varies per rating (one
    rating's value would show as the item's, in every prompt of the item)."""
    fields_of: dict[str, list[str]] = defaultdict(list)
    for key, column in columns.items():
        fields_of[column].append(key)
    for column, keys in fields_of.items():
        required = [k for k in keys if k in REQUIRED_COLUMNS]
        if len(required) > 1:
            both = f"{' and '.join(required)} both" if len(required) == 2 else f"{', '.join(required)} all"
            raise ValueError(f"columns {both} map to {column!r}: user, item, rating and timestamp each need a column "
                             "of their own")
        item = [k for k in keys if k in ITEM_COLUMNS]
        per_rating = [k for k in keys if k not in ITEM_COLUMNS and k != "item"]
        if item and per_rating:
            raise ValueError(f"columns {item[0]} and {per_rating[0]} both map to {column!r}: an item's {item[0]} must "
                             "come from a column describing the item, not from one that varies per rating")
