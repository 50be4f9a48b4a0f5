"""What every raw-format reader provides: a :class:`RawSource` that streams interaction
tuples and item tuples, plus small helpers for mapping raw records onto them."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from itertools import chain
from pathlib import Path
from typing import Any

from recgym.data.readers.records import (
    BAD_TIMESTAMP,
    EMPTY_TEXT,
    MALFORMED,
    MISSING_FIELD,
    OFF_SCALE,
    BadRecords,
    SkipRecord,
    iter_json_records,
)
from recgym.data.schema import RatingScale

#: ``(user_id, item_id, rating, timestamp, review_text, review_title, line_number)``; the
#: timestamp is an epoch number as written, in seconds or milliseconds (see :func:`to_seconds`).
Interaction = tuple[str, str, float, float, str, str, int]
#: ``(item_id, title, categories, description)``
Item = tuple[str, str, str, str]
Progress = Callable[[int], None]

#: Plausible rating times, 1900-01-01 to 2200-01-01 UTC, in epoch seconds. A number above
#: ``MAX_SECONDS`` (and at most 1000 times it) is in milliseconds: the two ranges do not overlap
#: for any time after March 1970.
MIN_SECONDS, MAX_SECONDS = -2_208_988_800, 7_258_118_400


class MissingDataError(FileNotFoundError):
    """The raw files are not where they were looked for; the message says what to put where."""


class RawSource(ABC):
    """One dataset's raw files, read as streams of interactions and items."""

    #: Whether reviews carry text (an empty text is then a bad record).
    has_text: bool = True
    scale: RatingScale = RatingScale(1, 5)
    #: The file the interactions come from (named in errors); set by ``__init__``.
    review_path: Path
    #: The item-metadata file, if any.
    item_path: Path | None = None
    #: How a user gives the scale (named in off-scale errors); None where the format fixes it.
    scale_option: str | None = None

    def files(self) -> list[Path]:
        return [p for p in (self.review_path, self.item_path) if p is not None]

    def params(self) -> dict[str, Any]:
        """Reader parameters that change the output (part of the cache key)."""
        return {"reader": type(self).__name__}

    @abstractmethod
    def interactions(self, bad: BadRecords, progress: Progress | None = None) -> Iterator[Interaction]:
        ...

    def items(self, bad: BadRecords, progress: Progress | None = None) -> Iterator[Item]:
        return iter(())


def field(record: dict, *names: str) -> Any:
    """The first present, non-null field among ``names``; a missing one rejects the record."""
    for name in names:
        value = record.get(name)
        if value is not None and value != "":
            return value
    raise SkipRecord(MISSING_FIELD, f"no {' / '.join(repr(n) for n in names)} field")


def _float(value: Any, what: str) -> float:
    if isinstance(value, bool):
        raise SkipRecord(MALFORMED, f"{what} {value!r} is a boolean, not a number")
    try:
        return float(value)
    except OverflowError:  # an integer beyond float range
        return math.inf if value > 0 else -math.inf
    except (TypeError, ValueError):
        raise SkipRecord(MALFORMED, f"{what} {str(value)[:50]!r} is not a number") from None


def number(value: Any, what: str) -> float:
    """A finite number (booleans, ``nan`` and ``inf`` reject the record)."""
    out = _float(value, what)
    if not math.isfinite(out):
        raise SkipRecord(MALFORMED, f"{what} {str(value)[:50]!r} is not finite")
    return out


def to_seconds(value: float) -> tuple[int, bool] | None:
    """Epoch seconds of a timestamp in seconds or milliseconds, told apart by magnitude, and
    whether it was milliseconds; None when it is no time in 1900-2200 either way (or not finite)."""
    if MIN_SECONDS <= value <= MAX_SECONDS:
        return int(value), False
    if MAX_SECONDS < value <= MAX_SECONDS * 1000:
        return int(value // 1000), True
    return None


def accepted_seconds(record: tuple, scale: RatingScale, has_text: bool) -> tuple[int, bool]:
    """The epoch seconds of an interaction's time and whether it was written in milliseconds, where
    the interaction is accepted (its rating on the scale's grid, its text non-empty where the
    dataset has text, its time in 1900-2200); else a SkipRecord saying why."""
    rating, stamp, text = record[2], record[3], record[4]
    grid = (rating - scale.low) / scale.step
    if not (scale.low <= rating <= scale.high) or abs(grid - round(grid)) > 1e-6:
        raise SkipRecord(OFF_SCALE, f"rating {rating!r} not on scale {scale.label}")
    if has_text and (not text or text.isspace()):
        raise SkipRecord(EMPTY_TEXT, "review text is empty")
    converted = to_seconds(stamp)
    if converted is None:
        raise SkipRecord(BAD_TIMESTAMP, f"timestamp {stamp!r} is not a time in 1900-2200")
    return converted


def epoch(value: Any, what: str = "timestamp") -> float:
    """An epoch timestamp as written (seconds or milliseconds); an absurd one rejects the record."""
    out = _float(value, what)
    if not math.isfinite(out) or to_seconds(out) is None:
        raise SkipRecord(BAD_TIMESTAMP, f"{what} {str(value)[:50]!r} is not a time in 1900-2200, in seconds or "
                                        "milliseconds")
    return out


def date_seconds(moment: datetime, what: str = "date") -> int:
    """Epoch seconds of a parsed date (naive = UTC), which must lie in 1900-2200."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    seconds = int(moment.timestamp())
    if not MIN_SECONDS <= seconds <= MAX_SECONDS:
        raise SkipRecord(BAD_TIMESTAMP, f"{what} {moment.isoformat()} is not in 1900-2200")
    return seconds


def ident(value: Any, what: str) -> str:
    """A user or item id: a string or an integer (an integral float counts as one)."""
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    raise SkipRecord(MALFORMED, f"{what} {str(value)[:50]!r} is not a string or an integer")


def text_of(value: Any, sep: str = " ") -> str:
    """Flatten text values (strings, numbers, lists, lists of lists) into one string."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, (list, tuple)):
        parts = (text_of(v, ", ") for v in value)
        return sep.join(p for p in parts if p)
    return str(value)


def mapped(
    records: Iterable[tuple[int, dict]],
    path: Path,
    bad: BadRecords,
    mapper: Callable[[dict], tuple],
) -> Iterator[tuple]:
    """Apply ``mapper`` to each ``(line, record)``; append the line number for interactions.
    A :class:`SkipRecord` from the mapper goes through the bad-input policy."""
    for line, record in records:
        try:
            out = mapper(record)
        except SkipRecord as skip:
            bad.report(path, line, skip.reason, skip.detail)
            continue
        yield (*out, line)


def check_format(path: Path, record: dict, fields: tuple[str, ...], name: str, expected: str = "",
                 where: str = "data_dir (--data-dir)") -> None:
    """A ValueError where ``record`` (a review file's first) holds fewer than half of ``fields``, the
    review fields of format ``name`` (``expected`` spells them out where there are several sets):
    the file is another dataset's, and skipping its records as bad ones would skip them all."""
    if 2 * sum(f in record for f in fields) >= len(fields):
        return
    shown = ", ".join(map(str, list(record)[:10])) + (", ..." if len(record) > 10 else "")
    article = "an" if name[0] in "AEIOU" else "a"
    raise ValueError(f"{path} does not look like {article} {name} review file (its fields: {shown}; {name}'s: "
                     f"{expected or ', '.join(fields)}): point {where} at the {name} files")


def find_file(data_dir: Path, patterns: Iterable[str]) -> Path | None:
    """The first file in ``data_dir`` matching one of the glob ``patterns`` (in pattern order)."""
    for pattern in patterns:
        hits = sorted(p for p in data_dir.glob(pattern) if p.is_file())
        if hits:
            return hits[0]
    return None


def require_dir(data_dir: Path | str | None, dataset: str, expected: str, published: str) -> Path:
    """``data_dir`` as a Path, or a :class:`MissingDataError` that says what belongs there."""
    if data_dir is None:
        raise MissingDataError(_missing_message(dataset, None, expected, published))
    path = Path(data_dir).expanduser()
    if not path.is_dir():
        raise MissingDataError(_missing_message(dataset, path, expected, published))
    return path


def missing_file(dataset: str, data_dir: Path, expected: str, published: str) -> MissingDataError:
    return MissingDataError(_missing_message(dataset, data_dir, expected, published))


def _missing_message(dataset: str, data_dir: Path | None, expected: str, published: str) -> str:
    where = (
        f"data_dir {str(data_dir)!r} does not hold them"
        if data_dir is not None
        else f"no data_dir given, $RECGYM_DATA_DIR is not set (it would be $RECGYM_DATA_DIR/{dataset}), and "
        f"nothing is prepared (`recgym data prepare {dataset} --data-dir DIR` once, then the name is enough)"
    )
    return (
        f"dataset {dataset!r}: raw files not found: {where}.\n"
        f"Expected files (plain or .gz):\n{expected}\n"
        f"Published at: {published}"
    )


class JsonFilesSource(RawSource):
    """A review file and an optional item file, both JSON lines, found by glob patterns in
    ``data_dir``; subclasses name the patterns and map one record of each."""

    dataset: str
    #: The format's name and its review records' fields (a first record with fewer than half is refused).
    format_name: str
    review_fields: tuple[str, ...]
    review_patterns: tuple[str, ...]
    item_patterns: tuple[str, ...]
    expected: str
    published: str

    def __init__(self, data_dir: Path | str | None) -> None:
        root = require_dir(data_dir, self.dataset, self.expected, self.published)
        reviews = find_file(root, self.review_patterns)
        if reviews is None:
            raise missing_file(self.dataset, root, self.expected, self.published)
        self.review_path = reviews
        self.item_path = find_file(root, self.item_patterns)

    @staticmethod
    def review_record(record: dict) -> tuple:
        """``(user, item, rating, timestamp, text, title)`` of one review record."""
        raise NotImplementedError

    @staticmethod
    def item_record(record: dict) -> tuple:
        """``(item, title, categories, description)`` of one item record."""
        raise NotImplementedError

    def interactions(self, bad: BadRecords, progress: Progress | None = None) -> Iterator[Interaction]:
        records = iter_json_records(self.review_path, bad, progress=progress)
        first = next(records, None)
        if first is None:
            return iter(())
        check_format(self.review_path, first[1], self.review_fields, self.format_name)
        return mapped(chain([first], records), self.review_path, bad, self.review_record)

    def items(self, bad: BadRecords, progress: Progress | None = None) -> Iterator[Item]:
        if self.item_path is None:
            return iter(())
        records = iter_json_records(self.item_path, bad, progress=progress)
        return (item[:4] for item in mapped(records, self.item_path, bad, self.item_record))
