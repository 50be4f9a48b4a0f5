import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import recgym
from recgym.envs import RecRatingEnv
from recgym.rewards import FOUR_STEP_TAGS, RewardBreakdown

GOOD = "".join(f"<{t}>{'3' if t == 'rate' else 'ok'}</{t}>" for t in FOUR_STEP_TAGS)


@pytest.fixture
def env():
    return gym.make("RecRating-Synthetic-v0", split="valid")


def test_registered_on_import_and_passes_check_env(env):
    assert "RecRating-Synthetic-v0" in gym.registry
    check_env(env.unwrapped, skip_render_check=True)


def test_reset_returns_prompt_and_info_without_truth(env):
    obs, info = env.reset(seed=3)
    assert isinstance(obs, str) and "How will this user rate" in obs
    assert {"messages", "user_id", "item_id", "index", "scale"} <= set(info)
    assert [m["role"] for m in info["messages"]] == ["system", "user"]
    assert info["scale"] == recgym.RatingScale(1, 5)
    assert "target_rating" not in info and "rating" not in info


def test_step_reward_and_info(env):
    env.reset(options={"index": 7})
    target = env.unwrapped.dataset.target("valid", 7)
    _, reward, terminated, truncated, info = env.step(GOOD)
    assert terminated and not truncated
    assert info["target_rating"] == target
    assert info["parsed_rating"] == 3.0
    assert info["abs_error"] == abs(target - 3)
    assert reward == pytest.approx(0.5 + 1 - abs(target - 3) / 4)
    assert info["reward_breakdown"]["total"] == reward
    assert set(info["reward_breakdown"]) >= {"format", "accuracy", "total"}


def test_unparseable_step_gets_no_accuracy(env):
    env.reset(seed=0)
    _, reward, _, _, info = env.step("I'd say around four stars")
    assert reward == -0.5 and info["parsed_rating"] is None and info["abs_error"] is None


def test_seeded_resets_are_reproducible():
    a = gym.make("RecRating-Synthetic-v0")
    b = gym.make("RecRating-Synthetic-v0")
    seq_a = [a.reset(seed=11)[1]["index"]] + [a.reset()[1]["index"] for _ in range(5)]
    seq_b = [b.reset(seed=11)[1]["index"]] + [b.reset()[1]["index"] for _ in range(5)]
    assert seq_a == seq_b and len(set(seq_a)) > 1


def test_index_option_pins_a_sample(env):
    first = env.reset(options={"index": 5})
    again = env.reset(seed=99, options={"index": 5})
    assert first[0] == again[0] and first[1]["index"] == 5
    with pytest.raises(IndexError, match="out of range"):
        env.reset(options={"index": len(env.unwrapped)})


def test_len_is_the_number_of_samples(env):
    assert len(env.unwrapped) == env.unwrapped.dataset.num_samples("valid") > 0


def test_misuse_raises_clear_errors(env):
    env = env.unwrapped
    with pytest.raises(RuntimeError, match="call reset"):
        env.step(GOOD)
    env.reset(seed=0)
    with pytest.raises(TypeError, match="completion text"):
        env.step(3)
    env.step(GOOD)
    with pytest.raises(RuntimeError, match="call reset"):
        env.step(GOOD)
    with pytest.raises(ValueError, match="split"):
        RecRatingEnv(split="training")
    with pytest.raises(ValueError, match="unknown dataset"):
        RecRatingEnv(dataset="nope")


@pytest.mark.parametrize("env_id", ["RecRating-Synthetic-v0", "RecRank-Synthetic-v0"])
def test_reset_options_other_than_an_index_are_refused(env_id):
    """``options={"idx": 3}`` drew a random sample without a word; ``options=3`` failed as 'not iterable'."""
    env = gym.make(env_id).unwrapped
    with pytest.raises(TypeError, match="options must be a dict such as"):
        env.reset(options=3)
    with pytest.raises(ValueError, match=r"unknown reset option\(s\) \['idx'\]: the only one is 'index'"):
        env.reset(options={"idx": 3})
    with pytest.raises(IndexError, match="out of range"):
        env.reset(options={"index": len(env)})
    assert env.reset(options={"index": 2})[1]["index"] == 2


def test_template_is_one_argument_away():
    env = gym.make("RecRating-Synthetic-v0", template="rate_only")
    obs, _ = env.reset(seed=0)
    assert "<match>" not in obs
    _, reward, _, _, info = env.step("<rate>3</rate>")
    assert info["reward_breakdown"]["format"] == 0.5 and reward > 0.5


def test_dataset_kwargs_reach_the_world():
    small = gym.make("RecRating-Synthetic-v0", num_users=20, seed=5)
    assert small.unwrapped.dataset.stats["users"] == 20


@pytest.mark.parametrize(("env_id", "kwargs", "words"), [
    ("RecRating-Synthetic-v0", {"max_user_histroy": 3},
     "RecRatingEnv with dataset 'synthetic' takes no argument(s) max_user_histroy (did you mean max_user_history?);"),
    ("RecRating-Synthetic-v0", {"data_dir": "x"}, "dataset 'synthetic' takes no argument(s) data_dir;"),
    ("RecRank-Synthetic-v0", {"num_candidate": 5}, "(did you mean num_candidates?)"),
    ("RecRatingTools-Synthetic-v0", {"max_user_history": 3},
     "RecRatingToolsEnv takes no max_user_history: the agent reads histories through its tools"),
])
def test_an_unknown_argument_is_named_with_the_ones_the_env_and_its_dataset_take(env_id, kwargs, words):
    with pytest.raises(TypeError) as info:
        gym.make(env_id, **kwargs)
    assert words in str(info.value)
    if "did you mean" in words:
        assert "the environment's arguments: split, " in str(info.value) and "; the dataset's: num_users" in str(info.value)


def test_unicode_actions_are_in_the_action_space(env):
    assert env.action_space.contains("évaluation ٥ 評価 🍜")
    assert not env.action_space.contains(b"bytes")
    assert env.observation_space.contains(env.reset(seed=0)[0])


def test_history_precedes_target_in_every_prompt(env):
    ds = env.unwrapped.dataset
    for i in np.random.default_rng(0).choice(len(env.unwrapped), 50, replace=False):
        ctx = ds.context("valid", int(i))
        assert all(h.timestamp < ctx.timestamp for h in ctx.user_history + ctx.item_history)


def test_a_custom_reward_checks_the_templates_tags():
    """``RatingReward(accuracy_weight=2.0)`` beside ``template="rate_only"`` kept the four-step tags,
    so the answer the prompt asks for failed the format."""
    from recgym.rewards import RATE_ONLY_TAGS, RatingReward

    env = gym.make("RecRating-Synthetic-v0", split="valid", template="rate_only",
                   reward=RatingReward(accuracy_weight=2.0)).unwrapped
    assert env.reward_fn == RatingReward(accuracy_weight=2.0, tags=RATE_ONLY_TAGS)
    env.reset(options={"index": 7})
    target = env.dataset.target("valid", 7)
    _, reward, _, _, info = env.step("<rate>3</rate>")
    assert info["reward_breakdown"]["format"] == 0.5 and reward == pytest.approx(0.5 + 2 * (1 - abs(target - 3) / 4))
    with pytest.raises(ValueError, match=r"reward checks the tags \('match', 'rate'\) but the template asks for "
                                         r"\('rate',\): pass RatingReward\(..., tags=template.tags\)"):
        gym.make("RecRating-Synthetic-v0", template="rate_only", reward=RatingReward(tags=("match", "rate")))
    with pytest.raises(TypeError, match="reward must be a RatingReward or a callable like it"):
        gym.make("RecRating-Synthetic-v0", reward="mae")


def test_a_prompt_longer_than_the_observation_space_is_an_error_not_a_cut(env):
    env = gym.make("RecRating-Synthetic-v0", split="valid", max_observation_length=100).unwrapped
    with pytest.raises(ValueError, match=r"the prompt of sample 0 has \d+ characters, over max_observation_length=100: "
                                         r"raise max_observation_length or shorten the prompt"):
        env.reset(options={"index": 0})
    with pytest.raises(RuntimeError, match="call reset"):
        env.step(GOOD)  # the failed reset started no episode
    roomy = gym.make("RecRating-Synthetic-v0", split="valid", max_action_length=10).unwrapped
    obs, _ = roomy.reset(options={"index": 0})
    assert roomy.observation_space.contains(obs)
    with pytest.raises(ValueError, match="exceeds max_action_length=10"):
        roomy.step(GOOD)


def test_unicode_text_flattens_any_text_and_back():
    """``flatten`` kept ``Text``'s printable-ASCII charset: ``KeyError: '\\n'`` on every prompt."""
    from gymnasium.spaces.utils import flatdim, flatten, flatten_space, unflatten

    space = gym.make("RecRating-Synthetic-v0").unwrapped.action_space
    for text in ("", "line one\nhéllo ٥ 評価 🍜\t\x00", "\ud800 lone surrogate"):
        flat = flatten(space, text)
        assert flat.shape == (flatdim(space),) and flatten_space(space).contains(flat)
        assert unflatten(space, flat) == text
    with pytest.raises(ValueError, match="at most 100000 characters"):
        flatten(space, "x" * 100_001)


@pytest.mark.parametrize(("env_id", "action"), [
    ("RecRating-Synthetic-v0", GOOD),
    ("RecRank-Synthetic-v0", "<rank>[1]</rank>"),
    ("RecRatingTools-Synthetic-v0", "<call>user_stats()</call>"),
])
def test_async_make_vec_resets_and_steps_through_shared_memory(env_id, action):
    """``make_vec(..., vectorization_mode="async")`` crashed on the first reset (``KeyError: '\\n'``
    in the worker's shared-memory write)."""
    single = gym.make(env_id, split="valid").unwrapped
    envs = gym.make_vec(env_id, num_envs=2, vectorization_mode="async", split="valid")
    try:
        for seed in (0, 1):  # the second reset must not return the first's prompts
            observations, infos = envs.reset(seed=seed)
            assert isinstance(observations, tuple)
            assert list(observations) == [single.reset(options={"index": int(i)})[0] for i in infos["index"]]
        observations, rewards, _, _, infos = envs.step((action, action + " é\n"))
        assert rewards.shape == (2,) and all(isinstance(o, str) for o in observations)
        if env_id.startswith("RecRatingTools"):
            assert observations[0].startswith("Result of user_stats():\n")
    finally:
        envs.close()


@pytest.mark.parametrize(("env_id", "action"), [
    ("RecRating-Synthetic-v0", GOOD),
    ("RecRank-Synthetic-v0", "<rank>[1]</rank>"),
    ("RecRatingTools-Synthetic-v0", "<call>user_stats()</call>"),
])
def test_render_mode_none_or_ansi(env_id, action):
    """``gym.make(env_id, render_mode=None)`` was a TypeError ("takes no argument(s) render_mode")."""
    import warnings

    from recgym.data.registry import environment_arguments

    assert gym.make(env_id, render_mode=None).unwrapped.render_mode is None
    env = gym.make(env_id, split="valid", render_mode="ansi")
    assert "render_mode" in environment_arguments(type(env.unwrapped))  # never passed on to the dataset loader
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env.unwrapped)
    obs, _ = env.reset(seed=0)
    assert env.render() == obs
    returned = env.step(action)[0]
    assert env.render().startswith(f"[assistant]\n{action}\n\n")
    assert (f"[user]\n{returned}" if returned else "[reward]\n") in env.render()
    with pytest.raises(ValueError, match="render_mode must be None or 'ansi'"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gym.make(env_id, render_mode="human")


def test_a_custom_reward_must_return_a_reward_breakdown():
    """A reward returning a float was accepted, then step raised "'float' object has no attribute 'as_dict'"."""
    env = gym.make("RecRating-Synthetic-v0", split="valid", reward=lambda completion, target, scale: 1.0)
    env.reset(seed=0)
    with pytest.raises(TypeError, match=r"the reward returned float: reward\(completion, target, scale\) must "
                                        r"return a recgym.rewards.RewardBreakdown"):
        env.step(GOOD)


def reward_totalling(total):
    def my_reward(completion, target, scale):
        return RewardBreakdown(0.5, 0.0, total, None, None, True)
    return my_reward


@pytest.mark.parametrize("env_id", ["RecRating-Synthetic-v0", "RecRatingTools-Synthetic-v0"])
@pytest.mark.parametrize(("total", "error", "words"), [
    (float("nan"), ValueError, "nan: it must be a finite number"),
    (float("-inf"), ValueError, "-inf: it must be a finite number"),
    ("1.0", TypeError, r"'1.0' \(str\): it must be a finite number"),
    (True, TypeError, r"True \(bool\): it must be a finite number"),
])
def test_a_custom_reward_total_must_be_a_finite_number(env_id, total, error, words):
    """A NaN or inf total came back from step as the reward; a str total was coerced to a float."""
    env = gym.make(env_id, split="valid", reward=reward_totalling(total)).unwrapped
    env.reset(options={"index": 0})
    with pytest.raises(error, match=rf"^the reward reward_totalling.<locals>.my_reward returned a total of {words}$"):
        env.step(GOOD)
    good = gym.make(env_id, split="valid", reward=reward_totalling(np.float32(0.25))).unwrapped
    good.reset(options={"index": 0})
    assert good.step(GOOD)[1] == 0.25


@pytest.mark.parametrize("env_id", ["RecRating-Synthetic-v0", "RecRatingTools-Synthetic-v0", "RecRank-Synthetic-v0"])
@pytest.mark.parametrize(("kwargs", "error", "words"), [
    ({"max_observation_length": -5}, ValueError, "max_observation_length must be >= 1, got -5"),
    ({"max_observation_length": "100"}, TypeError, "max_observation_length must be an int >= 1, got '100'"),
    ({"max_action_length": 10.5}, TypeError, "max_action_length must be an int >= 1, got 10.5"),
    ({"max_action_length": None}, TypeError, "max_action_length must be an int >= 1, got None"),
])
def test_space_lengths_are_whole_numbers_named_in_the_error(env_id, kwargs, error, words):
    """Before: gymnasium's Text errors ("Expects the max_length to be an integer"), naming no argument."""
    with pytest.raises(error, match=rf"^{words}"):  # gymnasium.make adds where a TypeError was raised
        gym.make(env_id, **kwargs)


@pytest.mark.parametrize(("kwargs", "error", "words"), [
    ({"noise": -1.0}, ValueError, "noise must be a finite number >= 0, got -1.0"),
    ({"noise": float("nan")}, ValueError, "noise must be a finite number >= 0, got nan"),
    ({"choice_temperature": float("nan")}, ValueError, "choice_temperature must be a finite number >= 0, got nan"),
    ({"choice_temperature": float("inf")}, ValueError, "choice_temperature must be a finite number >= 0, got inf"),
    ({"choice_temperature": -0.5}, ValueError, "choice_temperature must be a finite number >= 0, got -0.5"),
])
def test_synthetic_world_knobs_are_finite_numbers_named_in_the_error(kwargs, error, words):
    """noise=-1 was numpy's "high - low < 0", noise=nan an OverflowError; choice_temperature=nan
    was taken as uniform visits."""
    with pytest.raises(error, match=rf"^{words}$"):
        gym.make("RecRating-Synthetic-v0", num_users=20, **kwargs)


def test_a_reward_class_is_refused_for_its_instance():
    """``reward=RatingReward`` was called as RatingReward(completion, target, scale) at the first step."""
    from recgym.rewards import RatingReward

    with pytest.raises(TypeError, match=r"reward must be a RatingReward or a callable like it \(None: the default\), "
                                        r"got <class 'recgym.rewards.RatingReward'>"):
        gym.make("RecRating-Synthetic-v0", reward=RatingReward)
