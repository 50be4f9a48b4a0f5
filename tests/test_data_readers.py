"""Every raw layout, from tiny files written here, prepared into the common tables."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import gymnasium as gym
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import raw_fixtures as fx

from recgym.data import loaders
from recgym.data.readers import AmazonSource, BadRecordError, BadRecords, detect_generation
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
    with pytest.raises(ValueError, match=r"r.jsonl: no record was accepted \(3 bad records skipped: missing_field 3; "
                                         r"the first: r.jsonl:1: no 'stars' field\): check the file and the column "
                                         "mapping$"):
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


# ---- custom tables: what an audit found read silently wrong ------------------------------------
CSV_COLUMNS = {"user": "uid", "item": "iid", "rating": "stars", "timestamp": "ts", "review": "text"}


def csv_file(tmp_path: Path, *lines: str, name: str = "r.csv") -> Path:
    path = tmp_path / name
    path.write_text("uid,iid,stars,ts,text\n" + "".join(line + "\n" for line in lines))
    return path


UNCLOSED = ['q1,a,4,1600000010,"fine, really"', 'q1,b,3,1600000020,"unclosed quote here',
            "q2,a,1,1600000030,too sweet", 'q2,b,2,1600000040,"""Great"" product"', "q2,c,5,1600000050,loved it"]


@pytest.mark.parametrize("where", ["middle", "last"])
def test_an_unclosed_quote_is_a_bad_record_at_its_line(tmp_path, where):
    """csv read every line after an unclosed quote into that field: user q2 vanished and q1's
    review held q2's rows, with 0 bad records."""
    lines = UNCLOSED if where == "middle" else [*UNCLOSED[:1], *UNCLOSED[2:], UNCLOSED[1]]
    path = csv_file(tmp_path, *lines)
    line = 3 if where == "middle" else 6
    problem = "reaches line 4, which reads as a row of its own" if where == "middle" else "runs to the end of the file"
    with pytest.raises(BadRecordError, match=f"r.csv:{line}: malformed_record: a quoted field opened on this line "
                                             f"{problem}.*an unclosed quote"):
        prepare("custom", tmp_path, path=path, columns=CSV_COLUMNS)
    ds = prepare("custom", tmp_path, path=path, columns=CSV_COLUMNS, skip_bad_records=True)
    assert json.loads((Path(ds.stats["cache_dir"]) / "manifest.json").read_text())["bad_records"]["skipped"] == {
        "malformed_record": 1}
    assert {key: value[2] for key, value in rows(ds).items()} == {
        ("q1", "a"): "fine, really", ("q2", "a"): "too sweet", ("q2", "b"): '"Great" product', ("q2", "c"): "loved it"}


def test_a_bad_row_after_an_unclosed_quote_is_read_again(tmp_path):
    """The lines a quoted field swallowed are read again as rows: a bad one among them is counted too."""
    path = csv_file(tmp_path, 'q1,a,4,1600000010,"never closed', 'q2,a,five,1600000030,"a ""quoted"" word"',
                    "q2,b,2,1600000040,fine")
    ds = prepare("custom", tmp_path, path=path, columns=CSV_COLUMNS, skip_bad_records=True)
    assert sorted(rows(ds)) == [("q2", "b")]
    assert json.loads((Path(ds.stats["cache_dir"]) / "manifest.json").read_text())["bad_records"]["skipped"] == {
        "malformed_record": 2}


def test_multi_line_quoted_reviews_are_read_whole(tmp_path):
    """Legitimate quoted reviews spanning lines, with commas, quotes and blank lines (kept, as JSON
    lines and Parquet keep them), and a quote that does not open the field."""
    path = csv_file(tmp_path, 'u1,a,4,1600000010,"First line, with a comma\n\nthen a ""quoted"" line"',
                    'u1,b,5,1600000020,"Great" product', "", 'u2,a,3,1600000030,"a list:\n1, 2, 3, 4\nend"',
                    "u2,b,2,1600000040,short")
    ds = prepare("custom", tmp_path, path=path, columns=CSV_COLUMNS)
    assert {key: value[2] for key, value in rows(ds).items()} == {
        ("u1", "a"): 'First line, with a comma\n\nthen a "quoted" line', ("u1", "b"): "Great product",
        ("u2", "a"): "a list:\n1, 2, 3, 4\nend", ("u2", "b"): "short"}


@pytest.mark.parametrize(("mapping", "words"), [
    ({"timestamp": "stars"}, ("columns rating and timestamp both map to 'stars': user, item, rating and timestamp each "
                             "need a column of their own")),
    ({"item": "uid"}, "columns user and item both map to 'uid'"),
    ({"title": "stars"}, ("columns title and rating both map to 'stars': an item's title must come from a column "
                         "describing the item")),
    ({"item_text": "text"}, "columns item_text and review both map to 'text'"),
])
def test_fields_sharing_a_column_are_refused(tmp_path, mapping, words):
    path = csv_file(tmp_path, "u1,a,4,1600000010,ok")
    with pytest.raises(ValueError, match=f"^{re.escape(words)}"):
        TableSource(path, {**CSV_COLUMNS, **mapping})


def test_item_fields_may_share_the_item_column_or_each_other(tmp_path):
    path = csv_file(tmp_path, "u1,a,4,1600000010,ok")
    TableSource(path, {**CSV_COLUMNS, "title": "iid", "categories": "iid"})
    TableSource(path, {**CSV_COLUMNS, "review_title": "text"})


def test_item_metadata_comes_from_accepted_rows_first_non_empty_per_field(tmp_path):
    """The item's title came from its first raw row even when that row was rejected (off the scale),
    and a later row's description was ignored."""
    path = tmp_path / "r.csv"
    path.write_text("uid,iid,stars,ts,name,kind,desc\n"
                    "u0,x,9,1600000000,Wrong Title,wrong,wrong\n"  # off the scale: rejected
                    "u1,x,4,1600000010,,,\n"
                    "u2,x,5,1600000020,Right Title,,First desc\n"
                    "u3,x,3,1600000030,Later Title,Drama,Second desc\n"
                    "u1,y,2,1600000040,,,\n")
    columns = {"user": "uid", "item": "iid", "rating": "stars", "timestamp": "ts", "title": "name",
               "categories": "kind", "item_text": "desc"}
    ds = prepare("custom", tmp_path, path=path, columns=columns, skip_bad_records=True)
    items = {ds.item_ids[k]: (ds.item_titles[k], ds.item_categories[k], ds.item_descriptions[k])
             for k in range(len(ds.item_ids))}
    assert items == {"x": ("Right Title", "Drama", "First desc"), "y": ("y", "", "")}
    assert ds.stats["items_with_metadata"] == 1  # y has no title, categories or description


def test_parquet_date_column_is_midnight_utc(tmp_path):
    from datetime import date

    path = tmp_path / "r.parquet"
    pq.write_table(pa.table({"uid": ["u1", "u1"], "iid": ["a", "b"], "stars": [4, 2],
                             "ts": pa.array([date(2020, 9, 13), date(2020, 9, 14)], pa.date32())}), path)
    ds = prepare("custom", tmp_path, path=path, columns={"user": "uid", "item": "iid", "rating": "stars", "timestamp": "ts"})
    assert rows(ds)[("u1", "a")][1] == int(datetime(2020, 9, 13, tzinfo=UTC).timestamp())


@pytest.mark.parametrize(("stamps", "words", "early"), [
    ([20200915, 20200916, 20200917], (r"3 of 3 timestamps look like compact dates \(e.g. 20200915, read as epoch "
                                     r"seconds: 1970-08-22 .*write dates as 2020-09-15"), 3),
    ([1, 2, 3], r"every timestamp is before 1973 \(the latest, 3, read as epoch seconds: 1970-01-01 00:00:03 UTC\)", 3),
])
def test_timestamps_that_look_like_dates_warn_and_count(tmp_path, stamps, words, early):
    """``20200915`` is a number, so epoch seconds (1970-08-22): read as written, but said, once."""
    path = csv_file(tmp_path, *(f"u{k % 2},i{k},4,{t},ok" for k, t in enumerate(stamps)))
    with pytest.warns(UserWarning, match=words):
        ds = prepare("custom", tmp_path, path=path, columns=CSV_COLUMNS)
    assert ds.stats["timestamps_before_1973"] == early


def test_iso_dates_and_epoch_seconds_do_not_warn(tmp_path):
    import warnings

    path = csv_file(tmp_path, "u1,a,4,2020-09-15,ok", "u1,b,4,1600000000,ok")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = prepare("custom", tmp_path, path=path, columns=CSV_COLUMNS)
    assert ds.stats["timestamps_before_1973"] == 0


@pytest.mark.parametrize("kind", ["header_only_csv", "empty_jsonl", "blank_jsonl", "empty_parquet"])
def test_a_table_without_data_rows_is_refused(tmp_path, kind):
    if kind == "header_only_csv":
        path = csv_file(tmp_path)
    elif kind == "empty_parquet":
        path = tmp_path / "r.parquet"
        pq.write_table(pa.table({c: pa.array([], pa.string()) for c in CSV_COLUMNS.values()}), path)
    else:
        path = fx.write_lines(tmp_path / "r.jsonl", [] if kind == "empty_jsonl" else ["", "  "])
    with pytest.raises(ValueError, match=f"{path.name} has no data rows: nothing to prepare$"):
        prepare("custom", tmp_path, path=path, columns=CSV_COLUMNS)
    assert not list((tmp_path / "cache").glob("datasets/*/*"))


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_a_mapped_column_named_twice_in_the_header_is_refused(tmp_path, fmt):
    path = tmp_path / f"r.{fmt}"
    if fmt == "csv":
        path.write_text("uid,iid,stars,ts,stars,text\nu1,a,4,1600000000,2,ok\n")
    else:
        pq.write_table(pa.Table.from_arrays([pa.array(["u1"]), pa.array(["a"]), pa.array([4]), pa.array([1600000000]),
                                             pa.array([2]), pa.array(["ok"])],
                                            names=["uid", "iid", "stars", "ts", "stars", "text"]), path)
    with pytest.raises(ValueError, match=f"column 'stars' appears 2 times in r.{fmt}'s header .*rename the copies$"):
        TableSource(path, CSV_COLUMNS)


def test_a_repeated_column_that_is_not_mapped_is_fine(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text("uid,iid,stars,ts,note,note,text\nu1,a,4,1600000000,x,y,ok\n")
    assert TableSource(path, CSV_COLUMNS).columns == CSV_COLUMNS


def test_columns_must_be_a_mapping_and_path_a_file(tmp_path):
    path = csv_file(tmp_path, "u1,a,4,1600000000,ok")
    with pytest.raises(TypeError, match="^columns must be a mapping of field to column name, such as .*got a list$"):
        TableSource(path, ["user=uid", "item=iid", "rating=stars", "timestamp=ts"])
    with pytest.raises(FileNotFoundError, match=f"{tmp_path} is a directory: path \\(--path\\) names the ratings file"):
        TableSource(tmp_path, CSV_COLUMNS)


def test_a_step_that_does_not_reach_high_is_refused():
    with pytest.raises(ValueError, match="^RatingScale step 2 does not reach high=10 from low=1: high - low must be a "
                                         "whole number of steps$"):
        RatingScale.coerce((1, 10, 2))
    assert RatingScale.coerce((0.5, 5, 0.5)).values()[-1] == 5.0


def test_equal_scales_give_one_cache_key(tmp_path):
    from recgym.data.dataset import PrepareConfig
    from recgym.data.pipeline import cache_key

    path = csv_file(tmp_path, "u1,a,4,1600000000,ok")
    keys = {cache_key("custom", TableSource(path, CSV_COLUMNS, scale), PrepareConfig(), False)
            for scale in [(1, 5), (1.0, 5.0), (1, 5, 1), RatingScale(1, 5)]}
    assert len(keys) == 1
