"""The empty-split error's advice fits how the dataset was prepared."""

from __future__ import annotations

import pytest

from recgym.data.loaders import load_custom

COLUMNS = {"user": "u", "item": "i", "rating": "r", "timestamp": "t"}


def test_a_time_split_is_not_advised_to_try_split_method_time(tmp_path):
    """It advised "split_method 'time'" to a dataset already split by time."""
    singles = tmp_path / "s.csv"  # every rating a user's first
    singles.write_text("u,i,r,t\na,x,4,1600000001\nb,y,3,1600000002\nc,x,5,1600000003\nd,y,2,1600000004\ne,x,1,1600000005\n")
    ds = load_custom(singles, COLUMNS, split_method="time", cache_dir=tmp_path / "cache", progress=False)
    with pytest.raises(ValueError) as err:
        ds.require_samples("train")
    assert str(err.value).endswith("were dropped: try keep_cold_samples=True, another split or smaller valid_fraction "
                                   "and test_fraction")


def test_an_empty_time_split_holdout_is_advised_a_larger_fraction(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text("u,i,r,t\na,x,4,1600000001\na,y,3,1600000002\nb,x,5,1600000003\nb,y,2,1600000004\na,z,4,1600000005\nb,z,3,1600000006\n")
    ds = load_custom(path, COLUMNS, split_method="time", valid_fraction=0.0, cache_dir=tmp_path / "cache",
                     progress=False)
    with pytest.raises(ValueError) as err:
        ds.require_samples("valid")
    assert str(err.value) == ("split 'valid' of dataset 'custom' has no samples (6 ratings, 2 users, 3 items); "
                              "try another split or a larger valid_fraction")


def test_a_leave_last_out_split_is_still_advised_split_method_time(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text("u,i,r,t\na,x,4,1600000001\na,y,3,1600000002\nb,x,5,1600000003\nb,y,2,1600000004\n")
    ds = load_custom(path, COLUMNS, cache_dir=tmp_path / "cache", progress=False)
    with pytest.raises(ValueError, match=r"; try another split or split_method 'time'$"):
        ds.require_samples("valid")


def test_the_yelp_sample_split_by_time_gets_only_advice_that_applies(shared_data, tmp_path, monkeypatch):
    """The auditor's case: RecRating-Yelp-v0 on the 1000-record sample with split_method='time'."""
    import gymnasium as gym

    import recgym.envs.real_envs  # noqa: F401

    monkeypatch.setenv("RECGYM_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ValueError) as err:
        gym.make("RecRating-Yelp-v0", data_dir=shared_data / "yelp_open_dataset_sample1000", skip_bad_records=True,
                 split_method="time", progress=False)
    assert "keep_cold_samples=True" in str(err.value) and "split_method" not in str(err.value)
