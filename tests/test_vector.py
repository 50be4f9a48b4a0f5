import gymnasium as gym
import numpy as np
import pytest

import recgym  # noqa: F401
from recgym.envs import GroupedRatingVecEnv, make_group_vec
from recgym.rewards import FOUR_STEP_TAGS


def answer(rating: float) -> str:
    return "".join(f"<{t}>{rating if t == 'rate' else 'ok'}</{t}>" for t in FOUR_STEP_TAGS)


def test_make_vec_groups_share_a_sample():
    vec = gym.make_vec("RecRating-Synthetic-v0", num_envs=12, group_size=4)
    assert isinstance(vec, GroupedRatingVecEnv) and vec.num_prompts == 3
    obs, infos = vec.reset(seed=0)
    indices = [info["index"] for info in infos]
    for g in range(3):
        group = indices[4 * g : 4 * g + 4]
        assert len(set(group)) == 1
        assert len(set(obs[4 * g : 4 * g + 4])) == 1
    assert len(set(indices)) == 3  # distinct samples across groups within a reset
    _, rewards, terminated, truncated, step_infos = vec.step([answer(r) for r in (1, 2, 3, 4) * 3])
    assert terminated.all() and not truncated.any()
    # inside a group the target is shared, so the reward orders by closeness to it
    for g in range(3):
        target = step_infos[4 * g]["target_rating"]
        expected = [0.5 + 1 - abs(target - r) / 4 for r in (1, 2, 3, 4)]
        assert np.allclose(rewards[4 * g : 4 * g + 4], expected)


def test_explicit_indices_and_reproducible_seeds():
    vec = make_group_vec("RecRating-Synthetic-v0", num_prompts=2, group_size=2, split="valid")
    _, infos = vec.reset(options={"indices": [4, 9]})
    assert [i["index"] for i in infos] == [4, 4, 9, 9]
    a = [i["index"] for i in vec.reset(seed=3)[1]]
    b = [i["index"] for i in vec.reset(seed=3)[1]]
    assert a == b


@pytest.mark.parametrize("num_envs, group_size, message", [(7, 4, "multiple of group_size"), (4, 1, ">= 2")])
def test_wrong_group_shapes_fail_early(num_envs, group_size, message):
    with pytest.raises(ValueError, match=message):
        gym.make_vec("RecRating-Synthetic-v0", num_envs=num_envs, group_size=group_size)


def test_plain_sync_vectorization_still_works():
    vec = gym.make_vec("RecRating-Synthetic-v0", num_envs=3, vectorization_mode="sync")
    obs, infos = vec.reset(seed=0)
    assert len(obs) == 3 and len(infos["index"]) == 3
    _, rewards, *_ = vec.step((answer(3),) * 3)
    assert rewards.shape == (3,) and (rewards >= 0.5).all()


def test_one_string_is_not_taken_as_one_action_per_character():
    vec = make_group_vec("RecRating-Synthetic-v0", num_prompts=2, group_size=2)
    vec.reset(seed=0)
    with pytest.raises(TypeError, match="a sequence of 4 completions"):
        vec.step("abcd")


def test_misuse_is_an_error_not_a_silent_batch():
    """Before: step before reset gave rewards 0, {"index": 3} was ignored and 1.7 served sample 1."""
    vec = gym.make_vec("RecRank-Synthetic-v0", num_envs=4, group_size=2, split="valid")
    with pytest.raises(RuntimeError, match=r"call reset\(\) before step\(\)"):
        vec.step(["x"] * 4)
    with pytest.raises(ValueError, match=r"unknown reset option\(s\) \['index'\]: the only one is 'indices' "
                                         r"\(2 sample indices, one per group\)"):
        vec.reset(options={"index": 3})
    for bad, error in (([1.7, 0], TypeError), ([True, 0], TypeError), ([-1, 0], ValueError)):
        with pytest.raises(error, match=r"options\['indices'\] entries must be"):
            vec.reset(options={"indices": bad})
    assert [i["index"] for i in vec.reset(options={"indices": [np.int64(3), 0]})[1]] == [3, 3, 0, 0]
