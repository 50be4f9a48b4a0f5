"""No leakage, proved on a hand-made table with same-instant ties and duplicates: no history
entry is at or after its target's time, no target's own review reaches its prompt, and no
ranking negative is an item first seen at or after its target's time."""

from __future__ import annotations

import numpy as np
import pytest
import raw_fixtures as fx

from recgym.data import loaders
from recgym.data.dataset import RatingDataset
from recgym.data.ranking import candidate_list
from recgym.data.schema import RatingScale
from recgym.prompts import get_template, messages_to_text

COLUMNS = {"user": "u", "item": "i", "rating": "r", "timestamp": "t", "review": "text", "title": "name"}


def hand_made(tmp_path):
    rng = np.random.default_rng(7)
    records = []
    for k in range(120):
        user, item = f"user{rng.integers(0, 8)}", f"item{rng.integers(0, 10)}"
        records.append({"u": user, "i": item, "r": int(rng.integers(1, 6)), "t": int(rng.integers(0, 15)),
                        "text": f"REVIEW-{k:03d} by {user}", "name": f"Title of {item}"})
    return fx.jsonl(tmp_path / "ratings.jsonl", records)


@pytest.mark.parametrize("split_method", ["leave_last_out", "time"])
@pytest.mark.parametrize("keep_cold", [False, True])
def test_histories_strictly_before_target(tmp_path, split_method, keep_cold):
    path = hand_made(tmp_path)
    ds = loaders.load_custom(path, COLUMNS, (1, 5), cache_dir=tmp_path / "c", progress=False,
                             split_method=split_method, keep_cold_samples=keep_cold)
    users = np.asarray(ds.user_codes)
    items = np.asarray(ds.item_codes)
    times = np.asarray(ds.timestamps)
    template = get_template("think")
    checked = 0
    for split in ("train", "valid", "test"):
        for index in range(ds.num_samples(split)):
            row = ds.row(split, index)
            ctx = ds.context(split, index, max_user_history=1000, max_item_history=1000)
            assert all(e.timestamp < ctx.timestamp for e in ctx.user_history + ctx.item_history)
            # against brute force: every strictly-earlier rating, and nothing else
            prior_u = np.nonzero((users == users[row]) & (times < times[row]))[0]
            prior_i = np.nonzero((items == items[row]) & (times < times[row]))[0]
            assert ctx.user_num_prior == len(prior_u) and ctx.item_num_prior == len(prior_i)
            assert sorted(e.review for e in ctx.user_history) == sorted(ds.review_texts[r] for r in prior_u)
            if len(prior_u):
                assert ctx.user_avg == pytest.approx(np.asarray(ds.ratings)[prior_u].mean())
            if not keep_cold:
                assert ctx.user_num_prior > 0
            own = ds.review_texts[row]
            assert own.startswith("REVIEW-")
            for short in (ds.context(split, index), ctx):
                prompt = messages_to_text(template.messages(short, ds.scale))
                assert own not in prompt
                # no later or same-instant review of this user or item either
                for later in np.nonzero(((users == users[row]) | (items == items[row])) & (times >= times[row]))[0]:
                    assert ds.review_texts[later] not in prompt
            checked += 1
    assert checked > 20


def test_dedupe_keeps_earliest_and_its_text(tmp_path):
    records = [
        {"u": "a", "i": "x", "r": 5, "t": 10, "text": "early", "name": "X"},
        {"u": "a", "i": "x", "r": 1, "t": 20, "text": "late repeat", "name": "X"},
        {"u": "a", "i": "y", "r": 3, "t": 30, "text": "other", "name": "Y"},
    ]
    path = fx.jsonl(tmp_path / "r.jsonl", records)
    ds = loaders.load_custom(path, COLUMNS, (1, 5), cache_dir=tmp_path / "c", progress=False)
    assert ds.stats["duplicates_dropped"] == 1
    assert sorted(ds.review_texts) == ["early", "other"]
    assert float(np.asarray(ds.ratings)[list(ds.review_texts).index("early")]) == 5.0


def test_kcore_counts_before_and_after(tmp_path):
    records = [{"u": f"u{k % 3}", "i": f"i{k % 4}", "r": 3, "t": k, "text": f"t{k}", "name": "n"}
               for k in range(24)]
    records.append({"u": "lonely", "i": "rare", "r": 4, "t": 99, "text": "solo", "name": "n"})
    path = fx.jsonl(tmp_path / "r.jsonl", records)
    ds = loaders.load_custom(path, COLUMNS, (1, 5), cache_dir=tmp_path / "c", progress=False, kcore=2)
    assert ds.stats["users_before_kcore"] == 4 and ds.stats["items_before_kcore"] == 5
    assert ds.stats["kcore_dropped"] == 1
    assert ds.stats["users"] == 3 and ds.stats["items"] == 4
    assert "solo" not in list(ds.review_texts)


def growing_catalogue() -> RatingDataset:
    """Item k enters the catalogue at time 10k (two users rate it then: a same-instant tie); other
    users rate items that exist by then, some at the very instant a newer item enters."""
    rng = np.random.default_rng(3)
    rows = [(f"seed{j}", k, 10 * k) for k in range(40) for j in range(2)]
    for u in range(30):
        for t in rng.choice(400, size=6, replace=False):
            rows.append((f"user{u}", int(rng.integers(0, t // 10 + 1)), int(t // 10 * 10 if u % 3 == 0 else t)))
    users, items, times = zip(*rows)
    table = {"user_id": users, "item_id": [f"i{k}" for k in items], "rating": [3] * len(rows), "timestamp": times}
    return RatingDataset.from_tables("catalogue", RatingScale(1, 5), table)


@pytest.mark.parametrize("negatives", ["uniform", "popularity"])
def test_ranking_negatives_existed_before_the_target(negatives):
    ds = growing_catalogue()
    users, items, times = np.asarray(ds.user_codes), np.asarray(ds.item_codes), np.asarray(ds.timestamps)
    listed = 0
    for split in ("train", "valid", "test"):
        for index in range(ds.num_samples(split)):
            row = ds.row(split, index)
            t = times[row]
            pool = set(items[times < t]) - set(items[(users == users[row]) & (times < t)]) - {items[row]}
            c = candidate_list(ds, split, index, 6, negatives)
            if len(pool) < 5:
                assert c is None
                continue
            assert c.items[c.target_position] == items[row] and len(set(c.items)) == 6
            assert set(c.items) - {items[row]} <= pool, (split, index)
            listed += 1
    assert listed > 100 and ds.num_samples("train") > listed / 2


def test_too_few_negatives_counts_the_same_pool():
    from recgym.data.ranking import available_negatives
    from recgym.envs.rec_rank import RecRankEnv

    ds = growing_catalogue()
    for split in ("train", "valid", "test"):
        rows = ds.samples[split]
        available = available_negatives(ds, rows)
        for index, row in enumerate(rows):
            assert (available[index] >= 5) == (candidate_list(ds, split, index, 6) is not None)
        env = RecRankEnv(ds, split=split, num_candidates=6)
        assert env.skipped == (available < 5).sum() > 0
        assert all(c is not None for _, c in env.lists)
