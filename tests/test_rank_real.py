"""RecRank-* on the real datasets in ../shared/data: check_env, and leakage on MovieLens (no
negative is a film first rated at or after the target's time)."""

from __future__ import annotations

import gymnasium as gym
import pytest
from gymnasium.utils.env_checker import check_env
from test_data_real import CASES
from test_rank_env import check_leakage

import recgym.envs.real_envs  # noqa: F401
from recgym.envs.rec_rank import RecRankEnv

RANK_CASES = [(env_id.replace("RecRating-", "RecRank-", 1), folder, extra) for env_id, folder, extra, _, _ in CASES]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("recgym-cache")


@pytest.mark.parametrize("env_id, folder, extra", RANK_CASES, ids=[c[1] for c in RANK_CASES])
def test_rank_env_on_real_data(shared_data, cache_dir, env_id, folder, extra):
    env = gym.make(env_id, data_dir=str(shared_data / folder), split="test", cache_dir=str(cache_dir),
                   progress=False, **extra)
    core = env.unwrapped
    assert len(core) + core.skipped == core.dataset.num_samples("test")
    check_env(core, skip_render_check=True)


def test_movielens_lists_do_not_leak(shared_data, cache_dir):
    env = gym.make("RecRank-MovieLens-v0", data_dir=str(shared_data / "movielens_ml-latest-small"),
                   split="valid", cache_dir=str(cache_dir), progress=False).unwrapped
    data = env.dataset
    first = {}
    for item, t in zip(data.item_codes.tolist(), data.timestamps.tolist()):
        first[item] = min(t, first.get(item, t))
    for split, n in (("valid", None), ("test", None), ("train", 3000)):
        lists = RecRankEnv(data, split=split).lists[:n]
        assert len(lists) > 500
        check_leakage(data, split, [sample for sample, _ in lists])
        for sample, c in lists:  # negatives are films someone had rated before the target's time
            t = data.timestamps[data.row(split, sample)]
            assert all(first[x] < t for j, x in enumerate(c.items) if j != c.target_position), (split, sample)
