"""No leakage, proved on a hand-made table with same-instant ties and duplicates: no history
entry is at or after its target's time, and no target's own review reaches its prompt."""

from __future__ import annotations

import numpy as np
import pytest
import raw_fixtures as fx

from recgym.data import loaders
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
