"""On-disk form of a prepared :class:`RatingDataset`: numeric arrays as ``.npy`` (memory-mapped)
and text as Arrow IPC stream files (the format ``datasets.Dataset.from_file`` opens), so that
loading is near-instant and text stays in Arrow buffers, never in Python lists."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from recgym.data.dataset import MANIFEST, RatingDataset
from recgym.data.prepare import HistoryIndex
from recgym.data.schema import SPLITS, RatingScale

FORMAT_VERSION = 2  # 2: readers fixed for hostile input (BOM, surrogates, timestamps)
_ARRAYS = ("user_codes", "item_codes", "ratings", "timestamps", "split_codes")


class ArrowStrings(Sequence[str]):
    """A read-only sequence of strings backed by an Arrow column (nulls read as ``""``).

    With ``index``, element ``i`` is ``column[index[i]]``: samples refer to text by row, so
    text is stored once."""

    def __init__(self, column: pa.Array | pa.ChunkedArray, index: np.ndarray | None = None) -> None:
        chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
        self._chunks = [c for c in chunks if len(c)] or [pa.array([], pa.string())]
        self._starts = np.cumsum([0] + [len(c) for c in self._chunks])
        self._index = index

    def __len__(self) -> int:
        return int(len(self._index) if self._index is not None else self._starts[-1])

    def __getitem__(self, i: int) -> str:  # type: ignore[override]
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]  # type: ignore[return-value]
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"index {i} out of range ({n})")
        row = int(self._index[i]) if self._index is not None else i
        chunk = int(np.searchsorted(self._starts, row, side="right")) - 1
        return self._chunks[chunk][row - int(self._starts[chunk])].as_py() or ""

    def __iter__(self) -> Iterator[str]:
        for i in range(len(self)):
            yield self[i]


class StreamTableWriter:
    """Append record batches of string columns to an Arrow IPC stream file."""

    def __init__(self, path: Path, columns: Sequence[str]) -> None:
        self.schema = pa.schema([(c, pa.large_string()) for c in columns])
        self._sink = pa.OSFile(str(path), "wb")
        self._writer = pa.ipc.new_stream(self._sink, self.schema)
        self.rows = 0

    def write(self, columns: Sequence[Sequence[str]]) -> None:
        arrays = [pa.array(c, pa.large_string()) for c in columns]
        self._writer.write_batch(pa.record_batch(arrays, schema=self.schema))
        self.rows += len(arrays[0])

    def close(self) -> None:
        self._writer.close()
        self._sink.close()


def write_table(path: Path, table: pa.Table) -> None:
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)


def read_table(path: Path) -> pa.Table:
    """A memory-mapped, zero-copy view of an Arrow IPC stream file."""
    return pa.ipc.open_stream(pa.memory_map(str(path), "r")).read_all()


def save_arrays(ds: RatingDataset, directory: Path, text_rows: np.ndarray) -> None:
    """Write ``ds``'s numeric arrays, its history index and the row -> review-row map."""
    arrays = {name: getattr(ds, name) for name in _ARRAYS}
    arrays.update({f"history_{k}": v for k, v in ds.history.arrays().items()})
    arrays.update({f"samples_{s}": ds.samples[s] for s in SPLITS})
    arrays["text_rows"] = text_rows
    for name, values in arrays.items():
        np.save(directory / f"{name}.npy", np.ascontiguousarray(values))


def preparation_label(options: dict[str, Any] | None) -> str:
    """``options`` (see :func:`recgym.data.dataset.preparation`) in words, e.g. ``split time, valid 0.1, test 0.1, k-core 5``
    ("" for None)."""
    if not options:
        return ""
    parts = [f"split {options['split_method']}"]
    if options["split_method"] == "time":
        parts += [f"valid {options['valid_fraction']:g}", f"test {options['test_fraction']:g}"]
    parts.append(f"k-core {options['kcore']}" if options["kcore"] > 1 else "no k-core")
    parts += [words for key, words in (("keep_cold_samples", "cold samples kept"),
                                       ("skip_bad_records", "bad records skipped")) if options.get(key)]
    return ", ".join(parts)


def load_prepared(directory: Path) -> RatingDataset:
    """Open a prepared dataset directory (written by the pipeline) without copying its data."""
    manifest = json.loads((directory / MANIFEST).read_text())

    def arr(name: str) -> np.ndarray:
        return np.load(directory / f"{name}.npy", mmap_mode="r")

    history = HistoryIndex(**{k: arr(f"history_{k}") for k in HistoryIndex.__dataclass_fields__})
    users = read_table(directory / "users.arrow")
    items = read_table(directory / "items.arrow")
    reviews = read_table(directory / "reviews.arrow")
    text_rows = arr("text_rows")
    scale = RatingScale(**manifest["scale"])
    stats: dict[str, Any] = dict(manifest["counts"])
    stats["cache_dir"] = str(directory)
    return RatingDataset(
        name=manifest["dataset"],
        scale=scale,
        user_codes=arr("user_codes"),
        item_codes=arr("item_codes"),
        ratings=arr("ratings"),
        timestamps=arr("timestamps"),
        split_codes=arr("split_codes"),
        history=history,
        user_ids=ArrowStrings(users.column("user_id")),
        item_ids=ArrowStrings(items.column("item_id")),
        item_titles=ArrowStrings(items.column("title")),
        item_categories=ArrowStrings(items.column("categories")),
        item_descriptions=ArrowStrings(items.column("description")),
        review_texts=ArrowStrings(reviews.column("review_text"), text_rows),
        samples={s: arr(f"samples_{s}") for s in SPLITS},
        stats=stats,
    )
