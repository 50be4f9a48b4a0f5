"""Candidate lists for ranking: the user's true target item plus sampled negatives.

Negatives come from items that existed before the target's time (someone interacted with them
strictly before it) and that the user had not interacted with by then (the user's items at the
target's own time are theirs too), drawn ``"uniform"`` or by ``"popularity"`` (interaction counts
strictly before the target's time). Each list is seeded by (seed, split, index), so every policy
sees the same list.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recgym.data.dataset import RatingDataset
from recgym.data.schema import SPLITS

NEGATIVES = ("uniform", "popularity")


@dataclass(frozen=True)
class CandidateList:
    items: tuple[int, ...]
    """Item codes in prompt order (shuffled)."""
    target_position: int
    """Where the true item sits in ``items``."""
    history_items: tuple[int, ...]
    """The user's items strictly before the target's time, oldest first."""
    shuffle_seed: int
    history_rows: tuple[int, ...] = ()
    """The interaction rows of that history (for ratings and reviews)."""


def popularity_before(dataset: RatingDataset, timestamp: int) -> np.ndarray:
    """Interactions per item strictly before ``timestamp``."""
    before = dataset.timestamps < timestamp
    return np.bincount(dataset.item_codes[before], minlength=len(dataset.item_ids)).astype(np.float64)


def first_seen(dataset: RatingDataset) -> np.ndarray:
    """Each item's earliest interaction time, computed once per dataset."""
    first = dataset.__dict__.get("_first_seen")
    if first is None:
        first = np.full(len(dataset.item_ids), np.iinfo(np.int64).max, dtype=np.int64)
        np.minimum.at(first, np.asarray(dataset.item_codes), np.asarray(dataset.timestamps, dtype=np.int64))
        dataset._first_seen = first
    return first


def same_time_end(dataset: RatingDataset) -> np.ndarray:
    """Per row, where the user's interactions at that row's own time end in ``history.user_order``
    (they start at ``history.user_end``), computed once per dataset."""
    end = dataset.__dict__.get("_same_time_end")
    if end is None:
        h = dataset.history
        starts = np.append(np.unique(h.user_end), len(h.user_order))  # each (user, time) run's first position
        end = starts[np.searchsorted(starts, h.user_end, side="right")]
        dataset._same_time_end = end
    return end


def available_negatives(dataset: RatingDataset, rows: np.ndarray) -> np.ndarray:
    """The size of each sample row's negative pool (what ``candidate_list`` draws from)."""
    first = first_seen(dataset)
    h, items, times = dataset.history, np.asarray(dataset.item_codes), np.asarray(dataset.timestamps)
    existed = np.searchsorted(np.sort(first), times[rows])  # items first seen strictly before the target
    # the user's items are distinct; the earlier ones existed, those at the target's time (the target
    # among them) count where they did
    order = h.user_order
    existed_then = np.concatenate([[0], np.cumsum(first[items[order]] < times[order])])
    tied = existed_then[same_time_end(dataset)[rows]] - existed_then[h.user_end[rows]]
    return existed - h.user_num_prior()[rows] - tied


def candidate_list(
    dataset: RatingDataset,
    split: str,
    index: int,
    num_candidates: int = 20,
    negatives: str = "uniform",
    seed: int = 0,
) -> CandidateList | None:
    """The candidate list of one sample, or None when the user has too few available negatives."""
    if negatives not in NEGATIVES:
        raise ValueError(f"negatives must be one of {', '.join(NEGATIVES)}, got {negatives!r}")
    row = dataset.row(split, index)
    h = dataset.history
    start, end = int(h.user_start[row]), int(h.user_end[row])
    history_rows = h.user_order[start:end]
    history_items = dataset.item_codes[history_rows]
    target = int(dataset.item_codes[row])
    excluded = first_seen(dataset) >= dataset.timestamps[row]  # not yet in the catalogue
    # the user's items before the target's time and at it (the target among them)
    excluded[dataset.item_codes[h.user_order[start : int(same_time_end(dataset)[row])]]] = True
    pool = np.nonzero(~excluded)[0]
    need = num_candidates - 1
    if len(pool) < need:
        return None
    shuffle_seed = int(np.random.SeedSequence([seed, SPLITS.index(split), index]).generate_state(1)[0])
    rng = np.random.default_rng(shuffle_seed)
    if negatives == "uniform":
        chosen = rng.choice(pool, size=need, replace=False)
    else:
        weights = popularity_before(dataset, int(dataset.timestamps[row]))[pool] + 1.0
        chosen = rng.choice(pool, size=need, replace=False, p=weights / weights.sum())
    items = np.concatenate([[target], chosen])
    rng.shuffle(items)
    position = int(np.nonzero(items == target)[0][0])
    return CandidateList(
        tuple(int(i) for i in items), position, tuple(int(i) for i in history_items), shuffle_seed,
        tuple(int(r) for r in history_rows),
    )
