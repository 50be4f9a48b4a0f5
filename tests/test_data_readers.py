"""Every raw layout, from tiny files written here, prepared into the common tables."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import gymnasium as gym
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import raw_fixtures as fx

from recgym.data import loaders
from recgym.data.readers import AmazonSource, BadRecords, detect_generation
from recgym.data.readers.table import TableSource
from recgym.data.schema import RatingScale
from recgym.data.store import ArrowStrings


def prepare(name: str, tmp_path: Path, **kwargs):
    kwargs.setdefault("cache_dir", tmp_path / "cache")
    kwargs.setdefault("progress", False)
    kwargs.setdefault("keep_cold_samples", True)
    loader = getattr(loaders, f"load_{name}")
    return loader(**kwargs)


def rows(ds) -> dict[tuple[str, str], tuple[float, int, str]]:
    """(user, item) -> (rating, timestamp, review) over every prepared interaction."""
    return {
        (ds.user_ids[int(u)], ds.item_ids[int(i)]): (float(r), int(t), ds.review_texts[k])
        for k, (u, i, r, t) in enumerate(zip(ds.user_codes, ds.item_codes, ds.ratings, ds.timestamps))
    }


def titles(ds) -> dict[str, str]:
    return {ds.item_ids[k]: ds.item_titles[k] for k in range(len(ds.item_ids))}


@pytest.mark.parametrize("compress", [False, True])
def test_yelp(tmp_path, compress):
    ds = prepare("yelp", tmp_path, data_dir=fx.yelp(tmp_path / "yelp", compress))
    table = rows(ds)
    assert len(table) == 5
    stamp = int(datetime(2018, 2, 1, 10, tzinfo=UTC).timestamp())
    assert table[("U1", "B2")] == (2.0, stamp, "slow service")
    assert titles(ds)["B1"] == "Place 1"
    item = list(ds.item_ids).index("B1")
    assert ds.item_categories[item] == "Mexican, Restaurants"
    assert ds.item_descriptions[item] == "Tucson, AZ"
    assert ds.scale == RatingScale(1, 5)
    # leave-last-out: U1's last review is test, second-last valid; U2 (2 ratings): train + test
    test_items = {ds.item_ids[int(ds.item_codes[r])] for r in ds.samples["test"]}
    assert test_items == {"B3"}
    assert ds.num_samples("test") == 2 and ds.num_samples("valid") == 1


def test_amazon_2014_python_literal_metadata(tmp_path):
    ds = prepare("amazon_music", tmp_path, data_dir=fx.amazon_2014(tmp_path / "a14"))
    assert rows(ds)[("A1", "X2")] == (3.0, 2000, "meh")
    names = titles(ds)
    assert names["X1"] == "Enya's Album" and names["X3"] == "Third"
    x1 = list(ds.item_ids).index("X1")
    assert ds.item_categories[x1] == "CDs & Vinyl > New Age"
    assert ds.item_descriptions[list(ds.item_ids).index("X3")] == "A live record"
    manifest = json.loads((Path(ds.stats["cache_dir"]) / "manifest.json").read_text())
    assert manifest["reader"]["generation"] == 2014


def test_amazon_2014_metadata_is_never_evaluated(tmp_path):
    root = fx.amazon_2014(tmp_path / "a14")
    marker = tmp_path / "pwned"
    fx.write_lines(root / "meta_Digital_Music.json", [f"__import__('os').mkdir({str(marker)!r})"])
    with pytest.raises(ValueError, match="meta_Digital_Music.json:1: malformed_record"):
        prepare("amazon_music", tmp_path, data_dir=root)
    assert not marker.exists()


def test_amazon_2018(tmp_path):
    ds = prepare("amazon_book", tmp_path, data_dir=fx.amazon_2018(tmp_path / "a18"))
    assert rows(ds)[("A1", "Y2")] == (2.0, 1441324900, "too small")
    y1 = list(ds.item_ids).index("Y1")
    assert ds.item_titles[y1] == "Shirt"
    assert ds.item_categories[y1] == "Clothing > Shirts"
    assert ds.item_descriptions[y1] == "Cotton shirt."


def test_amazon_2023_gz_milliseconds_parent_asin(tmp_path):
    ds = prepare("amazon_book", tmp_path, data_dir=fx.amazon_2023(tmp_path / "a23"))
    table = rows(ds)
    assert set(table) == {("U1", "P1"), ("U1", "P2"), ("U2", "P1")}
    assert table[("U1", "P1")] == (5.0, 1600000000, "a fine book")
    p1 = list(ds.item_ids).index("P1")
    assert ds.item_titles[p1] == "Dune"
    assert ds.item_categories[p1] == "Books > Sci-Fi"
    assert ds.item_descriptions[p1] == "Desert planet. Paperback"


def test_amazon_generation_detection():
    assert detect_generation({"reviewerID": "a", "asin": "b", "overall": 5, "helpful": [0, 0]}) == 2014
    assert detect_generation({"reviewerID": "a", "asin": "b", "overall": 5, "verified": True}) == 2018
    assert detect_generation({"user_id": "a", "parent_asin": "b", "rating": 5}) == 2023


def test_amazon_csv_reviews(tmp_path):
    root = tmp_path / "csv"
    fx.write_lines(root / "Musical_instruments_reviews.csv", [
        "reviewerID,asin,reviewerName,helpful,reviewText,overall,summary,unixReviewTime,reviewTime",
        'A1,I1,"Ann ""the"" player","[0, 0]","Works, sort of",3,ok,1393545600,"02 28, 2014"',
        "A1,I2,Ann,\"[1, 1]\",\"multi\nline text\",5,great,1393545700,\"02 28, 2014\"",
    ])
    ds = prepare("amazon", tmp_path, data_dir=root)
    table = rows(ds)
    assert table[("A1", "I1")] == (3.0, 1393545600, "Works, sort of")
    assert table[("A1", "I2")][2] == "multi\nline text"


def test_amazon_picks_the_category_file(tmp_path):
    root = fx.amazon_2023(tmp_path / "mixed")
    fx.jsonl(root / "Digital_Music.jsonl", [{"user_id": "M", "parent_asin": "Q", "rating": 4.0,
                                            "text": "tune", "timestamp": 1}])
    with pytest.warns(UserWarning, match="meta_Books.jsonl.gz is not named for the category expected"):
        assert AmazonSource(root, "amazon_music", loaders.MUSIC_FILES).review_path.name == "Digital_Music.jsonl"
    assert AmazonSource(root, "amazon_book", loaders.BOOK_FILES).review_path.name == "Books.jsonl.gz"


def test_amazon_refuses_to_guess_among_several_files(tmp_path):
    root = fx.amazon_2023(tmp_path / "two")
    fx.jsonl(root / "Digital_Music.jsonl", [{"user_id": "M", "parent_asin": "Q", "rating": 4.0,
                                            "text": "tune", "timestamp": 1}])
    with pytest.raises(ValueError, match=r"2 candidate files in .*Books.jsonl.gz, Digital_Music.jsonl.*reviews_file="):
        AmazonSource(root, "amazon")
    assert AmazonSource(root, "amazon", reviews_file="Digital_Music.jsonl").review_path.name == "Digital_Music.jsonl"
    fx.jsonl(root / "meta_Digital_Music.jsonl", [{"parent_asin": "Q", "title": "Song"}])
    with pytest.raises(ValueError, match="meta_Books.jsonl.gz, meta_Digital_Music.jsonl.*meta_file="):
        AmazonSource(root, "amazon", reviews_file="Digital_Music.jsonl")


def test_imdb_keeps_ten_point_scale(tmp_path):
    ds = prepare("imdb", tmp_path, data_dir=fx.imdb(tmp_path / "imdb"))
    assert ds.scale == RatingScale(1, 10)
    table = rows(ds)
    stamp = int(datetime(2006, 2, 10, tzinfo=UTC).timestamp())
    assert table[("ur1", "tt1")] == (10.0, stamp, "Brilliant prison drama")
    tt2 = list(ds.item_ids).index("tt2")
    assert ds.item_categories[tt2] == "Drama, War" and ds.item_descriptions[tt2] == "A long film."


def test_movielens_latest_half_steps(tmp_path):
    ds = prepare("movielens", tmp_path, data_dir=fx.movielens_latest(tmp_path / "ml"))
    assert ds.scale == RatingScale(0.5, 5, 0.5) and ds.scale.max_error == 4.5
    assert rows(ds)[("1", "20")] == (0.5, 200, "")
    ten = list(ds.item_ids).index("10")
    assert ds.item_titles[ten] == "Heat, The (1995)" and ds.item_categories[ten] == "Action, Crime"


def test_movielens_100k_latin1_items(tmp_path):
    ds = prepare("movielens", tmp_path, data_dir=fx.movielens_100k(tmp_path / "ml100k"))
    assert ds.scale == RatingScale(1, 5)
    assert titles(ds)["20"] == "Caf\xe9 Society (1995)"
    assert ds.item_categories[list(ds.item_ids).index("10")] == "Action"
    assert rows(ds)[("2", "10")] == (5.0, 150, "")


COLUMNS = {"user": "who", "item": "what", "rating": "stars", "timestamp": "when", "review": "body",
           "title": "name"}
RECORDS = [
    {"who": "u1", "what": "i1", "stars": 4, "when": "2020-01-01T00:00:00", "body": "first", "name": "Item One"},
    {"who": "u1", "what": "i2", "stars": 2, "when": "2020-01-02T00:00:00", "body": "second", "name": "Item Two"},
    {"who": "u2", "what": "i1", "stars": 5, "when": "2020-01-03T00:00:00", "body": "third", "name": "Item One"},
]


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet", "csv.gz"])
def test_custom_table(tmp_path, fmt):
    path = tmp_path / f"ratings.{fmt}"
    if fmt == "parquet":
        pq.write_table(pa.Table.from_pylist(RECORDS), path)
    elif fmt == "jsonl":
        fx.jsonl(path, RECORDS)
    else:
        header = ",".join(RECORDS[0])
        fx.write_lines(path, [header] + [",".join(str(v) for v in r.values()) for r in RECORDS],
                       compress=fmt.endswith(".gz"))
    ds = prepare("custom", tmp_path, path=path, columns=COLUMNS, scale=(1, 5))
    table = rows(ds)
    assert table[("u1", "i2")] == (2.0, int(datetime(2020, 1, 2, tzinfo=UTC).timestamp()), "second")
    assert titles(ds) == {"i1": "Item One", "i2": "Item Two"}


def test_custom_rejects_incomplete_mapping(tmp_path):
    path = fx.jsonl(tmp_path / "r.jsonl", RECORDS)
    with pytest.raises(ValueError, match="missing \\['timestamp'\\]"):
        prepare("custom", tmp_path, path=path, columns={"user": "who", "item": "what", "rating": "stars"})


@pytest.mark.parametrize("fmt", ["csv", "parquet", "tsv.gz"])
def test_custom_refuses_a_column_the_file_lacks_before_reading(tmp_path, fmt):
    path = tmp_path / f"ratings.{fmt}"
    if fmt == "parquet":
        pq.write_table(pa.Table.from_pylist(RECORDS), path)
    else:
        sep = "\t" if fmt.startswith("tsv") else ","
        fx.write_lines(path, [sep.join(RECORDS[0]), sep.join(str(v) for v in RECORDS[0].values())],
                       compress=fmt.endswith(".gz"))
    for wrong in ({"rating": "rating"}, {"title": "titel"}):  # a required column, then an optional one
        with pytest.raises(ValueError, match=f"columns {next(iter(wrong))}=.* not in ratings.{fmt}, whose columns "
                                             "are: who, what, stars, when, body, name$"):
            TableSource(path, {**COLUMNS, **wrong})


def test_custom_names_a_delimiter_mismatch_and_an_empty_file(tmp_path):
    semicolons = fx.write_lines(tmp_path / "r.csv", [";".join(RECORDS[0]), ";".join(map(str, RECORDS[0].values()))])
    with pytest.raises(ValueError, match="whose columns are: who;what;stars;when;body;name \\(one column: .csv files "
                                         "are read comma-separated"):
        TableSource(semicolons, COLUMNS)
    empty = fx.write_lines(tmp_path / "e.csv", [])
    with pytest.raises(ValueError, match="e.csv has no header row or records \\(is it empty\\?\\)"):
        TableSource(empty, COLUMNS)


def test_no_accepted_record_is_not_blamed_on_cold_samples(tmp_path):
    import recgym.envs.real_envs  # noqa: F401

    path = fx.jsonl(tmp_path / "r.jsonl", [{**r, "stars": None} for r in RECORDS])  # every rating missing
    with pytest.raises(ValueError, match="no samples .*no record of the raw data was accepted: check the files"):
        gym.make("RecRating-Custom-v0", path=str(path), columns=COLUMNS, skip_bad_records=True,
                 cache_dir=str(tmp_path / "cache"), progress=False)


def test_texts_stay_arrow_backed(tmp_path):
    ds = prepare("yelp", tmp_path, data_dir=fx.yelp(tmp_path / "yelp"))
    for column in (ds.review_texts, ds.item_titles, ds.user_ids):
        assert isinstance(column, ArrowStrings)
    assert isinstance(ds.ratings, np.memmap)
    assert ds.review_texts[-1] == list(ds.review_texts)[-1]
    with pytest.raises(IndexError):
        ds.review_texts[len(ds.review_texts)]


def test_bad_records_counter_defaults_to_raising():
    bad = BadRecords()
    with pytest.raises(ValueError, match="f.json:3: empty_text"):
        bad.report("f.json", 3, "empty_text")
    skipping = BadRecords(skip=True)
    skipping.report("f.json", 3, "empty_text")
    skipping.report("f.json", 4, "empty_text")
    assert skipping.summary()["skipped"] == {"empty_text": 2}


def test_imdb_env_on_ten_point_scale(tmp_path):
    import gymnasium as gym
    from gymnasium.utils.env_checker import check_env

    import recgym.envs.real_envs  # noqa: F401

    env = gym.make("RecRating-IMDb-v0", data_dir=str(fx.imdb(tmp_path / "imdb")), split="train",
                   cache_dir=str(tmp_path / "cache"), progress=False, keep_cold_samples=True)
    check_env(env.unwrapped, skip_render_check=True)
    obs, _ = env.reset(seed=0)
    assert "from 1 (worst) to 10 (best)" in obs
    assert env.unwrapped.scale == RatingScale(1, 10)
