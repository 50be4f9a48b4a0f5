"""``RatingDataset``: prepared ratings that hand out one leakage-free :class:`RatingContext` per sample."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from recgym.data.prepare import (
    SPLIT_CODES,
    HistoryIndex,
    chronological_split,
    dedupe_earliest,
    kcore_filter,
)
from recgym.data.schema import (
    SPLITS,
    HistoryEntry,
    RatingContext,
    RatingScale,
    check_int,
    check_types,
)

#: The file of a prepared dataset's folder that says how it was made.
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class PrepareConfig:
    """How raw interactions become samples. Part of a prepared dataset's cache key."""

    split_method: str = "leave_last_out"
    """``leave_last_out`` (per user: last = test, second-last = valid) or ``time`` (global cutoff)."""
    valid_fraction: float = 0.1
    """Share of ratings in validation, for ``split_method="time"``."""
    test_fraction: float = 0.1
    """Share of ratings in test, for ``split_method="time"``."""
    kcore: int = 0
    """Keep only users and items with at least this many ratings (0 or 1: no filter)."""
    keep_cold_samples: bool = False
    """Keep samples whose user has no prior rating (they get an empty history)."""

    def __post_init__(self) -> None:
        check_types(self)
        if self.split_method not in ("leave_last_out", "time"):
            raise ValueError(f"split_method must be leave_last_out or time, got {self.split_method!r}")
        if not (0 <= self.valid_fraction < 1 and 0 <= self.test_fraction < 1
                and self.valid_fraction + self.test_fraction < 1):
            raise ValueError("valid_fraction and test_fraction must be in [0, 1) and sum below 1, got "
                             f"{self.valid_fraction} and {self.test_fraction}")
        if self.split_method == "leave_last_out" and (self.valid_fraction, self.test_fraction) != (
                PrepareConfig.valid_fraction, PrepareConfig.test_fraction):
            raise ValueError("valid_fraction and test_fraction apply to split_method 'time' only (leave_last_out "
                             "holds out each user's last two ratings): pass split_method='time' or drop them")
        check_int("kcore", self.kcore, 0)


def _encode(values: Sequence[Any]) -> tuple[np.ndarray, list[str]]:
    """Integer codes and the list of distinct string ids (first-seen order)."""
    encoded = pa.array(values).cast(pa.string()).dictionary_encode()
    if isinstance(encoded, pa.ChunkedArray):
        encoded = encoded.combine_chunks()
    return encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64), encoded.dictionary.to_pylist()


def check_ratings(name: str, scale: RatingScale, ratings: np.ndarray) -> np.ndarray:
    """``ratings`` if every one is on ``scale`` (finite, in range, on its step grid), else a ValueError
    counting those off it."""
    bad = np.flatnonzero(~scale.on_grid(ratings))
    if len(bad):
        raise ValueError(f"dataset {name!r}: {len(bad):,} of the {len(ratings):,} ratings are not on the scale "
                         f"{scale.label} (row {bad[0]}: {float(ratings[bad[0]]):g}): pass the data's RatingScale or fix "
                         "those rows")
    return ratings


@dataclass
class RatingDataset:
    """Prepared ratings of one dataset.

    Rows are interactions (after dedupe / k-core); ``split_codes`` marks each row's split;
    ``samples[split]`` lists the rows that are samples of that split. Texts are looked up
    lazily by row, so building a context costs a few index operations.
    """

    name: str
    scale: RatingScale
    user_codes: np.ndarray
    item_codes: np.ndarray
    ratings: np.ndarray
    timestamps: np.ndarray
    split_codes: np.ndarray
    history: HistoryIndex
    user_ids: Sequence[str]
    item_ids: Sequence[str]
    item_titles: Sequence[str]
    item_categories: Sequence[str]
    item_descriptions: Sequence[str]
    review_texts: Sequence[str]
    samples: dict[str, np.ndarray]
    stats: dict[str, Any] = field(default_factory=dict)

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def from_tables(
        cls,
        name: str,
        scale: RatingScale,
        interactions: Mapping[str, Sequence[Any]],
        items: Mapping[str, Sequence[Any]] | None = None,
        config: PrepareConfig | None = None,
    ) -> RatingDataset:
        """Prepare in memory from an interaction table and an optional item table (column dicts)."""
        config = config or PrepareConfig()
        users, user_ids = _encode(interactions["user_id"])
        items_c, item_ids = _encode(interactions["item_id"])
        ratings = check_ratings(name, scale, np.asarray(interactions["rating"], dtype=np.float64)).astype(np.float32)
        timestamps = np.asarray(interactions["timestamp"], dtype=np.int64)
        reviews = list(interactions.get("review_text") or [""] * len(ratings))
        stats: dict[str, Any] = {"raw_ratings": len(ratings)}

        keep = dedupe_earliest(users, items_c, timestamps)
        stats["duplicates_dropped"] = int(len(ratings) - len(keep))
        mask = kcore_filter(users[keep], items_c[keep], config.kcore)
        keep = keep[mask]
        stats["kcore_dropped"] = int((~mask).sum())
        users, items_c, ratings, timestamps = users[keep], items_c[keep], ratings[keep], timestamps[keep]
        reviews = [reviews[i] for i in keep]

        titles, categories, descriptions = cls._item_columns(item_ids, items)
        return cls.from_arrays(
            name, scale, users, items_c, ratings, timestamps, user_ids, item_ids,
            titles, categories, descriptions, reviews, config, stats,
        )

    @classmethod
    def from_arrays(
        cls,
        name: str,
        scale: RatingScale,
        users: np.ndarray,
        items: np.ndarray,
        ratings: np.ndarray,
        timestamps: np.ndarray,
        user_ids: Sequence[str],
        item_ids: Sequence[str],
        item_titles: Sequence[str],
        item_categories: Sequence[str],
        item_descriptions: Sequence[str],
        review_texts: Sequence[str],
        config: PrepareConfig | None = None,
        stats: dict[str, Any] | None = None,
    ) -> RatingDataset:
        """Split and index already-coded, deduplicated interactions."""
        check_ratings(name, scale, ratings)
        config = config or PrepareConfig()
        split = chronological_split(
            users, timestamps, config.split_method, config.valid_fraction, config.test_fraction
        )
        history = HistoryIndex.build(users, items, ratings, timestamps)
        samples, stats = cls._select_samples(split, history, config, dict(stats or {}))
        stats.update(ratings=len(ratings), users=len(user_ids), items=len(item_ids))
        return cls(
            name, scale, users, items, ratings, timestamps, split, history, user_ids, item_ids,
            item_titles, item_categories, item_descriptions, review_texts, samples, stats,
        )

    @staticmethod
    def _item_columns(
        item_ids: Sequence[str], items: Mapping[str, Sequence[Any]] | None
    ) -> tuple[list[str], list[str], list[str]]:
        titles, categories, descriptions = list(item_ids), [""] * len(item_ids), [""] * len(item_ids)
        if not items:
            return titles, categories, descriptions
        position = {item_id: i for i, item_id in enumerate(item_ids)}
        n = len(items["item_id"])
        for column, target in (("title", titles), ("categories", categories), ("description", descriptions)):
            values = items.get(column)
            if values is None:
                continue
            for row in range(n):
                at = position.get(str(items["item_id"][row]))
                if at is not None and values[row]:
                    target[at] = str(values[row])
        return titles, categories, descriptions

    @staticmethod
    def _select_samples(
        split: np.ndarray, history: HistoryIndex, config: PrepareConfig, stats: dict[str, Any]
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        cold = history.user_num_prior() == 0
        samples = {}
        for name in SPLITS:
            rows = np.nonzero(split == SPLIT_CODES[name])[0]
            stats[f"{name}_cold"] = int(cold[rows].sum())
            if not config.keep_cold_samples:
                rows = rows[~cold[rows]]
            samples[name] = rows
            stats[f"{name}_samples"] = len(rows)
        stats["cold_samples_kept"] = bool(config.keep_cold_samples)
        return samples, stats

    # ---- access -------------------------------------------------------------------------
    def num_samples(self, split: str) -> int:
        return len(self._rows(split))

    def require_samples(self, split: str) -> int:
        """The number of samples of ``split``; a ValueError saying what to try where there are none."""
        n = self.num_samples(split)
        if n == 0:
            s = self.stats
            if s.get("records_accepted") == 0:
                advice = ("no record of the raw data was accepted: check the files and the column mapping, and the "
                          "bad records counted in the manifest (`recgym data info`)")
            else:
                cold = 0 if s.get("cold_samples_kept") else s.get(f"{split}_cold", 0)
                tries = ["keep_cold_samples=True", "another split"] if cold else ["another split"]
                if (preparation(self) or {}).get("split_method") != "time":  # None: made in memory, method unknown
                    tries.append("split_method 'time'")
                else:
                    tries.append("smaller valid_fraction and test_fraction" if split == "train"
                                 else f"a larger {split}_fraction")
                advice = ((f"{cold} of its ratings are a user's first (cold) and were dropped: " if cold else "")
                          + f"try {', '.join(tries[:-1])} or {tries[-1]}")
            sizes = ", ".join(f"{s[k]} {k}" for k in ("ratings", "users", "items") if k in s)
            raise ValueError(f"split {split!r} of dataset {self.name!r} has no samples ({sizes}); {advice}")
        return n

    def _rows(self, split: str) -> np.ndarray:
        if split not in self.samples:
            raise ValueError(f"unknown split {split!r}: choose one of {', '.join(SPLITS)}")
        return self.samples[split]

    def row(self, split: str, index: int) -> int:
        rows = self._rows(split)
        if not 0 <= index < len(rows):
            raise IndexError(f"sample index {index} out of range for split {split!r} ({len(rows)} samples)")
        return int(rows[index])

    def target(self, split: str, index: int) -> float:
        return float(self.ratings[self.row(split, index)])

    def targets(self, split: str) -> np.ndarray:
        return self.ratings[self._rows(split)].astype(np.float64)

    def prior_averages(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """Per sample of ``split``: the user's and the item's average prior rating (NaN if none)."""
        rows = self._rows(split)
        h = self.history
        with np.errstate(invalid="ignore", divide="ignore"):
            u = (h.user_cum[h.user_end[rows]] - h.user_cum[h.user_start[rows]]) / (
                h.user_end[rows] - h.user_start[rows]
            )
            i = (h.item_cum[h.item_end[rows]] - h.item_cum[h.item_start[rows]]) / (
                h.item_end[rows] - h.item_start[rows]
            )
        return u, i

    def context(
        self, split: str, index: int, max_user_history: int = 10, max_item_history: int = 5
    ) -> RatingContext:
        row = self.row(split, index)
        h = self.history
        us, ue = int(h.user_start[row]), int(h.user_end[row])
        is_, ie = int(h.item_start[row]), int(h.item_end[row])
        user_rows = h.user_order[max(us, ue - max_user_history) : ue] if max_user_history > 0 else ()
        item_rows = h.item_order[max(is_, ie - max_item_history) : ie] if max_item_history > 0 else ()
        item = int(self.item_codes[row])
        return RatingContext(
            user_id=str(self.user_ids[int(self.user_codes[row])]),
            item_id=str(self.item_ids[item]),
            item_title=str(self.item_titles[item]),
            item_categories=str(self.item_categories[item]),
            item_description=str(self.item_descriptions[item]),
            user_history=tuple(self._entry(int(r)) for r in user_rows),
            item_history=tuple(self._entry(int(r)) for r in item_rows),
            user_avg=float((h.user_cum[ue] - h.user_cum[us]) / (ue - us)) if ue > us else None,
            item_avg=float((h.item_cum[ie] - h.item_cum[is_]) / (ie - is_)) if ie > is_ else None,
            user_num_prior=ue - us,
            item_num_prior=ie - is_,
            target_rating=float(self.ratings[row]),
            timestamp=int(self.timestamps[row]),
        )

    def _entry(self, row: int) -> HistoryEntry:
        return HistoryEntry(
            item_title=str(self.item_titles[int(self.item_codes[row])]),
            rating=float(self.ratings[row]),
            review=str(self.review_texts[row] or ""),
            timestamp=int(self.timestamps[row]),
        )

    def train_mean(self) -> float:
        train = self.split_codes == SPLIT_CODES["train"]
        return float(self.ratings[train].mean()) if train.any() else float(self.ratings.mean())


def preparation(dataset: RatingDataset) -> dict[str, Any] | None:
    """The options a cached dataset was prepared with (its manifest's ``config`` and
    ``skip_bad_records``); None for one made in memory (the synthetic worlds)."""
    folder = dataset.stats.get("cache_dir") if isinstance(dataset.stats, dict) else None
    if not folder:
        return None
    try:
        manifest = json.loads((Path(folder) / MANIFEST).read_text())
        return {**manifest["config"], "skip_bad_records": manifest["skip_bad_records"]}
    except (OSError, ValueError, KeyError, TypeError):
        return None
