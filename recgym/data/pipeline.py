"""Raw files -> cached, prepared :class:`RatingDataset`, streaming and at scale.

``prepare_source`` streams a :class:`RawSource` into Arrow files in a temporary directory
(text never lives in Python lists beyond one batch), validates records, dedupes, k-core
filters, splits and indexes histories on numeric arrays (``recgym.data.prepare``), writes
a manifest, and renames the directory into the cache. A cache hit memory-maps it back.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any, Self

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recgym.cache import atomic_directory
from recgym.cache import cache_dir as recgym_cache_dir
from recgym.data.dataset import PrepareConfig, RatingDataset
from recgym.data.prepare import dedupe_earliest, kcore_filter
from recgym.data.readers.base import RawSource, accepted_seconds
from recgym.data.readers.records import (
    OFF_SCALE,
    UNKNOWN_ITEM,
    BadRecordError,
    BadRecords,
    SkipRecord,
)
from recgym.data.schema import ITEM_COLUMNS
from recgym.data.store import (
    FORMAT_VERSION,
    MANIFEST,
    ArrowStrings,
    StreamTableWriter,
    load_prepared,
    read_table,
    save_arrays,
    write_table,
)

BATCH_ROWS = 65536


def source_identity(source: RawSource) -> list[dict[str, Any]]:
    """Path, size and modification time of every raw file: a changed file changes the key."""
    out = []
    for path in source.files():
        st = path.stat()
        out.append({"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns})
    return out


def cache_key(name: str, source: RawSource, config: PrepareConfig, skip_bad_records: bool) -> str:
    identity = {
        "format_version": FORMAT_VERSION,
        "dataset": name,
        "files": source_identity(source),
        "reader": source.params(),
        "config": asdict(config),
        "scale": asdict(source.scale),
        "skip_bad_records": bool(skip_bad_records),
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:20]


def prepared_dir(name: str, source: RawSource, config: PrepareConfig, skip_bad_records: bool,
                 cache_dir: Path | str | None = None) -> Path:
    """Where the prepared dataset lives: ``<cache>/datasets/<name>/<key>`` (``cache_dir``
    defaults to ``$RECGYM_CACHE``)."""
    root = Path(cache_dir).expanduser() if cache_dir is not None else recgym_cache_dir(create=False)
    return root / "datasets" / name / cache_key(name, source, config, skip_bad_records)


def prepare_source(
    name: str,
    source: RawSource,
    config: PrepareConfig | None = None,
    skip_bad_records: bool = False,
    cache_dir: Path | str | None = None,
    progress: bool = True,
    rebuild: bool = False,
) -> RatingDataset:
    """The prepared dataset of ``source``: from the cache when its key matches, else built
    (into a temporary directory renamed into place only when complete)."""
    config = config or PrepareConfig()
    final = prepared_dir(name, source, config, skip_bad_records, cache_dir)
    if (final / MANIFEST).is_file() and not rebuild:
        return load_prepared(final)
    if not rebuild:
        _note_other_preparations(name, source, config, skip_bad_records, final.parent)
    with atomic_directory(final, replace=rebuild) as tmp:
        _build(name, source, config, BadRecords(skip_bad_records), tmp, progress)
    return load_prepared(final)


def _note_other_preparations(name: str, source: RawSource, config: PrepareConfig, skip_bad_records: bool,
                             folder: Path) -> None:
    """Warn, in one line, where the cache holds these raw files prepared with other options: options
    given to an earlier preparation (``recgym data prepare``) are not remembered by a later load. Only
    options left at their defaults here count (one given otherwise was given on purpose)."""
    ours = {**asdict(config), "skip_bad_records": bool(skip_bad_records), "scale": _scale_text(asdict(source.scale))}
    given = {k for k, v in {**asdict(PrepareConfig()), "skip_bad_records": False}.items() if ours[k] != v}
    files, params = source_identity(source), source.params()
    others: list[dict[str, Any]] = []
    for path in sorted(folder.glob("*/manifest.json"), key=lambda p: p.stat().st_mtime):
        try:
            manifest = json.loads(path.read_text())
            reader = {k: v for k, v in manifest["reader"].items() if k != "generation"}
            theirs = {**manifest["config"], "skip_bad_records": manifest["skip_bad_records"],
                      "scale": _scale_text(manifest["scale"])}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):  # being written, or an older format
            continue
        differ = {k: v for k, v in theirs.items() if k in ours and k not in given and ours[k] != v}
        if manifest.get("files") == files and reader == params and differ and differ not in others:
            others.append(differ)
    if not others:
        return
    keys = [k for k in ours if any(k in other for other in others)]
    defaults = ", ".join(_keyword(k, ours[k]) for k in keys)
    held = "; or with ".join(f"{', '.join(_keyword(k, v) for k, v in other.items())} ({_flags(other)})"
                             for other in others[:3])
    warnings.warn(f"dataset {name!r}: preparing it anew with {defaults}, while the cache holds these raw files prepared "
                  f"with {held}: preparation options are not remembered; pass them again to use that preparation",
                  stacklevel=4)


def _scale_text(scale: dict[str, Any]) -> str:
    values = [scale["low"], scale["high"]] + ([scale["step"]] if scale["step"] != 1 else [])
    return " ".join(f"{v:g}" for v in values)


def _keyword(key: str, value: Any) -> str:
    return f"scale=({value.replace(' ', ', ')})" if key == "scale" else f"{key}={value!r}"


def _flags(options: dict[str, Any]) -> str:
    """Preparation options as ``recgym`` command-line options (a false switch: "without --switch")."""
    def flag(key: str) -> str:
        return f"--{key.replace('_', '-')}"

    given = [flag(k) if v is True else f"{flag(k)} {v}" for k, v in options.items() if v is not False]
    left_out = [flag(k) for k, v in options.items() if v is False]
    return ", ".join([" ".join(given)] * bool(given) + [f"without {' '.join(left_out)}"] * bool(left_out))


# ---- stages ---------------------------------------------------------------------------------
class _Stages:
    """One rich progress bar per stage (or nothing when ``show`` is false), plus timings."""

    def __init__(self, show: bool) -> None:
        self.timings: dict[str, float] = {}
        self._progress = None
        if show:
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(
                TextColumn("{task.description:<22}"), BarColumn(), TextColumn("{task.fields[note]:>20}"),
                TimeElapsedColumn(), console=Console(stderr=True),
            )

    def __enter__(self) -> Self:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    @contextmanager
    def stage(self, label: str, total: int | None = None) -> Iterator[Any]:
        """Yield a ``callback(done)`` that moves this stage's bar (in bytes when ``total``)."""
        start = time.perf_counter()
        task = None
        if self._progress is not None:
            task = self._progress.add_task(label, total=total, note="")

        def update(done: int) -> None:
            if task is not None:
                self._progress.update(task, completed=done, note=_mib(done, total))

        yield update
        if task is not None:
            self._progress.update(task, completed=total or 1, total=total or 1, note=_mib(total, total))
        self.timings[label] = round(time.perf_counter() - start, 3)


def _mib(done: int | None, total: int | None) -> str:
    return f"{done / 2**20:,.1f}/{total / 2**20:,.1f} MiB" if total and done is not None else "done"


def _read_items(source: RawSource, bad: BadRecords, path: Path, stages: _Stages) -> int:
    """Stream the item metadata into ``path`` (Arrow); return the number of rows written."""
    writer = StreamTableWriter(path, ITEM_COLUMNS)
    buffers: list[list[str]] = [[], [], [], []]
    total = source.item_path.stat().st_size if source.item_path else None
    with stages.stage("read items", total) as update:
        for item in source.items(bad, update):
            for buffer, value in zip(buffers, item):
                buffer.append(value)
            if len(buffers[0]) >= BATCH_ROWS:
                writer.write(buffers)
                buffers = [[], [], [], []]
        writer.write(buffers)
        writer.close()
    return writer.rows


class _Interactions:
    """Numeric and id columns of the accepted interactions, gathered batch by batch while the
    review text goes straight to an Arrow file."""

    def __init__(self, reviews_path: Path) -> None:
        self.writer = StreamTableWriter(reviews_path, ("review_text", "review_title"))
        self.users: list[pa.Array] = []
        self.items: list[pa.Array] = []
        self.ratings: list[np.ndarray] = []
        self.timestamps: list[np.ndarray] = []
        self.lines: list[np.ndarray] = []

    def add(self, batch: list[list]) -> None:
        users, items, ratings, timestamps, texts, titles, lines = batch
        if not users:
            return
        self.writer.write((texts, titles))
        self.users.append(pa.array(users, pa.string()))
        self.items.append(pa.array(items, pa.string()))
        self.ratings.append(np.asarray(ratings, dtype=np.float32))
        self.timestamps.append(np.asarray(timestamps, dtype=np.int64))
        self.lines.append(np.asarray(lines, dtype=np.int64))

    def finish(self) -> dict[str, Any]:
        self.writer.close()

        def cat(parts: list[np.ndarray], dtype: type) -> np.ndarray:
            return np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)

        def codes(parts: list[pa.Array]) -> tuple[np.ndarray, pa.Array]:
            column = pa.chunked_array(parts, pa.string()).combine_chunks().dictionary_encode()
            return column.indices.to_numpy(zero_copy_only=False).astype(np.int64), column.dictionary

        users, user_ids = codes(self.users)
        items, item_ids = codes(self.items)
        return {
            "users": users, "user_ids": user_ids, "items": items, "item_ids": item_ids,
            "ratings": cat(self.ratings, np.float32), "timestamps": cat(self.timestamps, np.int64),
            "lines": cat(self.lines, np.int64),
        }


#: 1973-01-01 UTC in epoch seconds: rating times all before it are numbers that are no epoch seconds.
EARLY_SECONDS = 94_694_400
#: skip_bad_records skips off-scale ratings up to this share of the records read (or fewer than
#: ``OFF_SCALE_COUNT`` of them); more is refused: the file's scale is another, and what is left a biased subset.
OFF_SCALE_SHARE, OFF_SCALE_COUNT = 0.05, 10


def _read_interactions(source: RawSource, bad: BadRecords, path: Path, stages: _Stages) -> dict[str, Any]:
    """Stream, validate and store the interactions; returns their coded columns, how many
    timestamps were milliseconds (converted to seconds) and how many fall before 1973."""
    scale, has_text, review_path = source.scale, source.has_text, source.review_path
    sink = _Interactions(path)
    batch: list[list] = [[] for _ in range(7)]
    milliseconds = 0
    bad_before = sum(bad.counts.values())  # the item file's
    off_scale = [0, math.inf, -math.inf]  # how many, the lowest and highest such rating
    with stages.stage("read reviews", review_path.stat().st_size) as update:
        for record in source.interactions(bad, update):
            try:
                seconds, was_ms = accepted_seconds(record, scale, has_text)
            except SkipRecord as skip:
                if skip.reason == OFF_SCALE:
                    off_scale = [off_scale[0] + 1, min(off_scale[1], record[2]), max(off_scale[2], record[2])]
                    if not bad.skip and source.scale_option:
                        raise BadRecordError(review_path, record[6], skip.reason, skip.detail, _scale_hint(source)) \
                            from None
                bad.report(review_path, record[6], skip.reason, skip.detail)
                continue
            milliseconds += was_ms
            for column, value in zip(batch, (*record[:3], seconds, *record[4:])):
                column.append(value)
            if len(batch[0]) >= BATCH_ROWS:
                sink.add(batch)
                batch = [[] for _ in range(7)]
        sink.add(batch)
        cols = sink.finish()
    accepted = len(cols["users"])
    _check_off_scale(source, off_scale, accepted + sum(bad.counts.values()) - bad_before, cols["ratings"])
    if accepted == 0:
        raise ValueError(_why_none(review_path, bad))
    if 0 < milliseconds < accepted:
        warnings.warn(
            f"{review_path}: the timestamps mix seconds and milliseconds ({milliseconds:,} of {accepted:,} "
            "read as milliseconds, told apart by magnitude); all were converted to seconds",
            stacklevel=2,
        )
    cols["milliseconds"] = milliseconds
    cols["early"] = _warn_early_times(review_path, cols["timestamps"])
    return cols


def _scale_hint(source: RawSource) -> str:
    return (f"if the file's ratings are on another scale, give it: {source.scale_option}; to skip and count such "
            "records instead, skip_bad_records=True / --skip-bad-records")


def _check_off_scale(source: RawSource, off_scale: list, read: int, accepted: np.ndarray) -> None:
    """Refuse to have skipped more off-scale ratings than ``OFF_SCALE_SHARE`` of the ``read`` records."""
    count, low, high = off_scale
    if count < OFF_SCALE_COUNT or count <= OFF_SCALE_SHARE * read:
        return
    if len(accepted):
        low, high = min(low, float(accepted.min())), max(high, float(accepted.max()))
    fix = (f"give the file's scale: {source.scale_option}" if source.scale_option
           else "is it the right file for this dataset?")
    raise ValueError(f"{source.review_path}: {count:,} of the {read:,} records ({count / read:.0%}) have a rating off "
                     f"the scale {source.scale.label} (ratings seen: {low:g} to {high:g}); skip_bad_records skips off-scale "
                     f"ratings up to {OFF_SCALE_SHARE:.0%} of the records, as more would leave a biased subset: {fix}")


def _why_none(review_path: Path, bad: BadRecords) -> str:
    if not bad.counts:
        return f"{review_path} has no data rows: nothing to prepare"
    counts = ", ".join(f"{reason} {n:,}" for reason, n in sorted(bad.counts.items()))
    first = next(iter(bad.examples.values())).replace(str(review_path), review_path.name)
    total = sum(bad.counts.values())
    return (f"{review_path}: no record was accepted ({total:,} bad record{'s' * (total != 1)} skipped: {counts}; the "
            f"first: {first}): check the file and the column mapping")


def _warn_early_times(review_path: Path, seconds: np.ndarray) -> int:
    """How many times fall before 1973, with a warning where they look like compact dates
    (``20200915`` is a number of seconds: 1970-08-22) or where every one does."""
    early = int((seconds < EARLY_SECONDS).sum())
    month, day = seconds // 100 % 100, seconds % 100
    compact = (seconds >= 19000101) & (seconds <= 22001231) & (month >= 1) & (month <= 12) & (day >= 1) & (day <= 31)
    if compact.any() or early == len(seconds):
        value = int(seconds[np.argmax(compact)] if compact.any() else seconds.max())
        moment = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(value))
        which = (f"{int(compact.sum()):,} of {len(seconds):,} timestamps look like compact dates (e.g. {value}, read "
                 if compact.any() else f"every timestamp is before 1973 (the latest, {value}, read ")
        warnings.warn(f"{review_path}: {which}as epoch seconds: {moment} UTC); a bare number is epoch seconds (or "
                      "milliseconds): write dates as 2020-09-15 or 2020-09-15T12:00:00", stacklevel=3)
    return early


def _drop_unknown_items(source: RawSource, bad: BadRecords, cols: dict[str, Any], meta: pa.Table) -> np.ndarray:
    """Rows whose item has metadata (all rows when there is no item file)."""
    n = len(cols["users"])
    if source.item_path is None:
        return np.arange(n)
    known = pc.is_in(cols["item_ids"], value_set=meta.column("item_id").cast(pa.string()))
    known = known.to_numpy(zero_copy_only=False)
    bad_rows = np.nonzero(~known[cols["items"]])[0]
    for row in bad_rows[:1] if not bad.skip else bad_rows:
        item = cols["item_ids"][int(cols["items"][row])].as_py()
        bad.report(source.review_path, int(cols["lines"][row]), UNKNOWN_ITEM,
                   f"item {item!r} is not in {source.item_path.name}")
    return np.nonzero(known[cols["items"]])[0]


def _compact(codes: np.ndarray, ids: pa.Array) -> tuple[np.ndarray, pa.Array]:
    """Renumber the codes still in use as 0..k-1 (in order of first id), with their ids."""
    used, inverse = np.unique(codes, return_inverse=True)
    return inverse.astype(np.int64), ids.take(pa.array(used))


def _build(name: str, source: RawSource, config: PrepareConfig, bad: BadRecords, tmp: Path,
           show: bool) -> None:
    with _Stages(show) as stages:
        _read_items(source, bad, tmp / "meta_raw.arrow", stages)
        cols = _read_interactions(source, bad, tmp / "reviews.arrow", stages)
        with stages.stage("dedupe, k-core") as update:
            meta = read_table(tmp / "meta_raw.arrow")
            rows = _drop_unknown_items(source, bad, cols, meta)
            users, items, ts = cols["users"][rows], cols["items"][rows], cols["timestamps"][rows]
            stats: dict[str, Any] = {
                "records_accepted": len(cols["users"]),
                "timestamps_in_milliseconds": cols["milliseconds"],
                "timestamps_before_1973": cols["early"],
                "raw_ratings": len(rows),
                "items_with_metadata": 0,  # of the prepared items, set below
            }
            if not len(rows):
                raise ValueError(f"none of the {len(cols['users']):,} accepted records of {source.review_path.name} "
                                 f"names an item in {source.item_path.name}: is it the item file of these ratings?")
            keep = dedupe_earliest(users, items, ts)
            stats["duplicates_dropped"] = int(len(rows) - len(keep))
            stats["users_before_kcore"] = len(np.unique(users[keep]))
            stats["items_before_kcore"] = len(np.unique(items[keep]))
            mask = kcore_filter(users[keep], items[keep], config.kcore)
            stats["kcore_dropped"] = int((~mask).sum())
            if config.kcore > 1 and len(keep) and not mask.any():
                raise ValueError(f"kcore {config.kcore} leaves no rating of {len(keep):,} ({stats['users_before_kcore']:,} "
                                 f"users, {stats['items_before_kcore']:,} items): lower kcore")
            keep = rows[keep[mask]]
            users, user_ids = _compact(cols["users"][keep], cols["user_ids"])
            items, item_ids = _compact(cols["items"][keep], cols["item_ids"])
            update(1)
        with stages.stage("split, history index"):
            titles, categories, descriptions, stats["items_with_metadata"] = _item_text(item_ids, meta)
            reviews = read_table(tmp / "reviews.arrow")
            ds = RatingDataset.from_arrays(
                name, source.scale, users, items, cols["ratings"][keep], cols["timestamps"][keep],
                ArrowStrings(user_ids), ArrowStrings(item_ids), ArrowStrings(titles),
                ArrowStrings(categories), ArrowStrings(descriptions),
                ArrowStrings(reviews.column("review_text"), keep), config, stats,
            )
        with stages.stage("write"):
            save_arrays(ds, tmp, keep.astype(np.int64))
            write_table(tmp / "users.arrow", pa.table({"user_id": user_ids}))
            write_table(tmp / "items.arrow", pa.table(
                {"item_id": item_ids, "title": titles, "categories": categories, "description": descriptions}
            ))
            del meta
            (tmp / "meta_raw.arrow").unlink()
    manifest = {
        "format_version": FORMAT_VERSION,
        "dataset": name,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "files": source_identity(source),
        "reader": {**source.params(), **_generation(source)},
        "config": asdict(config),
        "scale": asdict(source.scale),
        "skip_bad_records": bad.skip,
        "bad_records": bad.summary(),
        "counts": ds.stats,
        "timings_s": stages.timings,
        "size_bytes": sum(p.stat().st_size for p in tmp.iterdir()),
    }
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))


def _generation(source: RawSource) -> dict[str, Any]:
    generation = getattr(source, "generation", None)
    return {"generation": generation} if generation is not None else {}


def _item_text(item_ids: pa.Array, meta: pa.Table) -> tuple[pa.Array, pa.Array, pa.Array, int]:
    """Title, categories and description per item id, each the first non-empty one among the
    item's metadata rows (title falls back to the id), and how many items have any of them."""
    fields = [_first_value(item_ids, meta, column) for column in ("title", "categories", "description")]
    described = pc.sum(pc.or_(pc.or_(pc.is_valid(fields[0]), pc.is_valid(fields[1])), pc.is_valid(fields[2])))
    ids = item_ids.cast(pa.large_string())
    title = pc.if_else(pc.is_null(fields[0]), ids, fields[0])
    return _flat(title), _flat(fields[1]), _flat(fields[2]), int(described.as_py() or 0)


def _first_value(item_ids: pa.Array, meta: pa.Table, column: str) -> pa.Array:
    """Per item id, the first non-empty ``column`` among its rows of ``meta`` (null where none)."""
    rows = meta.filter(pc.not_equal(meta.column(column), ""))  # nulls and empty strings out
    at = pc.index_in(item_ids, value_set=rows.column("item_id").cast(pa.string()))
    return _flat(rows.column(column).cast(pa.large_string()).take(at))


def _flat(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column


__all__ = ["BadRecordError", "cache_key", "prepare_source", "prepared_dir"]
