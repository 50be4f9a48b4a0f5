"""Bad raw input: a clear error naming file and line by default; skipped and counted on request;
nothing half-written left in the cache either way."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import raw_fixtures as fx

from recgym.data import loaders
from recgym.data.readers import BadRecordError, MissingDataError

GOOD = {"review_id": "r", "user_id": "U1", "business_id": "B1", "stars": 4.0, "text": "ok",
        "date": "2019-01-01 00:00:00"}


def yelp_with(tmp_path: Path, bad_line: str | bytes) -> Path:
    """A Yelp folder whose review file has the bad line as line 2 of 3."""
    root = fx.yelp(tmp_path / "yelp")
    good = [json.dumps({**GOOD, "user_id": f"U{k}", "date": f"2019-01-0{k} 00:00:00"}).encode() for k in (1, 2)]
    bad = bad_line if isinstance(bad_line, bytes) else bad_line.encode()
    (root / "yelp_academic_dataset_review.json").write_bytes(b"\n".join([good[0], bad, good[1]]) + b"\n")
    return root


def load(root: Path, tmp_path: Path, **kwargs):
    return loaders.load_yelp(root, cache_dir=tmp_path / "cache", progress=False, keep_cold_samples=True, **kwargs)


def manifest(ds) -> dict:
    return json.loads((Path(ds.stats["cache_dir"]) / "manifest.json").read_text())


def cache_entries(tmp_path: Path) -> list[Path]:
    root = tmp_path / "cache" / "datasets"
    return [p for p in root.glob("*/*")] if root.exists() else []


CASES = {
    "malformed_record": '{"user_id": "U9", "business_id": ',
    "missing_field": json.dumps({k: v for k, v in GOOD.items() if k != "stars"}),
    "rating_off_scale": json.dumps({**GOOD, "stars": 7.0}),
    "empty_text": json.dumps({**GOOD, "text": "   "}),
    "non_utf8": b'{"user_id": "U9", "business_id": "B1", "stars": 3.0, "text": "caf\xe9", "date": "2019-01-01"}',
    "unknown_item": json.dumps({**GOOD, "business_id": "NOPE"}),
}


@pytest.mark.parametrize("reason", CASES)
def test_bad_record_raises_with_file_and_line(tmp_path, reason):
    root = yelp_with(tmp_path, CASES[reason])
    with pytest.raises(BadRecordError) as info:
        load(root, tmp_path)
    assert info.value.reason == reason
    assert info.value.line == 2
    assert f"yelp_academic_dataset_review.json:2: {reason}" in str(info.value)
    assert cache_entries(tmp_path) == []  # no half-written directory, no temp directory


@pytest.mark.parametrize("reason", CASES)
def test_bad_record_skipped_and_counted(tmp_path, reason):
    ds = load(yelp_with(tmp_path, CASES[reason]), tmp_path, skip_bad_records=True)
    assert ds.stats["ratings"] == 2
    assert manifest(ds)["bad_records"]["skipped"] == {reason: 1}


def test_off_grid_half_star_is_off_scale(tmp_path):
    with pytest.raises(BadRecordError, match="rating_off_scale"):
        load(yelp_with(tmp_path, json.dumps({**GOOD, "stars": 3.5})), tmp_path)


def test_truncated_gz(tmp_path):
    root = fx.yelp(tmp_path / "yelp", compress=True)
    path = root / "yelp_academic_dataset_review.json.gz"
    lines = [json.dumps({**GOOD, "user_id": f"U{k}", "text": "x" * 200}) for k in range(200)]
    data = gzip.compress("\n".join(lines).encode())
    path.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(BadRecordError, match="truncated_file"):
        load(root, tmp_path)
    assert cache_entries(tmp_path) == []
    ds = load(root, tmp_path, skip_bad_records=True)
    skipped = manifest(ds)["bad_records"]["skipped"]
    assert skipped["truncated_file"] == 1
    assert 0 < ds.stats["records_accepted"] < 200


def test_interrupt_leaves_no_partial_cache(tmp_path, monkeypatch):
    root = fx.yelp(tmp_path / "yelp")
    from recgym.data import pipeline

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "save_arrays", interrupted)
    with pytest.raises(KeyboardInterrupt):
        load(root, tmp_path)
    assert cache_entries(tmp_path) == []


def test_missing_data_dir_lists_expected_files(tmp_path, monkeypatch):
    monkeypatch.delenv("RECGYM_DATA_DIR", raising=False)
    with pytest.raises(MissingDataError) as info:
        loaders.load_yelp(None, cache_dir=tmp_path)
    message = str(info.value)
    assert "yelp_academic_dataset_review.json" in message and "https://www.yelp.com/dataset" in message
    with pytest.raises(MissingDataError, match="IMDB_reviews.json"):
        loaders.load_imdb(tmp_path / "nowhere", cache_dir=tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(MissingDataError, match="(?s)ratings.csv.*u.data.*grouplens"):
        loaders.load_movielens(tmp_path / "empty", cache_dir=tmp_path)


def test_data_dir_defaults_to_recgym_data_dir(tmp_path, monkeypatch):
    fx.movielens_latest(tmp_path / "data" / "movielens")
    monkeypatch.setenv("RECGYM_DATA_DIR", str(tmp_path / "data"))
    ds = loaders.load_movielens(cache_dir=tmp_path / "cache", progress=False)
    assert ds.stats["ratings"] == 4


@pytest.mark.parametrize(("kwargs", "error", "words"), [
    ({"skip_bad_records": "no"}, TypeError, "skip_bad_records must be True or False, got 'no'"),
    ({"keep_cold_samples": "false"}, TypeError, "keep_cold_samples must be bool, got 'false'"),
    ({"kcore": 2.5}, TypeError, "kcore must be int, got 2.5"),
    ({"kcore": True}, TypeError, "kcore must be int, got True"),
    ({"kcore": -3}, ValueError, "kcore must be >= 0, got -3"),
    ({"split_method": "random"}, ValueError, "split_method must be leave_last_out or time"),
    ({"test_fraction": "0.2"}, TypeError, "test_fraction must be float, got '0.2'"),
    ({"valid_fraction": 0.2}, ValueError, "valid_fraction and test_fraction apply to split_method 'time' only"),
    ({"kcore": 100}, ValueError, "kcore 100 leaves no rating of 5 (2 users, 3 items): lower kcore"),
])
def test_preparation_options_of_the_wrong_type_or_range_are_named(tmp_path, kwargs, error, words):
    """``"no"`` would be true and ``2.5`` a k-core of 2 without these checks; none writes a cache entry."""
    with pytest.raises(error) as info:
        loaders.load_yelp(fx.yelp(tmp_path / "yelp"), cache_dir=tmp_path / "cache", progress=False,
                          **{"keep_cold_samples": True, **kwargs})
    assert words in str(info.value)
    assert cache_entries(tmp_path) == []


@pytest.mark.parametrize(("env_id", "kwargs", "error", "words"), [
    ("RecRating-Synthetic-v0", {"max_user_history": -1}, ValueError, "max_user_history must be >= 0, got -1"),
    ("RecRating-Synthetic-v0", {"max_item_history": 2.7}, TypeError, "max_item_history must be an int >= 0, got 2.7"),
    ("RecRating-Synthetic-v0", {"num_users": "10"}, TypeError, "num_users must be int, got '10'"),
    ("RecRating-Synthetic-v0", {"seed": "x"}, TypeError, "seed must be int, got 'x'"),
    ("RecRank-Synthetic-v0", {"num_candidates": 5.9}, TypeError, "num_candidates must be an int >= 2, got 5.9"),
    ("RecRatingTools-Synthetic-v0", {"max_review_chars": -5}, ValueError, "max_review_chars must be >= 1, got -5"),
    ("RecRatingTools-Synthetic-v0", {"tool_cost": "a"}, ValueError, "tool_cost must be a number >= 0, got 'a'"),
])
def test_environment_options_of_the_wrong_type_or_range_are_named(env_id, kwargs, error, words):
    import gymnasium as gym

    import recgym  # noqa: F401

    with pytest.raises(error) as info:
        gym.make(env_id, **kwargs)
    assert words in str(info.value)


def test_an_empty_split_says_why_in_one_short_line(tmp_path):
    """It dumped the whole stats dict (about 600 characters) into the message."""
    from recgym.data.loaders import load_custom

    path = tmp_path / "r.csv"
    path.write_text("u,i,r,t\na,x,4,1\na,y,3,2\nb,x,5,3\nb,y,2,4\n")
    ds = load_custom(path, {"user": "u", "item": "i", "rating": "r", "timestamp": "t"},
                     cache_dir=tmp_path / "cache", progress=False)
    with pytest.raises(ValueError) as err:
        ds.require_samples("valid")
    message = str(err.value)
    assert message == ("split 'valid' of dataset 'custom' has no samples (4 ratings, 2 users, 2 items); try another "
                       "split or split_method 'time'")
    singles = tmp_path / "s.csv"  # every rating a user's first
    singles.write_text("u,i,r,t\na,x,4,1\nb,y,3,2\nc,x,5,3\nd,y,2,4\ne,x,1,5\n")
    with pytest.raises(ValueError, match=r"has no samples \(5 ratings, 5 users, 2 items\); \d of its ratings are a "
                                         r"user's first \(cold\) and were dropped: try keep_cold_samples=True, "):
        load_custom(singles, {"user": "u", "item": "i", "rating": "r", "timestamp": "t"}, split_method="time",
                    cache_dir=tmp_path / "cache", progress=False).require_samples("train")


def ten_star_table(tmp_path: Path, off_scale_rows: int, rows: int = 60) -> Path:
    """A custom CSV of ``rows`` ratings whose first ``off_scale_rows`` are 6-10 and the rest 1-5."""
    lines = ["uid,iid,stars,ts"]
    for k in range(rows):
        stars = 6 + k % 5 if k < off_scale_rows else 1 + k % 5
        lines.append(f"u{k % 6},i{k // 6},{stars},{1_600_000_000 + k}")
    return fx.write_lines(tmp_path / "ratings.csv", lines)


COLUMNS = {"user": "uid", "item": "iid", "rating": "stars", "timestamp": "ts"}


def test_an_off_scale_rating_of_a_custom_table_names_the_scale_option(tmp_path):
    """The error's only advice was --skip-bad-records, which dropped every rating of a 1-10 table above 5."""
    path = ten_star_table(tmp_path, off_scale_rows=42)
    with pytest.raises(BadRecordError) as info:
        loaders.load_custom(path, COLUMNS, cache_dir=tmp_path / "cache", progress=False)
    message = str(info.value)
    assert "ratings.csv:2: rating_off_scale: rating 6.0 not on scale 1-5" in message
    assert "scale=(low, high[, step]) / --scale LOW HIGH [STEP]" in message
    with pytest.raises(BadRecordError) as info:  # a reader whose format fixes the scale offers no scale option
        load(yelp_with(tmp_path, CASES["rating_off_scale"]), tmp_path)
    assert "--scale" not in str(info.value) and "--skip-bad-records" in str(info.value)


def test_skipping_a_large_share_of_off_scale_ratings_is_refused(tmp_path):
    """skip_bad_records kept only the 1-5 ratings of a 1-10 table (70% dropped) and scored them on 1-5."""
    path = ten_star_table(tmp_path, off_scale_rows=42)
    with pytest.raises(ValueError) as info:
        loaders.load_custom(path, COLUMNS, skip_bad_records=True, cache_dir=tmp_path / "cache", progress=False)
    message = str(info.value)
    assert "\n" not in message and not isinstance(info.value, BadRecordError)
    assert "42 of the 60 records (70%) have a rating off the scale 1-5 (ratings seen: 1 to 10)" in message
    assert "--scale LOW HIGH [STEP]" in message
    assert cache_entries(tmp_path) == []
    ds = loaders.load_custom(path, COLUMNS, scale=(1, 10), skip_bad_records=True, cache_dir=tmp_path / "cache",
                             progress=False)
    assert ds.stats["raw_ratings"] == 60 and ds.scale.label == "1-10"


def test_a_few_off_scale_ratings_are_still_skipped_and_counted(tmp_path):
    path = ten_star_table(tmp_path, off_scale_rows=3)  # 5%: within the share skip_bad_records skips
    ds = loaders.load_custom(path, COLUMNS, skip_bad_records=True, cache_dir=tmp_path / "cache", progress=False)
    assert manifest(ds)["bad_records"]["skipped"] == {"rating_off_scale": 3} and ds.stats["raw_ratings"] == 57
    many = ten_star_table(tmp_path / "small", off_scale_rows=9, rows=12)  # 75%, but fewer than 10 records
    ds = loaders.load_custom(many, COLUMNS, skip_bad_records=True, cache_dir=tmp_path / "cache", progress=False)
    assert manifest(ds)["bad_records"]["skipped"] == {"rating_off_scale": 9}


@pytest.mark.parametrize("skip", [False, True])
def test_a_review_file_of_another_dataset_is_named_as_such(tmp_path, skip):
    """A Yelp reader given an Amazon folder picked its review file and advised --skip-bad-records,
    which then skipped every record."""
    amazon = fx.amazon_2014(tmp_path / "amazon")
    with pytest.raises(ValueError) as info:
        loaders.load_yelp(amazon, cache_dir=tmp_path / "cache", progress=False, skip_bad_records=skip)
    message = str(info.value)
    assert not isinstance(info.value, BadRecordError) and "\n" not in message
    assert "reviews_Digital_Music_5.json does not look like a Yelp review file" in message
    assert "its fields: reviewerID, asin, overall, reviewText, summary, unixReviewTime, helpful" in message
    assert "Yelp's: user_id, business_id, stars, text, date" in message
    with pytest.raises(ValueError, match="does not look like an IMDb review file .*IMDb's: user_id, movie_id, "
                                         "rating, review_text, review_date"):
        loaders.load_imdb(amazon, cache_dir=tmp_path / "cache", progress=False, skip_bad_records=skip)
    yelp = fx.yelp(tmp_path / "yelp")
    with pytest.raises(ValueError, match=r"yelp_academic_dataset_review.json does not look like an Amazon review "
                                         r"file \(its fields: review_id, user_id, business_id, stars, text, date; "
                                         r"Amazon's: reviewerID, asin, overall"):
        loaders.load_amazon(yelp, reviews_file="yelp_academic_dataset_review.json", cache_dir=tmp_path / "cache",
                            progress=False, skip_bad_records=skip)
    assert cache_entries(tmp_path) == []


def test_a_first_record_missing_one_field_is_still_a_bad_record(tmp_path):
    root = fx.yelp(tmp_path / "yelp")
    path = root / "yelp_academic_dataset_review.json"
    first, *rest = path.read_text().splitlines()
    path.write_text("\n".join([json.dumps({k: v for k, v in json.loads(first).items() if k != "stars"}), *rest]))
    with pytest.raises(BadRecordError, match="missing_field: no 'stars' field"):
        load(root, tmp_path)
    assert manifest(load(root, tmp_path, skip_bad_records=True))["bad_records"]["skipped"] == {"missing_field": 1}


def _table(ratings: list) -> dict:
    n = len(ratings)
    return {"user_id": [f"u{k % 6}" for k in range(n)], "item_id": [f"i{k // 6}" for k in range(n)],
            "rating": ratings, "timestamp": list(range(n))}


@pytest.mark.parametrize(("scale", "ratings", "words"), [
    ((1, 5), [float(1 + k % 10) for k in range(60)], r"30 of the 60 ratings are not on the scale 1-5 \(row 5: 6\)"),
    ((1, 5), [4.0] * 59 + [float("nan")], r"1 of the 60 ratings are not on the scale 1-5 \(row 59: nan\)"),
    ((1, 5), [3.0] * 10 + [2.5] + [3.0] * 49, r"1 of the 60 ratings are not on the scale 1-5 \(row 10: 2.5\)"),
    ((0.5, 5, 0.5), [0.0] + [4.5] * 59, r"1 of the 60 ratings are not on the scale 0.5-5 step 0.5 \(row 0: 0\)"),
])
def test_a_dataset_built_in_python_refuses_ratings_off_its_scale(scale, ratings, words):
    """``from_tables`` / ``from_arrays`` took a 1-10 table on 1-5 (targets of 8, a perfect answer scored
    0.25) and NaN ratings (every reward NaN, "rated nan" in prompts); the file readers refuse them."""
    from recgym.data.dataset import RatingDataset
    from recgym.data.schema import RatingScale

    with pytest.raises(ValueError, match=rf"^dataset 'mine': {words}: pass the data's RatingScale or fix those rows$"):
        RatingDataset.from_tables("mine", RatingScale(*scale), _table(ratings))
    good = RatingDataset.from_tables("mine", RatingScale(*scale), _table([scale[1]] * 60))
    arrays = [good.user_codes, good.item_codes, np.asarray(ratings, dtype=np.float32), good.timestamps, good.user_ids,
              good.item_ids, good.item_titles, good.item_categories, good.item_descriptions, good.review_texts]
    with pytest.raises(ValueError, match=rf"^dataset 'mine': {words}"):
        RatingDataset.from_arrays("mine", good.scale, *arrays)


def test_ratings_on_a_fine_grid_survive_float32():
    from recgym.data.dataset import RatingDataset
    from recgym.data.schema import RatingScale

    ratings = [round(0.1 * (k % 101), 1) for k in range(300)]  # 9.7 is 9.6999998 in float32
    ds = RatingDataset.from_tables("fine", RatingScale(0, 10, 0.1), _table(ratings))
    assert ds.ratings.dtype == np.float32 and np.allclose(ds.ratings, ratings)
