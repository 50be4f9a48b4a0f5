"""Hostile raw input, every reader: byte-order marks, absurd or mixed-unit timestamps, lone
surrogates, non-string text, booleans as ratings, huge CSV fields, corrupt Parquet, a wrong
Amazon category. Plus the property: preparation succeeds with bad records counted per reason
(``skip_bad_records=True``) or stops with a :class:`BadRecordError` naming the file and line of
the first bad record; never another exception, never a reordered or mis-typed record."""

from __future__ import annotations

import codecs
import csv
import io
import json
import math
import tempfile
import warnings
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recgym.data import loaders
from recgym.data.readers import BadRecordError

MISSING = object()  # a field left out of the record (an empty cell in a table)
UNCLOSED = "UNCLOSED-QUOTE"  # written as a lone '"' opening a CSV field that never closes
DAY = 86_400


@dataclass(frozen=True)
class Layout:
    """One reader's review file: where it goes, its format and its field names."""

    name: str
    loader: str
    file: str
    kind: str  # "json", "csv", "tsv" (no header) or "parquet"
    fields: tuple[str, str, str, str, str | None]  # user, item, rating, time, text
    date_format: str | None = None  # times are dates in this format (else epoch numbers)
    loader_kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def numeric_times(self) -> bool:
        return self.date_format is None

    @property
    def has_text(self) -> bool:
        return self.fields[4] is not None

    def first_line(self) -> int:
        """The line of the first record (after a header)."""
        return 2 if self.kind == "csv" else 1

    def write(self, root: Path, records: list[dict[str, Any]], bom: bool = False) -> Path:
        """Write ``records`` (generic keys user/item/rating/time/text) in this layout."""
        root.mkdir(parents=True, exist_ok=True)
        path = root / self.file
        named = [
            {name: record[key] for key, name in zip(("user", "item", "rating", "time", "text"), self.fields)
             if name is not None and record.get(key, MISSING) is not MISSING}
            for record in records
        ]
        columns = [name for name in self.fields if name is not None]
        if self.kind == "parquet":
            table = {c: [None if r.get(c) is None else str(r[c]) for r in named] for c in columns}
            pq.write_table(pa.table(table), path)
            return path
        if self.kind == "json":
            data = "".join(json.dumps(r) + "\n" for r in named)
        else:
            out = io.StringIO()
            writer = csv.writer(out, delimiter="\t" if self.kind == "tsv" else ",", lineterminator="\n")
            if self.kind == "csv":
                writer.writerow(columns)
            writer.writerows([[r.get(c, "") for c in columns] for r in named])
            data = out.getvalue()
            data = data.replace(UNCLOSED, '"')
        path.write_bytes((codecs.BOM_UTF8 if bom else b"") + data.encode())
        return path

    def load(self, root: Path, cache: Path, **options: Any):
        options = {"cache_dir": cache, "progress": False, "keep_cold_samples": True, **options}
        if self.loader == "custom":
            return loaders.load_custom(path=root / self.file, **self.loader_kwargs, **options)
        return getattr(loaders, f"load_{self.loader}")(root, **options)

    def time_value(self, seconds: int) -> Any:
        if self.date_format is None:
            return seconds
        return datetime.fromtimestamp(seconds, UTC).strftime(self.date_format)


CUSTOM = {"columns": {"user": "u", "item": "i", "rating": "r", "timestamp": "t", "review": "txt"}, "scale": (1, 5)}
LAYOUTS = {
    layout.name: layout
    for layout in (
        Layout("yelp", "yelp", "yelp_academic_dataset_review.json", "json",
               ("user_id", "business_id", "stars", "date", "text"), "%Y-%m-%d %H:%M:%S"),
        Layout("amazon_2014", "amazon_book", "reviews_Books_5.json", "json",
               ("reviewerID", "asin", "overall", "unixReviewTime", "reviewText")),
        Layout("amazon_2023", "amazon_book", "Books.jsonl", "json",
               ("user_id", "parent_asin", "rating", "timestamp", "text")),
        Layout("amazon_csv", "amazon_book", "Books.csv", "csv",
               ("reviewerID", "asin", "overall", "unixReviewTime", "reviewText")),
        Layout("imdb", "imdb", "IMDB_reviews.json", "json",
               ("user_id", "movie_id", "rating", "review_date", "review_text"), "%d %B %Y"),
        Layout("movielens", "movielens", "ratings.csv", "csv", ("userId", "movieId", "rating", "timestamp", None)),
        Layout("movielens_100k", "movielens", "u.data", "tsv", ("userId", "movieId", "rating", "timestamp", None)),
        Layout("custom_csv", "custom", "ratings.csv", "csv", ("u", "i", "r", "t", "txt"), loader_kwargs=CUSTOM),
        Layout("custom_jsonl", "custom", "ratings.jsonl", "json", ("u", "i", "r", "t", "txt"), loader_kwargs=CUSTOM),
        Layout("custom_parquet", "custom", "ratings.parquet", "parquet", ("u", "i", "r", "t", "txt"),
               loader_kwargs=CUSTOM),
    )
}
JSON = [name for name, layout in LAYOUTS.items() if layout.kind == "json"]
TEXT_FILES = [name for name, layout in LAYOUTS.items() if layout.kind in ("json", "csv", "tsv")]
NUMERIC_TIMES = [name for name, layout in LAYOUTS.items() if layout.numeric_times]
CSV_WITH_TEXT = [name for name, layout in LAYOUTS.items() if layout.kind == "csv" and layout.has_text]
T0 = 1_500_000_000 // DAY * DAY


def record(layout: Layout, k: int, **values: Any) -> dict[str, Any]:
    """A good record: user ``u{k % 2}``, item ``m{k}``, rating 1-5, a day-aligned time."""
    base = {"user": f"u{k % 2}", "item": f"m{k}", "rating": 1 + k % 5, "time": layout.time_value(T0 + k * DAY),
            "text": f"review {k}"}
    return {**base, **values}


def rows(ds) -> dict[tuple[str, str], tuple[float, int, str]]:
    """(user, item) -> (rating, timestamp, review) over every prepared interaction."""
    return {
        (ds.user_ids[int(u)], ds.item_ids[int(i)]): (float(r), int(t), ds.review_texts[k])
        for k, (u, i, r, t) in enumerate(zip(ds.user_codes, ds.item_codes, ds.ratings, ds.timestamps))
    }


def manifest(ds) -> dict:
    return json.loads((Path(ds.stats["cache_dir"]) / "manifest.json").read_text())


def bad_second_record(layout: Layout, tmp_path: Path, **bad: Any) -> tuple[Path, Path]:
    """Three records, the second one holding ``bad`` values."""
    root = tmp_path / "raw"
    path = layout.write(root, [record(layout, 0), record(layout, 1, **bad), record(layout, 2)])
    return root, path


def assert_rejected(layout: Layout, tmp_path: Path, reason: str, **bad: Any) -> None:
    """The bad second record stops preparation naming file and line, or is skipped and counted."""
    root, path = bad_second_record(layout, tmp_path, **bad)
    with pytest.raises(BadRecordError) as info:
        layout.load(root, tmp_path / "cache")
    assert (info.value.path, info.value.line, info.value.reason) == (str(path), layout.first_line() + 1, reason)
    ds = layout.load(root, tmp_path / "cache", skip_bad_records=True)
    assert manifest(ds)["bad_records"]["skipped"] == {reason: 1}
    assert sorted(rows(ds)) == [("u0", "m0"), ("u0", "m2")]


# ---- one test per class of hostile input -----------------------------------------------------
@pytest.mark.parametrize("name", TEXT_FILES)
def test_byte_order_mark_is_dropped(tmp_path, name):
    layout = LAYOUTS[name]
    layout.write(tmp_path / "raw", [record(layout, k) for k in range(3)], bom=True)
    ds = layout.load(tmp_path / "raw", tmp_path / "cache")
    assert sorted(rows(ds)) == [("u0", "m0"), ("u0", "m2"), ("u1", "m1")]


@pytest.mark.parametrize("value", [math.inf, math.nan, 1e30, -1e15, 10**400], ids=["inf", "nan", "1e30", "-1e15", "1e400"])
@pytest.mark.parametrize("name", NUMERIC_TIMES)
def test_non_finite_or_absurd_timestamp_is_a_bad_record(tmp_path, name, value):
    layout = LAYOUTS[name]
    if value == 10**400 and layout.kind != "json":
        value = "1e400"  # the same number as text
    assert_rejected(layout, tmp_path, "bad_timestamp", time=value)


@pytest.mark.parametrize("name", ["yelp", "imdb"])
def test_absurd_date_is_a_bad_record(tmp_path, name):
    layout = LAYOUTS[name]
    absurd = datetime(9999, 1, 1).strftime(layout.date_format)
    assert_rejected(layout, tmp_path, "bad_timestamp", time=absurd)


@pytest.mark.parametrize("name", JSON)
def test_lone_surrogate_is_repaired_and_counted(tmp_path, name):
    layout = LAYOUTS[name]
    root, _ = bad_second_record(layout, tmp_path, text="broken \ud83d emoji", user="u\udc00")
    ds = layout.load(root, tmp_path / "cache")
    assert rows(ds)[("u\ufffd", "m1")][2] == "broken \ufffd emoji"
    assert manifest(ds)["bad_records"]["repaired"] == {"lone_surrogate": 1}


@pytest.mark.parametrize(("text", "stored"), [(42, "42"), (4.5, "4.5"), (["good", "read"], "good read"),
                                              ({"en": "fine"}, "{'en': 'fine'}")], ids=repr)
@pytest.mark.parametrize("name", [n for n in JSON if LAYOUTS[n].has_text])
def test_non_string_text_is_read_as_text(tmp_path, name, text, stored):
    layout = LAYOUTS[name]
    root, _ = bad_second_record(layout, tmp_path, text=text)
    assert rows(layout.load(root, tmp_path / "cache"))[("u1", "m1")][2] == stored


@pytest.mark.parametrize("value", [True, False], ids=repr)
@pytest.mark.parametrize("name", [*JSON, "custom_parquet_bool"])
def test_boolean_rating_is_malformed(tmp_path, name, value):
    if name == "custom_parquet_bool":  # a typed Parquet column of booleans
        root = tmp_path / "raw"
        root.mkdir()
        pq.write_table(pa.table({"u": ["a", "b"], "i": ["x", "y"], "r": [value, True], "t": [T0, T0 + 1],
                                 "txt": ["p", "q"]}), root / "ratings.parquet")
        with pytest.raises(BadRecordError, match="ratings.parquet:1: malformed_record: rating .* is a boolean"):
            LAYOUTS["custom_parquet"].load(root, tmp_path / "cache")
        return
    assert_rejected(LAYOUTS[name], tmp_path, "malformed_record", rating=value)


@pytest.mark.parametrize("name", NUMERIC_TIMES)
def test_mixed_seconds_and_milliseconds_are_normalized_and_counted(tmp_path, name):
    layout = LAYOUTS[name]
    seconds = [T0 + k * DAY for k in range(4)]
    stamps = [seconds[0], seconds[1] * 1000 + 999, seconds[2], seconds[3] * 1000]
    layout.write(tmp_path / "raw", [record(layout, k, time=t) for k, t in enumerate(stamps)])
    with pytest.warns(UserWarning, match=r"mix seconds and milliseconds \(2 of 4"):
        ds = layout.load(tmp_path / "raw", tmp_path / "cache")
    assert {key: value[1] for key, value in rows(ds).items()} == {
        (f"u{k % 2}", f"m{k}"): seconds[k] for k in range(4)
    }
    assert manifest(ds)["counts"]["timestamps_in_milliseconds"] == 2


@pytest.mark.parametrize("name", CSV_WITH_TEXT)
def test_csv_field_over_128_kib_is_read(tmp_path, name):
    layout = LAYOUTS[name]
    long_review = "a long review. " * 20_000  # 300 KB
    root, _ = bad_second_record(layout, tmp_path, text=long_review)
    assert rows(layout.load(root, tmp_path / "cache"))[("u1", "m1")][2] == long_review.strip()


@pytest.mark.parametrize("damage", ["truncated", "zeroed"])
def test_corrupt_parquet_names_the_file(tmp_path, damage):
    layout = LAYOUTS["custom_parquet"]
    path = layout.write(tmp_path / "raw", [record(layout, k) for k in range(50)])
    data = path.read_bytes()
    middle = len(data) // 2
    if damage == "truncated":
        path.write_bytes(data[:middle])
    else:  # the footer is intact, the data pages are not
        path.write_bytes(data[:8] + bytes(middle - 8) + data[middle:])
    with pytest.raises(BadRecordError, match=r"ratings\.parquet:1: corrupt_file: not a readable Parquet file"):
        layout.load(tmp_path / "raw", tmp_path / "cache")
    with pytest.raises(ValueError, match=r"no record was accepted \(1 bad record skipped: corrupt_file 1; the first: "
                                         r"ratings\.parquet:1: not a readable Parquet file"):
        layout.load(tmp_path / "raw", tmp_path / "cache", skip_bad_records=True)  # nothing readable is an error


def test_amazon_folder_of_another_category_warns(tmp_path):
    layout = LAYOUTS["amazon_2023"]
    root = tmp_path / "raw"
    layout.write(root, [record(layout, k) for k in range(3)])
    (root / "Books.jsonl").rename(root / "All_Beauty.jsonl")
    with pytest.warns(UserWarning, match=r"All_Beauty\.jsonl is not named for the category expected \(Books"):
        ds = loaders.load_amazon_book(root, cache_dir=tmp_path / "cache", progress=False, keep_cold_samples=True)
    assert len(rows(ds)) == 3
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the generic loader expects no category
        loaders.load_amazon(root, cache_dir=tmp_path / "cache", progress=False, keep_cold_samples=True)


# ---- the property --------------------------------------------------------------------------
#: kind -> (applies to layout, bad-record reason or None, values of the record).
def _kinds(layout: Layout, k: int, text: str) -> dict[str, tuple[str | None, dict[str, Any]]]:
    kinds: dict[str, tuple[str | None, dict[str, Any]]] = {
        "good": (None, {"text": text}),
        "bool_rating": ("malformed_record", {"rating": True}),
        "nan_rating": ("malformed_record", {"rating": math.nan}),
        "word_rating": ("malformed_record", {"rating": "five"}),
        "off_scale": ("rating_off_scale", {"rating": 11}),
        "missing_rating": ("missing_field", {"rating": MISSING}),
        "word_time": ("malformed_record", {"time": "soon"}),
    }
    if layout.numeric_times:
        kinds["millis"] = (None, {"time": (T0 + k * DAY) * 1000 + k % 1000})
        kinds["inf_time"] = ("bad_timestamp", {"time": math.inf})
        kinds["huge_time"] = ("bad_timestamp", {"time": 1e30})
    else:
        kinds["absurd_date"] = ("bad_timestamp", {"time": datetime(9999, 1, 1).strftime(layout.date_format)})
    if layout.has_text:
        kinds["blank_text"] = ("empty_text", {"text": "  "})
    if layout.has_text and layout.kind == "json":
        kinds["surrogate_text"] = (None, {"text": text + "\ud800"})
        kinds["number_text"] = (None, {"text": 7})
    if layout.has_text and layout.kind == "csv":
        kinds["long_text"] = (None, {"text": text * (140_000 // len(text) + 1)})
        # the text is the last column: csv would read every line after it into this field
        kinds["unclosed_quote"] = ("malformed_record", {"text": UNCLOSED + "never closed"})
    return kinds


def _expected_text(value: Any) -> str:
    return str(value).encode("utf-16", "surrogatepass").decode("utf-16", "replace").strip()


KIND_NAMES = ["good", "good", "good", "bool_rating", "nan_rating", "word_rating", "off_scale", "missing_rating",
              "word_time", "millis", "inf_time", "huge_time", "absurd_date", "blank_text", "surrogate_text",
              "number_text", "long_text", "unclosed_quote"]


@pytest.mark.parametrize("name", LAYOUTS)
@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(
    picks=st.lists(
        st.tuples(st.sampled_from(KIND_NAMES), st.text("abcé ,\"'", min_size=1, max_size=8).map(lambda s: "x" + s)),
        min_size=1, max_size=7,
    ),
    bom=st.booleans(),
)
def test_every_reader_counts_or_names_bad_records(name, picks, bom):
    layout = LAYOUTS[name]
    records, reasons, expected = [], [], {}
    for k, (kind, text) in enumerate(picks):
        kinds = _kinds(layout, k, text)
        reason, values = kinds.get(kind, kinds["good"])
        rec = record(layout, k, **values)
        records.append(rec)
        reasons.append(reason)
        if reason is None:
            seconds = T0 + k * DAY
            expected[(rec["user"], rec["item"])] = (float(rec["rating"]), seconds,
                                                    _expected_text(rec["text"]) if layout.has_text else "")
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the mixed-unit warning
        root = Path(tmp) / "raw"
        path = layout.write(root, records, bom=bom and layout.kind != "parquet")
        first_bad = next((k for k, r in enumerate(reasons) if r is not None), None)
        if first_bad is None:
            assert rows(layout.load(root, Path(tmp) / "strict")) == expected
        else:
            with pytest.raises(BadRecordError) as info:
                layout.load(root, Path(tmp) / "strict")
            assert (info.value.path, info.value.line, info.value.reason) == (
                str(path), layout.first_line() + first_bad, reasons[first_bad])
        skipped = dict(Counter(r for r in reasons if r is not None))
        if not expected:  # every record bad: an error that counts them, not an empty dataset
            with pytest.raises(ValueError, match="no record was accepted") as info:
                layout.load(root, Path(tmp) / "lenient", skip_bad_records=True)
            assert all(f"{reason} {n}" in str(info.value) for reason, n in skipped.items())
            return
        ds = layout.load(root, Path(tmp) / "lenient", skip_bad_records=True)
        assert rows(ds) == expected
        assert manifest(ds)["bad_records"]["skipped"] == skipped
