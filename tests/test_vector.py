import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode

import recgym  # noqa: F401
from recgym.data.registry import load_dataset
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


OK = answer(4)


def indices_of(infos) -> list[int]:
    return [info["index"] for info in infos]


@pytest.mark.parametrize("bad, error, message", [
    ("x" * 200_000, ValueError, r"actions\[2\]: completion of 200000 characters exceeds max_action_length=100000"),
    (None, TypeError, r"actions\[2\]: the action must be the completion text \(str\), got NoneType"),
])
def test_a_refused_batch_steps_no_sub_env(bad, error, message):
    """Before: sub-envs 0 and 1 were stepped before action 2 was refused, and the retry lost their rewards."""
    vec = make_group_vec("RecRating-Synthetic-v0", num_prompts=2, group_size=2, split="test")
    vec.reset(seed=0)
    with pytest.raises(error) as refused:
        vec.step([OK, OK, bad, OK])
    _, rewards, terminated, _, infos = vec.step([OK] * 4)
    assert terminated.all() and (rewards >= 0.5).all() and not any("waiting" in i for i in infos)
    refused.match(message)


def test_reading_np_random_seed_changes_nothing():
    """Before: the seed read was a fresh random one, and reading it replaced the seeded generator."""
    vec = make_group_vec("RecRating-Synthetic-v0", num_prompts=2, group_size=2, split="test")
    rng = vec.np_random
    seed = vec.np_random_seed
    assert vec.np_random is rng and vec.np_random_seed == seed
    vec.reset(seed=0)
    unread = indices_of(vec.reset()[1])
    vec.reset(seed=0)
    assert vec.np_random_seed == 0
    assert indices_of(vec.reset()[1]) == unread


def test_groups_that_autoreset_together_get_distinct_samples():
    """Before: reset drew 150 distinct samples, the autoreset after it drew 117 (with replacement)."""
    vec = make_group_vec("RecRating-Synthetic-v0", num_prompts=150, group_size=2, autoreset_mode="NextStep",
                         split="valid")
    assert len(set(indices_of(vec.reset(seed=0)[1]))) == 150
    vec.step([OK] * 300)
    *_, infos = vec.step([None] * 300)
    assert all(i["autoreset"] for i in infos)
    assert len(set(indices_of(infos))) == 150
    assert all(len(set(indices_of(infos[k : k + 2]))) == 1 for k in range(0, 300, 2))


def test_an_index_out_of_range_names_the_indices_option():
    """Before: the IndexError came from a sub-env and named options['index']."""
    vec = make_group_vec("RecRating-Synthetic-v0", num_prompts=2, group_size=2, split="test")
    with pytest.raises(IndexError, match=r"options\['indices'\] entry 1000000 out of range: "
                                         r"the sub-environments have 300 samples \(0 to 299\)"):
        vec.reset(options={"indices": [5, 10**6]})
    with pytest.raises(RuntimeError, match=r"call reset\(\) before step\(\)"):
        vec.step([OK] * 4)


def test_a_closed_group_env_refuses_to_run():
    """Before: reset and step went on after close()."""
    vec = make_group_vec("RecRating-Synthetic-v0", num_prompts=2, group_size=2)
    vec.reset(seed=0)
    vec.close()
    assert vec.closed
    for call in (lambda: vec.step([OK] * 4), lambda: vec.reset(seed=0)):
        with pytest.raises(RuntimeError, match=r"this vector env is closed: make a new one"):
            call()
    vec.close()  # closing twice is fine


@pytest.mark.parametrize("make", [
    lambda **kw: gym.make_vec("RecRating-Synthetic-v0", num_envs=4, group_size=2, **kw),
    lambda **kw: gym.make_vec("RecRatingTools-Synthetic-v0", num_envs=4, group_size=2, **kw),
    lambda **kw: gym.make_vec("RecRank-Synthetic-v0", num_envs=2, **kw),
    lambda **kw: make_group_vec("RecRating-Synthetic-v0", num_prompts=2, group_size=2, **kw),
])
def test_make_vec_takes_render_mode_and_refuses_max_episode_steps(make):
    """Before: the entry point refused render_mode=None, and make_group_vec put a TimeLimit on the
    sub-envs, whose truncation of a tool episode scored 0 instead of max_turns' empty answer."""
    vec = make(render_mode=None)
    assert vec.render_mode is None
    assert len(vec.reset(seed=0)[0]) == vec.num_envs
    with pytest.raises(TypeError, match=r"max_episode_steps is not an argument here: RecRating and RecRank episodes "
                                        r"end after one step, RecRatingTools episodes at max_turns"):
        make(max_episode_steps=3)


def test_end_episode_of_one_sub_env_lets_the_others_play_on():
    """The rollout ends a full-context episode through the vector env, which then waits on it
    (before, ending it on the sub-env left the vector env asking it for an action)."""
    vec = make_group_vec("RecRatingTools-Synthetic-v0", num_prompts=1, group_size=2, split="valid",
                         autoreset_mode="NextStep")
    vec.reset(options={"indices": [3]})
    vec.step(["<call>user_stats()</call>"] * 2)
    _, reward, terminated, truncated, info = vec.end_episode(0, "the context is full")
    assert truncated and not terminated and info["truncation"] == "the context is full"
    assert reward == pytest.approx(-0.5 - 0.02)
    obs, rewards, _, _, infos = vec.step([None, "<call>user_stats()</call>"])
    assert obs[0] == "" and rewards[0] == 0.0 and infos[0]["waiting"] and obs[1].startswith("Result of user_stats()")
    with pytest.raises(RuntimeError, match="sub-env 0 has no episode in progress"):
        vec.end_episode(0, "again")
    vec.end_episode(1, "the context is full")
    _, _, _, _, infos = vec.step([None, None])
    assert all(i.get("autoreset") for i in infos)  # the group ended as a whole, so it resets together
    with pytest.raises(IndexError, match="sub-env 2 out of range"):
        vec.end_episode(2, "full")
    with pytest.raises(TypeError, match="only multi-turn sub-envs"):
        make_group_vec("RecRating-Synthetic-v0", num_prompts=1, group_size=2).end_episode(0, "full")


def test_sub_envs_of_a_registered_id_share_the_dataset_in_its_kwargs():
    """gymnasium.make deep-copies registered kwargs, and make_group_vec made each sub-env with it: a
    dataset object registered in an id's kwargs was copied B*G times (GRPOTrainer builds its envs so)."""
    from recgym.data.synthetic import load_synthetic

    env_id = "RecGymTestOwnDataset-v0"
    gym.register(env_id, entry_point="recgym.envs.rec_rating:RecRatingEnv", disable_env_checker=True,
                 vector_entry_point="recgym.envs.vector:grouped_vector_entry_point",
                 kwargs={"dataset": load_synthetic(num_users=20), "split": "valid"})
    try:
        vec = make_group_vec(env_id, num_prompts=2, group_size=3)
        datasets = {id(env.unwrapped.dataset) for env in vec.envs}
        assert len(datasets) == 1  # one copy, as gymnasium.make_vec(env_id, num_envs=6, group_size=3) makes
        assert len({id(env.unwrapped.dataset) for env in gym.make_vec(env_id, num_envs=6, group_size=3).envs}) == 1
        assert {env.spec.id for env in vec.envs} == {env_id} and {type(env) for env in vec.envs} == {type(vec.envs[0])}
        obs, infos = vec.reset(options={"indices": [1, 4]})
        assert [i["index"] for i in infos] == [1, 1, 1, 4, 4, 4] and obs[0] == gym.make(env_id).reset(
            options={"index": 1})[0]
        _, rewards, terminated, _, _ = vec.step([answer(3)] * 6)
        assert terminated.all() and (rewards >= 0.5).all()
    finally:
        del gym.registry[env_id]


@pytest.mark.parametrize("mode", [*AutoresetMode, *(m.value for m in AutoresetMode)])
def test_make_vec_without_groups_uses_the_autoreset_mode_given(mode):
    """Before: without group_size the mode was dropped, so every value gave NextStep."""
    vec = gym.make_vec("RecRating-Synthetic-v0", num_envs=2, autoreset_mode=mode)
    assert vec.metadata["autoreset_mode"] == AutoresetMode(mode) and vec.autoreset_mode == AutoresetMode(mode)


def test_make_vec_autoreset_defaults_stay_next_step_plain_and_disabled_grouped():
    assert gym.make_vec("RecRating-Synthetic-v0", num_envs=2).metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP
    grouped = gym.make_vec("RecRating-Synthetic-v0", num_envs=4, group_size=2)
    assert grouped.metadata["autoreset_mode"] == AutoresetMode.DISABLED


def test_same_step_autoreset_scores_every_step_and_returns_the_final_observation_and_info():
    """Before: SameStep was ignored, so every other step was a NextStep autoreset with reward 0."""
    vec = gym.make_vec("RecRating-Synthetic-v0", num_envs=2, autoreset_mode=AutoresetMode.SAME_STEP)
    vec.reset(seed=0)
    for _ in range(3):
        obs, rewards, terminated, truncated, infos = vec.step([answer(3)] * 2)
        assert terminated.all() and not truncated.any() and (rewards >= 0.5).all()
        assert list(infos["final_obs"]) == ["", ""] and infos["_final_obs"].all()
        assert list(infos["final_info"]["parsed_rating"]) == [3.0, 3.0] and "target_rating" in infos["final_info"]
        # the observations and infos are the next episodes' (their reset's), not the finished ones'
        assert all(obs) and "messages" in infos and "target_rating" not in infos


@pytest.mark.parametrize("group_size", [None, 2])
def test_an_unknown_autoreset_mode_is_a_one_line_error(group_size):
    with pytest.raises(ValueError, match=r"^autoreset_mode must be one of NextStep, SameStep, Disabled "
                                         r"\(gymnasium.vector.AutoresetMode\), got 'bogus'$"):
        gym.make_vec("RecRating-Synthetic-v0", num_envs=4, group_size=group_size, autoreset_mode="bogus")


def test_group_vec_still_refuses_same_step():
    with pytest.raises(ValueError, match="autoreset_mode must be DISABLED or NEXT_STEP"):
        gym.make_vec("RecRating-Synthetic-v0", num_envs=4, group_size=2, autoreset_mode=AutoresetMode.SAME_STEP)


@pytest.mark.parametrize("env_id", [
    "RecRatingTools-Synthetic-v0",
    "RecRating-SyntheticLong-v0",
    "RecRank-Synthetic-v0",
])
def test_a_prepared_dataset_replaces_an_ids_dataset_and_its_registered_loader_defaults(env_id):
    """Before: the id's registered loader default (long_history=True, choice_temperature=0.5) was
    refused as if the user had given it with the prepared dataset."""
    ds = load_dataset("synthetic", num_users=40)
    assert gym.make(env_id, dataset=ds, split="valid").unwrapped.dataset is ds
    vec = make_group_vec(env_id, num_prompts=1, group_size=2, dataset=ds, split="valid")
    assert all(env.unwrapped.dataset is ds for env in vec.envs)
    assert all(env.unwrapped.dataset is ds for env in gym.make_vec(env_id, num_envs=2, group_size=2, dataset=ds).envs)
    assert gym.make_vec(env_id, num_envs=2, dataset=ds).envs[0].unwrapped.dataset is ds
    for given in ({"num_users": 10}, {"long_history": False}):  # loader arguments the user gives: still refused
        with pytest.raises(TypeError, match=rf"dataset loader arguments \['{next(iter(given))}'\] given with a "
                                            "prepared dataset"):
            gym.make(env_id, dataset=ds, **given)
