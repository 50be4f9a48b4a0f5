"""Preparation on numeric columns: dedupe, chronological split, leakage-free history indices.

Everything here is vectorized numpy over integer-coded users and items, so it scales to
millions of ratings; no review text is touched.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SPLIT_CODES = {"train": 0, "valid": 1, "test": 2}
UNUSED = -1  # split code of an interaction that is history only (never a sample)


def dedupe_earliest(users: np.ndarray, items: np.ndarray, timestamps: np.ndarray) -> np.ndarray:
    """Indices (ascending) that keep each user's earliest rating of each item."""
    n = len(users)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.lexsort((np.arange(n), timestamps, items, users))
    u, it = users[order], items[order]
    first = np.ones(n, dtype=bool)
    first[1:] = (u[1:] != u[:-1]) | (it[1:] != it[:-1])
    return np.sort(order[first])


def kcore_filter(users: np.ndarray, items: np.ndarray, k: int) -> np.ndarray:
    """Boolean mask of the rows in the k-core: every kept user and item has >= k kept ratings."""
    keep = np.ones(len(users), dtype=bool)
    if k <= 1:
        return keep
    while True:
        ucount = np.bincount(users[keep], minlength=int(users.max(initial=-1)) + 1)
        icount = np.bincount(items[keep], minlength=int(items.max(initial=-1)) + 1)
        new_keep = keep & (ucount[users] >= k) & (icount[items] >= k)
        if new_keep.sum() == keep.sum():
            return new_keep
        keep = new_keep


def _group_sort(keys: np.ndarray, timestamps: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sort rows by (key, timestamp, row); return the order, each row's segment start and the
    start of its run of equal (key, timestamp) — positions in the order."""
    n = len(keys)
    order = np.lexsort((np.arange(n), timestamps, keys))
    k, t = keys[order], timestamps[order]
    positions = np.arange(n)
    new_key = np.ones(n, dtype=bool)
    new_key[1:] = k[1:] != k[:-1]
    new_run = new_key.copy()
    new_run[1:] |= t[1:] != t[:-1]
    seg_start_sorted = np.maximum.accumulate(np.where(new_key, positions, 0))
    run_start_sorted = np.maximum.accumulate(np.where(new_run, positions, 0))
    seg_start = np.empty(n, dtype=np.int64)
    run_start = np.empty(n, dtype=np.int64)
    seg_start[order] = seg_start_sorted
    run_start[order] = run_start_sorted
    return order.astype(np.int64), seg_start, run_start


@dataclass
class HistoryIndex:
    """For every interaction, where its strictly-earlier history lies.

    ``user_order`` lists interactions sorted by (user, time); the user history of row ``i`` is
    ``user_order[user_start[i]:user_end[i]]`` (all of that user's ratings strictly before row
    ``i``'s timestamp, oldest first). Likewise for items. ``*_cum`` are prefix sums of ratings
    along each order, so a prior average is ``(cum[end] - cum[start]) / (end - start)``.
    """

    user_order: np.ndarray
    user_start: np.ndarray
    user_end: np.ndarray
    user_cum: np.ndarray
    item_order: np.ndarray
    item_start: np.ndarray
    item_end: np.ndarray
    item_cum: np.ndarray

    @classmethod
    def build(
        cls, users: np.ndarray, items: np.ndarray, ratings: np.ndarray, timestamps: np.ndarray
    ) -> HistoryIndex:
        ratings = np.asarray(ratings, dtype=np.float64)
        uo, us, ue = _group_sort(users, timestamps)
        io, is_, ie = _group_sort(items, timestamps)
        ucum = np.concatenate([[0.0], np.cumsum(ratings[uo])])
        icum = np.concatenate([[0.0], np.cumsum(ratings[io])])
        return cls(uo, us, ue, ucum, io, is_, ie, icum)

    def user_num_prior(self) -> np.ndarray:
        return self.user_end - self.user_start

    def item_num_prior(self) -> np.ndarray:
        return self.item_end - self.item_start

    def arrays(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


def chronological_split(
    users: np.ndarray,
    timestamps: np.ndarray,
    method: str = "leave_last_out",
    valid_fraction: float = 0.1,
    test_fraction: float = 0.1,
) -> np.ndarray:
    """Split code per row (see ``SPLIT_CODES``).

    ``leave_last_out``: per user, the last rating is test, the second-last validation, the rest
    train (a user with two ratings gives train + test; with one, train only).
    ``time``: a global cutoff: the latest ``test_fraction`` of ratings (by time) are test, the
    ``valid_fraction`` before them validation.
    """
    n = len(users)
    split = np.zeros(n, dtype=np.int8)
    if n == 0:
        return split
    if method == "leave_last_out":
        order, seg_start, _ = _group_sort(users, timestamps)
        counts = np.bincount(users, minlength=int(users.max()) + 1)
        pos_in_user = np.empty(n, dtype=np.int64)
        pos_in_user[order] = np.arange(n)
        rank_from_end = counts[users] - 1 - (pos_in_user - seg_start)
        split[rank_from_end == 0] = SPLIT_CODES["test"]
        split[(rank_from_end == 1) & (counts[users] >= 3)] = SPLIT_CODES["valid"]
        split[(rank_from_end == 0) & (counts[users] == 1)] = SPLIT_CODES["train"]
        return split
    if method == "time":
        if not (0 <= valid_fraction < 1 and 0 <= test_fraction < 1 and valid_fraction + test_fraction < 1):
            raise ValueError("valid_fraction and test_fraction must be in [0, 1) and sum below 1")
        t_test = np.quantile(timestamps, 1 - test_fraction, method="higher") if test_fraction else np.inf
        t_valid = (
            np.quantile(timestamps, 1 - test_fraction - valid_fraction, method="higher")
            if valid_fraction
            else t_test
        )
        split[timestamps >= t_valid] = SPLIT_CODES["valid"]
        split[timestamps >= t_test] = SPLIT_CODES["test"]
        return split
    raise ValueError(f"unknown split method {method!r}: use 'leave_last_out' or 'time'")
