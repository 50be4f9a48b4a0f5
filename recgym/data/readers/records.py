"""Streaming records out of raw files (plain or ``.gz``), with one policy for bad input.

Every reader goes through :func:`iter_json_records` or :func:`iter_delimited_records`, so a
malformed line, a non-UTF-8 line or a truncated ``.gz`` is reported the same way everywhere:
by default a :class:`BadRecordError` naming the file and line; with ``skip=True`` the record
is skipped and counted per reason in :class:`BadRecords`. A UTF-8 byte-order mark is dropped,
CSV fields may be of any length, and JSON strings holding lone UTF-16 surrogates are repaired
(each one replaced by U+FFFD) and counted as repaired.
"""

from __future__ import annotations

import ast
import codecs
import csv
import gzip
import json
import re
import zlib
from collections import Counter, deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

# Reasons, as counted in the manifest.
MALFORMED = "malformed_record"
MISSING_FIELD = "missing_field"
OFF_SCALE = "rating_off_scale"
EMPTY_TEXT = "empty_text"
NON_UTF8 = "non_utf8"
UNKNOWN_ITEM = "unknown_item"
TRUNCATED = "truncated_file"
CORRUPT = "corrupt_file"
BAD_TIMESTAMP = "bad_timestamp"
# Repairs, as counted in the manifest.
LONE_SURROGATE = "lone_surrogate"

#: csv's default limit (128 KiB) rejects long reviews, which are legitimate data.
CSV_FIELD_LIMIT = 2**31 - 1
#: A ``\uD800``-``\uDFFF`` escape in a JSON or Python-literal line (the only way one gets into a str).
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


class BadRecordError(ValueError):
    """A raw record that cannot be used; names the file and the (1-based) line."""

    def __init__(self, path: Path | str, line: int, reason: str, detail: str = "", hint: str = "") -> None:
        self.path, self.line, self.reason, self.detail = str(path), line, reason, detail
        hint = f" ({hint or 'pass skip_bad_records=True / --skip-bad-records to skip and count such records'})"
        super().__init__(f"{path}:{line}: {reason}{': ' + detail if detail else ''}{hint}")


class SkipRecord(Exception):
    """Raised by a record mapper to reject one record for ``reason``."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(detail)
        self.reason, self.detail = reason, detail


class BadRecords:
    """The bad-input policy of one preparation: raise, or skip and count per reason."""

    def __init__(self, skip: bool = False) -> None:
        self.skip = skip
        self.counts: Counter[str] = Counter()
        self.examples: dict[str, str] = {}
        self.repaired: Counter[str] = Counter()

    def report(self, path: Path | str, line: int, reason: str, detail: str = "") -> None:
        if not self.skip:
            raise BadRecordError(path, line, reason, detail)
        self.counts[reason] += 1
        self.examples.setdefault(reason, f"{path}:{line}: {detail}"[:300])

    def repair(self, path: Path | str, line: int, reason: str, detail: str = "") -> None:
        """Count a record that was kept after a repair (never raises)."""
        self.repaired[reason] += 1
        self.examples.setdefault(reason, f"{path}:{line}: {detail}"[:300])

    def summary(self) -> dict[str, Any]:
        return {
            "skipped": dict(sorted(self.counts.items())),
            "repaired": dict(sorted(self.repaired.items())),
            "examples": dict(self.examples),
        }


def open_binary(path: Path) -> Any:
    """The file as a binary stream, decompressing ``.gz`` on the fly."""
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def compressed_position(stream: Any) -> int:
    """Bytes consumed from disk so far (for progress bars over ``.gz`` files too)."""
    raw = getattr(stream, "fileobj", None) or stream
    try:
        return raw.tell()
    except (OSError, ValueError):
        return 0


def iter_lines(
    path: Path,
    bad: BadRecords,
    encoding: str = "utf-8",
    progress: Callable[[int], None] | None = None,
    keep_blank: bool = False,
) -> Iterator[tuple[int, str]]:
    """``(line_number, text)`` of every non-blank line (every line with ``keep_blank``);
    undecodable lines and a truncated ``.gz`` go through ``bad``."""
    line_no = 0
    with open_binary(path) as stream:
        try:
            for line_no, raw in enumerate(stream, start=1):
                if progress is not None and line_no % 4096 == 0:
                    progress(compressed_position(stream))
                if line_no == 1 and raw.startswith(codecs.BOM_UTF8):
                    raw = raw[len(codecs.BOM_UTF8):]
                try:
                    text = raw.decode(encoding)
                except UnicodeDecodeError as exc:
                    bad.report(path, line_no, NON_UTF8, str(exc))
                    continue
                if keep_blank or text.strip():
                    yield line_no, text
        except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
            bad.report(path, line_no + 1, TRUNCATED, f"compressed stream ends early ({exc})")
        if progress is not None:
            progress(compressed_position(stream))


def parse_literal(text: str) -> Any:
    """A JSON object, or failing that a Python-literal dict (Amazon 2014 metadata); never ``eval``."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return ast.literal_eval(text)


def without_surrogates(value: Any) -> tuple[Any, bool]:
    """``value`` (a parsed record) with every lone surrogate in its strings replaced by U+FFFD,
    and whether there was one."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace"), True
        return value, False
    if isinstance(value, dict):
        pairs = [(without_surrogates(k), without_surrogates(v)) for k, v in value.items()]
        return {k: v for (k, _), (v, _) in pairs}, any(a or b for (_, a), (_, b) in pairs)
    if isinstance(value, list | tuple):
        parts = [without_surrogates(v) for v in value]
        return type(value)(p for p, _ in parts), any(changed for _, changed in parts)
    return value, False


def iter_json_records(
    path: Path,
    bad: BadRecords,
    python_literals: bool = False,
    progress: Callable[[int], None] | None = None,
) -> Iterator[tuple[int, dict]]:
    """``(line_number, object)`` per JSON line (or Python-literal line when ``python_literals``)."""
    loads = parse_literal if python_literals else json.loads
    for line_no, text in iter_lines(path, bad, progress=progress):
        try:
            record = loads(text)
        except (ValueError, SyntaxError, MemoryError, RecursionError) as exc:
            bad.report(path, line_no, MALFORMED, f"{type(exc).__name__}: {exc}"[:200])
            continue
        if not isinstance(record, dict):
            bad.report(path, line_no, MALFORMED, f"expected an object, got {type(record).__name__}")
            continue
        if _SURROGATE_ESCAPE.search(text):
            record, repaired = without_surrogates(record)
            if repaired:
                bad.repair(path, line_no, LONE_SURROGATE, "lone UTF-16 surrogate replaced by U+FFFD")
        yield line_no, record


def iter_delimited_records(
    path: Path,
    bad: BadRecords,
    delimiter: str = ",",
    fieldnames: list[str] | None = None,
    encoding: str = "utf-8",
    progress: Callable[[int], None] | None = None,
    row_like: Callable[[dict[str, str]], bool] | None = None,
) -> Iterator[tuple[int, dict]]:
    """``(line_number, row dict)`` per CSV/TSV row, numbered by the row's first line; the header
    is the first row unless ``fieldnames`` is given. Quoted fields may span lines (blank lines in
    them are kept) and be of any length.

    An unclosed quote would make csv swallow the lines after it into one field: a quoted field
    that runs to the end of the file, or that reaches a line reading as a row of its own (the
    header's number of fields, and ``row_like`` of them where given), is a bad record at the
    line where it opens, and the lines after that one are read again as rows."""
    csv.field_size_limit(max(csv.field_size_limit(), CSV_FIELD_LIMIT))
    numbered = iter_lines(path, bad, encoding=encoding, progress=progress, keep_blank=True)
    pending: deque[tuple[int, str]] = deque()  # lines to read again after an unclosed quote
    taken: list[tuple[int, str]] = []  # the lines of the row being read
    header = fieldnames
    cut: list[str] = []  # why the row being read was cut short

    def reads_as_row(text: str) -> bool:
        fields = next(csv.reader([text], delimiter=delimiter), [])
        return len(fields) == len(header) and (row_like is None or row_like(dict(zip(header, fields))))

    def lines() -> Iterator[str]:
        while True:
            if pending:
                line_no, text = pending.popleft()
            else:
                line_no, text = next(numbered, (0, ""))
                if not line_no:
                    if taken:  # csv is inside a quoted field
                        cut.append("runs to the end of the file")
                    return
            if not taken and not text.strip():  # a blank line between rows
                continue
            if taken and header is not None and reads_as_row(text):
                cut.append(f"reaches line {line_no}, which reads as a row of its own ({text.strip()[:60]!r})")
                pending.appendleft((line_no, text))
                return
            taken.append((line_no, text))
            yield text

    reader = csv.reader(lines(), delimiter=delimiter)
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            bad.report(path, taken[-1][0] if taken else 0, MALFORMED, str(exc))
            taken.clear()
            continue
        start, rest = taken[0][0], taken[1:]
        taken.clear()
        if cut:
            bad.report(path, start, MALFORMED, f"a quoted field opened on this line {cut.pop()}: an unclosed quote? "
                                               '(a quote inside a quoted field is written twice: "")')
            pending.extendleft(reversed(rest))
            reader = csv.reader(lines(), delimiter=delimiter)
            continue
        if header is None:
            header = [name.strip() for name in row]
            continue
        if len(row) != len(header):
            bad.report(path, start, MALFORMED, f"expected {len(header)} fields, got {len(row)}")
            continue
        yield start, dict(zip(header, row))
