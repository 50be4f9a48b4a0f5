"""Integration: prepare each real dataset in ../shared/data and check its environment."""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium as gym
import pytest
from gymnasium.utils.env_checker import check_env

import recgym.envs.real_envs  # noqa: F401

# env id, folder, extra loader arguments, split to check, minimum prepared ratings.
# The real files have a few empty review texts (and the Yelp sample reviews businesses missing
# from its business file), so they need skip_bad_records; the Yelp sample has almost no user
# with two reviews, so it is split by time and keeps cold samples.
CASES = [
    ("RecRating-MovieLens-v0", "movielens_ml-latest-small", {}, "test", 100_000),
    ("RecRating-AmazonMusic-v0", "amazon_digital_music_5core_2014_partial",
     {"skip_bad_records": True}, "test", 6_900),
    ("RecRating-Amazon-v0", "amazon_fashion_5core_2018", {"skip_bad_records": True}, "test", 3_000),
    ("RecRating-Amazon-v0", "amazon_musical_instruments_5core_2014_partial",
     {"skip_bad_records": True}, "test", 5_000),
    ("RecRating-Yelp-v0", "yelp_open_dataset_sample1000",
     {"skip_bad_records": True, "split_method": "time", "keep_cold_samples": True}, "test", 70),
]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("recgym-cache")


@pytest.mark.parametrize("env_id, folder, extra, split, min_ratings", CASES, ids=[c[1] for c in CASES])
def test_real_dataset_env(shared_data, cache_dir, env_id, folder, extra, split, min_ratings):
    env = gym.make(env_id, data_dir=str(shared_data / folder), split=split, cache_dir=str(cache_dir),
                   progress=False, **extra)
    dataset = env.unwrapped.dataset
    assert dataset.stats["ratings"] >= min_ratings
    assert dataset.num_samples(split) > 0
    check_env(env.unwrapped, skip_render_check=True)
    obs, _ = env.reset(seed=1)
    assert "How will this user rate" in obs or len(obs) > 100
    manifest = json.loads((Path(dataset.stats["cache_dir"]) / "manifest.json").read_text())
    assert manifest["counts"]["ratings"] == dataset.stats["ratings"]


def test_real_files_fail_loudly_without_skip(shared_data, cache_dir):
    with pytest.raises(ValueError, match=r"AMAZON_FASHION_5.jsonl:\d+: empty_text"):
        gym.make("RecRating-Amazon-v0", data_dir=str(shared_data / "amazon_fashion_5core_2018"),
                 cache_dir=str(cache_dir), progress=False)


def test_amazon_2018_layout_detected(shared_data, cache_dir):
    from recgym.data.loaders import load_amazon

    ds = load_amazon(shared_data / "amazon_fashion_5core_2018", skip_bad_records=True,
                     cache_dir=cache_dir, progress=False)
    manifest = json.loads((Path(ds.stats["cache_dir"]) / "manifest.json").read_text())
    assert manifest["reader"]["generation"] == 2018
    assert manifest["bad_records"]["skipped"] == {"empty_text": 16}
    assert ds.stats["duplicates_dropped"] > 0  # the 134 repeated (user, item) pairs
