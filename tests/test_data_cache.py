"""The prepared-dataset cache: reused instantly, rebuilt when a parameter or a source file changes."""

from __future__ import annotations

import os
import time
from pathlib import Path

import gymnasium as gym
import pytest
import raw_fixtures as fx

import recgym.envs.real_envs  # noqa: F401
from recgym.data import loaders, pipeline
from recgym.data.registry import _LOADED


def load(root, tmp_path, **kwargs):
    return loaders.load_movielens(root, cache_dir=tmp_path / "cache", progress=False, **kwargs)


def never_build(*args, **kwargs):
    raise AssertionError("rebuilt although the cache was valid")


def test_second_load_reuses_cache(tmp_path, monkeypatch):
    root = fx.movielens_latest(tmp_path / "ml")
    first = load(root, tmp_path)
    monkeypatch.setattr(pipeline, "_build", never_build)
    second = load(root, tmp_path)
    assert second.stats["cache_dir"] == first.stats["cache_dir"]
    assert list(second.ratings) == list(first.ratings)


def test_prepared_text_is_a_datasets_arrow_file(tmp_path):
    """The cached text columns open with Hugging Face ``datasets`` as they are."""
    import datasets

    root = fx.movielens_latest(tmp_path / "ml")
    ds = load(root, tmp_path)
    arrow_files = sorted(Path(ds.stats["cache_dir"]).glob("*.arrow"))
    assert arrow_files
    opened = {f.name: datasets.Dataset.from_file(str(f)) for f in arrow_files}
    assert any(len(table) == len(ds.item_titles) for table in opened.values())


def test_changed_parameter_or_file_rebuilds(tmp_path):
    root = fx.movielens_latest(tmp_path / "ml")
    base = Path(load(root, tmp_path).stats["cache_dir"])
    assert Path(load(root, tmp_path, kcore=1).stats["cache_dir"]) != base
    assert Path(load(root, tmp_path, split_method="time").stats["cache_dir"]) != base
    assert Path(load(root, tmp_path, skip_bad_records=True).stats["cache_dir"]) != base
    with open(root / "ratings.csv", "a") as f:
        f.write("3,30,2.0,400\n")
    changed = load(root, tmp_path)
    assert Path(changed.stats["cache_dir"]) != base
    assert changed.stats["ratings"] == 5
    # same size, new mtime: still a different source identity
    stat = (root / "ratings.csv").stat()
    os.utime(root / "ratings.csv", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert Path(load(root, tmp_path).stats["cache_dir"]) != Path(changed.stats["cache_dir"])


def test_rebuild_flag_and_no_leftover_temp_dirs(tmp_path):
    root = fx.movielens_latest(tmp_path / "ml")
    directory = Path(load(root, tmp_path).stats["cache_dir"])
    before = (directory / "manifest.json").stat().st_mtime_ns
    time.sleep(0.01)
    load(root, tmp_path, rebuild=True)
    assert (directory / "manifest.json").stat().st_mtime_ns != before
    assert [p.name for p in directory.parent.iterdir()] == [directory.name]


def test_second_gym_make_reuses_prepared_dataset(tmp_path, monkeypatch):
    root = fx.movielens_latest(tmp_path / "ml")
    kwargs = {"data_dir": str(root), "cache_dir": str(tmp_path / "cache"), "progress": False,
              "keep_cold_samples": True}
    env = gym.make("RecRating-MovieLens-v0", split="train", **kwargs)
    obs, _ = env.reset(seed=0)
    assert "Ratings are on a scale from 0.5" in obs
    _LOADED.clear()  # not the in-process memo: the on-disk cache
    monkeypatch.setattr(pipeline, "_build", never_build)
    env2 = gym.make("RecRating-MovieLens-v0", split="train", **kwargs)
    assert env2.reset(seed=0)[0] == obs


def test_in_process_memo_sees_a_raw_file_edited_in_place(tmp_path):
    """A notebook that fixes its CSV and makes the environment again got the old ratings."""
    from recgym.data.registry import load_dataset

    root = fx.movielens_latest(tmp_path / "ml")
    kwargs = {"data_dir": str(root), "cache_dir": str(tmp_path / "cache"), "progress": False}
    first = load_dataset("movielens", **kwargs)
    assert load_dataset("movielens", **kwargs) is first  # unchanged files: the memo
    with open(root / "ratings.csv", "a") as f:
        f.write("3,30,2.0,400\n")
    changed = load_dataset("movielens", **kwargs)
    assert changed is not first and changed.stats["ratings"] == first.stats["ratings"] + 1
    assert load_dataset("movielens", **kwargs) is changed


@pytest.mark.parametrize("env_id", ["RecRating-Yelp-v0", "RecRating-IMDb-v0", "RecRating-AmazonBook-v0"])
def test_env_without_data_explains_what_to_download(env_id, tmp_path, monkeypatch):
    monkeypatch.delenv("RECGYM_DATA_DIR", raising=False)
    with pytest.raises(FileNotFoundError, match="Published at"):
        gym.make(env_id, data_dir=str(tmp_path / "absent"), cache_dir=str(tmp_path))


def test_orphaned_temp_dir_of_dead_process_is_removed(tmp_path):
    import subprocess

    root = fx.movielens_latest(tmp_path / "ml")
    directory = Path(load(root, tmp_path).stats["cache_dir"])
    dead = subprocess.Popen(["true"])
    dead.wait()
    orphan = directory.parent / f".tmp-{directory.name}-{dead.pid}-abcd1234"
    orphan.mkdir()
    (orphan / "reviews.arrow").write_bytes(b"half")
    load(root, tmp_path, kcore=1)
    assert not orphan.exists()
