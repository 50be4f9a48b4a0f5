"""``recgym data prepare|info`` and ``recgym baseline`` end to end on tiny raw files."""

from __future__ import annotations

import raw_fixtures as fx

from recgym.cli import main


def test_prepare_then_info(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RECGYM_CACHE", str(tmp_path / "cache"))
    root = fx.yelp(tmp_path / "yelp")
    assert main(["data", "info", "yelp"]) == 2  # an expected failure, one line on stderr
    assert "not prepared yet" in capsys.readouterr().err
    assert main(["data", "prepare", "yelp", "--data-dir", str(root), "--kcore", "2"]) == 0
    out = capsys.readouterr().out
    assert "kcore_dropped" in out and "users_before_kcore" in out
    assert main(["data", "info", "yelp"]) == 0
    assert '"kcore": 2' in capsys.readouterr().out


def test_prepare_reports_bad_records(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RECGYM_CACHE", str(tmp_path / "cache"))
    root = fx.yelp(tmp_path / "yelp")
    with open(root / "yelp_academic_dataset_review.json", "a") as f:
        f.write("{not json\n")
    assert main(["data", "prepare", "yelp", "--data-dir", str(root)]) == 2
    assert "yelp_academic_dataset_review.json:6: malformed_record" in capsys.readouterr().err.replace("\n", "")
    assert main(["data", "prepare", "yelp", "--data-dir", str(root), "--skip-bad-records"]) == 0
    assert '{"malformed_record": 1}' in capsys.readouterr().out


def test_missing_data_dir_exit_code(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("RECGYM_DATA_DIR", raising=False)
    assert main(["data", "prepare", "imdb", "--cache-dir", str(tmp_path)]) == 2
    assert "IMDB_reviews.json" in capsys.readouterr().err


def test_baseline_command(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RECGYM_CACHE", str(tmp_path / "cache"))
    root = fx.movielens_latest(tmp_path / "ml")
    code = main(["baseline", "RecRating-MovieLens-v0", "--data-dir", str(root), "--keep-cold-samples"])
    assert code == 0
    out = capsys.readouterr().out
    for name in ("global_mean", "user_mean", "item_mean", "user_item_bias", "biased_mf"):
        assert name in out
    assert main(["baseline", "RecRating-Nope-v0"]) == 2


def test_a_prepared_dataset_is_found_by_name_afterwards(tmp_path, monkeypatch, capsys):
    """DESIGN.md's flow: `recgym data prepare NAME --data-dir DIR` once, then commands and envs by name."""
    import gymnasium as gym
    import pytest

    from recgym.data.loaders import load_movielens
    from recgym.data.readers import MissingDataError

    monkeypatch.setenv("RECGYM_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("RECGYM_DATA_DIR", raising=False)
    assert main(["baseline", "RecRating-MovieLens-v0", "--keep-cold-samples"]) == 2
    assert "`recgym data prepare movielens --data-dir DIR` once" in capsys.readouterr().err
    root = fx.movielens_latest(tmp_path / "ml")
    assert main(["data", "prepare", "movielens", "--data-dir", str(root), "--keep-cold-samples"]) == 0
    assert main(["baseline", "RecRating-MovieLens-v0", "--keep-cold-samples"]) == 0
    assert "user_item_bias" in capsys.readouterr().out
    env = gym.make("RecRating-MovieLens-v0", split="train", keep_cold_samples=True, progress=False)
    assert env.unwrapped.dataset.stats["ratings"] == 4
    other = fx.movielens_latest(tmp_path / "ml2")
    with open(other / "ratings.csv", "a") as f:  # other data: its own cache entry
        f.write("2,20,4.0,250\n")
    assert main(["data", "prepare", "movielens", "--data-dir", str(other), "--keep-cold-samples"]) == 0
    with pytest.raises(MissingDataError, match="prepared from several folders .*ml, .*ml2.*: pass data_dir"):
        load_movielens(keep_cold_samples=True, progress=False)


def test_a_process_loads_again_when_the_data_folder_variable_changes(tmp_path, monkeypatch):
    """The in-process dataset cache was keyed by the keyword arguments alone: pointing $RECGYM_DATA_DIR
    at other data in a notebook returned the first folder's dataset."""
    from recgym.data.registry import load_dataset

    monkeypatch.setenv("RECGYM_CACHE", str(tmp_path / "cache"))
    for name, extra in (("a", ""), ("b", "2,20,4.0,250\n")):
        root = fx.movielens_latest(tmp_path / name / "movielens")
        with open(root / "ratings.csv", "a") as f:
            f.write(extra)
    counts = []
    for name in ("a", "b"):
        monkeypatch.setenv("RECGYM_DATA_DIR", str(tmp_path / name))
        counts.append(load_dataset("movielens", keep_cold_samples=True, progress=False).stats["ratings"])
    assert counts == [4, 5]


def test_custom_columns_with_spaces_and_the_not_prepared_hint(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RECGYM_CACHE", str(tmp_path / "cache"))
    assert main(["data", "info", "custom"]) == 2
    assert "`recgym data prepare custom --path FILE --columns user=COL,item=COL,rating=COL,timestamp=COL`" in (
        capsys.readouterr().err.replace("\n", ""))
    path = fx.write_lines(tmp_path / "r.csv", ["uid,iid,stars,ts", "u1,a,4,1600000000", "u1,b,3,1600000100"])
    assert main(["data", "prepare", "custom", "--path", str(path), "--columns",
                 "user = uid, item = iid, rating = stars, timestamp = ts", "--keep-cold-samples"]) == 0
    assert main(["data", "prepare", "custom", "--path", str(path), "--columns",
                 "user=uid,item=iid,rating=stars,timestamp=ts,user=iid"]) == 2
    assert "user given twice" in capsys.readouterr().err


def test_custom_table_without_data_rows_is_an_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RECGYM_CACHE", str(tmp_path / "cache"))
    path = fx.write_lines(tmp_path / "r.csv", ["uid,iid,stars,ts"])
    assert main(["data", "prepare", "custom", "--path", str(path), "--columns",
                 "user=uid,item=iid,rating=stars,timestamp=ts"]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]  # after the progress bars
    assert len(errors) == 1 and errors[0].endswith("r.csv has no data rows: nothing to prepare")
    assert not list((tmp_path / "cache").glob("datasets/custom/*"))
    assert main(["data", "prepare", "custom", "--path", str(tmp_path), "--columns",
                 "user=uid,item=iid,rating=stars,timestamp=ts"]) == 2
    assert "is a directory: path (--path) names the ratings file itself" in capsys.readouterr().err


def test_dataset_options_help_shows_the_effective_defaults_not_none():
    """``recgym eval --help`` showed "(default: None)" for ``--kcore``, ``--keep-cold-samples`` and
    ``--skip-bad-records``, which default to 0, off and off."""
    import argparse

    from recgym.commands.data import add_dataset_options, dataset_kwargs

    parser = argparse.ArgumentParser(formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_dataset_options(parser)
    text = " ".join(parser.format_help().split())
    assert "None" not in text
    for words in ("at least K ratings (default: 0", "no prior rating (default: off", "instead of failing (default: off"):
        assert words in text
    assert dataset_kwargs(parser.parse_args([])) == {}  # what is not given is left to the dataset
    assert dataset_kwargs(parser.parse_args(["--kcore", "0", "--skip-bad-records"])) == {"kcore": 0,
                                                                                        "skip_bad_records": True}
