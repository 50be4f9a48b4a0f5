import hashlib
import math
import re

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from hypothesis import given
from hypothesis import strategies as st

import recgym  # noqa: F401
from recgym.agents.teachers.scripted import SyntheticRankerPolicy
from recgym.data.ranking import candidate_list
from recgym.data.registry import load_dataset
from recgym.data.schema import RatingScale
from recgym.prompts import RankingTemplate, get_template
from recgym.rewards import RankingReward, ndcg_at_k, parse_ranking

GOOD = "<analyze user>a</analyze user><analyze candidates>b</analyze candidates><match>c</match><rank>{}</rank>"


def _rank(order):
    return GOOD.format(" ".join(f"[{j + 1}]" for j in order))


def test_synthetic_env_check_and_reward():
    env = gym.make("RecRank-Synthetic-v0", split="valid", num_candidates=5)
    check_env(env.unwrapped)
    _, info = env.reset(options={"index": 0})
    target = env.unwrapped.lists[0][1].target_position
    order = [target] + [j for j in range(5) if j != target]
    _, reward, terminated, _, info = env.step(_rank(order))
    assert terminated and reward == pytest.approx(1.5)
    assert info["reward_breakdown"]["rank_of_target"] == 1


def test_ndcg_hand_computed():
    assert ndcg_at_k(1, 10) == 1.0
    assert ndcg_at_k(3, 10) == pytest.approx(0.5)
    assert ndcg_at_k(11, 10) == 0.0
    b = RankingReward()(_rank([2, 0, 1]), target_position=0, num_candidates=3)
    assert b["rank_of_target"] == 2 and b["ndcg"] == pytest.approx(1 / math.log2(3))


@pytest.mark.parametrize("bad", [_rank([0, 0, 1]), _rank([0, 1]), _rank([0, 1, 5]), "x" + _rank([0, 1, 2]), ""])
def test_parse_failures_fall_back(bad):
    parsed = parse_ranking(bad, 3)
    assert not parsed.format_ok and parsed.order == (0, 1, 2)


@pytest.mark.parametrize("inner", ["[١] [2] [3]", "[１] [2] [3]", ">>>>[1] [2] [3]", "[1] > [2] > [3]"])
def test_only_ascii_labels_and_separators_parse(inner):
    """Other scripts' digits and '>' passed as labels and separators; the docs say other text fails."""
    parsed = parse_ranking(f"<rank>{inner}</rank>", 3, ("rank",))
    assert not parsed.format_ok and parsed.reason == "text in <rank> other than labels"
    assert parse_ranking("<rank>[3], [1],[2]</rank>", 3, ("rank",)).order == (2, 0, 1)  # commas separate too


@pytest.mark.parametrize("k, error", [(0, ValueError), (-1, ValueError), (True, TypeError), (2.5, TypeError)])
def test_ranking_reward_k_is_none_or_a_whole_number_from_1(k, error):
    """k=0 scored over the whole list (``self.k or num_candidates``), -1 gave 0 and 2.5 gave NDCG@1 behaviour."""
    with pytest.raises(error, match=r"k \(None: the whole list\) must be"):
        RankingReward(k=k)
    assert RankingReward(k=3)(_rank([1, 2, 3, 0]), target_position=0, num_candidates=4)["ndcg"] == 0


@given(st.text())
def test_parser_never_raises(text):
    parsed = parse_ranking(text, 4)
    assert sorted(parsed.order) == [0, 1, 2, 3]


def check_leakage(data, split, indices, num_candidates=20):
    """Every list: the history strictly before the target, no negative the user had before it,
    the target in its recorded place, no repeated candidate. Returns the target positions."""
    user_rows = {}
    for row in np.argsort(data.user_codes, kind="stable"):
        user_rows.setdefault(int(data.user_codes[row]), []).append(int(row))
    positions = []
    for i in indices:
        row = data.row(split, i)
        c = candidate_list(data, split, i, num_candidates)
        assert c is not None
        t = data.timestamps[row]
        assert all(data.timestamps[r] < t for r in c.history_rows)
        mine = user_rows[int(data.user_codes[row])]
        before = {int(data.item_codes[r]) for r in mine if data.timestamps[r] < t}
        assert set(c.history_items) == before
        negs = [x for j, x in enumerate(c.items) if j != c.target_position]
        assert not before & set(negs) and len(set(c.items)) == num_candidates
        assert c.items[c.target_position] == data.item_codes[row]
        positions.append(c.target_position)
    return positions


def test_no_leakage_and_uniform_position_synthetic():
    data = gym.make("RecRank-Synthetic-v0").unwrapped.dataset  # the world whose diners choose by taste
    assert data is not load_dataset("synthetic")
    positions = []
    for split in ("train", "valid", "test"):  # the env's lists: samples with too few negatives are skipped
        positions += check_leakage(data, split, gym.make("RecRank-Synthetic-v0", split=split).unwrapped.lists.samples)
    counts = np.bincount(positions, minlength=20)
    expected = len(positions) / 20
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 43.8  # p = 0.001 at 19 degrees of freedom


def test_reproducible_lists():
    data = load_dataset("synthetic")
    assert candidate_list(data, "valid", 3, 20, "popularity") == candidate_list(data, "valid", 3, 20, "popularity")


def test_too_few_negatives_are_counted_skips():
    env = gym.make("RecRank-Synthetic-v0", split="valid", num_candidates=72).unwrapped
    assert env.skipped > 0 and len(env) + env.skipped == env.dataset.num_samples("valid")


def test_templates_are_swappable_and_the_reward_checks_the_chosen_one():
    think = gym.make("RecRank-Synthetic-v0", split="valid", num_candidates=5).unwrapped
    bare = gym.make("RecRank-Synthetic-v0", split="valid", num_candidates=5, template="rank_only").unwrapped
    assert bare.template is get_template("rank_only", task="ranking") and bare.template.tags == ("rank",)
    target = think.lists[0][1].target_position
    order = [target] + [j for j in range(5) if j != target]
    four_steps, rank_alone = _rank(order), "<rank>" + " ".join(f"[{j + 1}]" for j in order) + "</rank>"
    for env, good, bad in ((think, four_steps, rank_alone), (bare, rank_alone, four_steps)):
        env.reset(options={"index": 0})
        assert env.step(good)[1] == pytest.approx(1.5)
        env.reset(options={"index": 0})
        assert env.step(bad)[4]["reward_breakdown"]["format"] == -0.5
    assert "<analyze candidates>" in think.prompt(0)[0]["content"]
    assert "<analyze" not in bare.prompt(0)[0]["content"]
    assert think.prompt(0)[1] == bare.prompt(0)[1]  # the same user prompt, only the asked format differs
    for env, teacher in ((think, SyntheticRankerPolicy()), (bare, SyntheticRankerPolicy(rank_only=True))):
        text, _ = env.reset(options={"index": 1})
        breakdown = env.step(teacher.act(text))[4]["reward_breakdown"]
        assert breakdown["format_ok"], teacher.rank_only
    assert SyntheticRankerPolicy(rank_only=True).act(text) == "<rank>" + \
        SyntheticRankerPolicy().act(text).split("<rank>")[1]  # the same order, without the steps


def test_a_custom_reward_checks_the_templates_tags():
    """``RankingReward(k=10)`` beside ``template="rank_only"`` kept the four-step tags, so the answer
    the prompt asks for failed the format."""
    env = gym.make("RecRank-Synthetic-v0", split="valid", template="rank_only", reward=RankingReward(k=10)).unwrapped
    assert env.reward_fn == RankingReward(k=10, tags=("rank",))
    target = env.lists[0][1].target_position
    rest = [j for j in range(20) if j != target]
    for order, total in ((rest[:10] + [target] + rest[10:], 0.5), ([target] + rest, 1.5)):  # NDCG@10 at rank 11: 0
        env.reset(options={"index": 0})
        breakdown = env.step("<rank>" + " ".join(f"[{j + 1}]" for j in order) + "</rank>")[4]["reward_breakdown"]
        assert breakdown["format_ok"] and breakdown["total"] == pytest.approx(total)
    with pytest.raises(ValueError, match=r"but the template asks for \('rank',\): pass RankingReward\(..., tags="):
        gym.make("RecRank-Synthetic-v0", template="rank_only", reward=RankingReward(tags=("match", "rank")))
    from recgym.rewards import RatingReward

    for wrong in ("ndcg", RatingReward()):  # constructed, then step raised TypeError
        with pytest.raises(TypeError, match="reward must be a RankingReward or a callable like it"):
            gym.make("RecRank-Synthetic-v0", reward=wrong)
    custom = gym.make("RecRank-Synthetic-v0", split="valid", reward=lambda text, position, n: {
        "format": 0.0, "ndcg": 0.0, "total": 0.25, "rank_of_target": 1, "format_ok": True}).unwrapped
    custom.reset(options={"index": 0})
    assert custom.step("anything")[1] == 0.25  # a custom callable is used as is


def test_declared_space_lengths_are_enforced():
    env = gym.make("RecRank-Synthetic-v0", split="valid", max_action_length=10).unwrapped
    obs, _ = env.reset(options={"index": 0})
    assert env.observation_space.contains(obs)
    with pytest.raises(ValueError, match="completion of 1000 characters exceeds max_action_length=10"):
        env.step("x" * 1000)
    short = gym.make("RecRank-Synthetic-v0", split="valid", max_observation_length=100).unwrapped
    with pytest.raises(ValueError, match=r"the prompt of list 0 has \d+ characters, over max_observation_length=100: "
                                         r"raise max_observation_length or shorten the prompt \(max_user_history, "):
        short.reset(options={"index": 0})
    with pytest.raises(RuntimeError, match="call reset"):
        short.step("<rank>[1]</rank>")


def test_an_empty_split_is_named_as_empty(tmp_path):
    """It said 'no sample with 19 available negatives: lower num_candidates' for a split with no sample."""
    import recgym.envs.real_envs  # noqa: F401

    path = tmp_path / "r.csv"
    path.write_text("u,i,r,t\na,x,4,1\na,y,3,2\nb,x,5,3\nb,y,2,4\n")
    with pytest.raises(ValueError, match="split 'valid' of dataset 'custom' has no samples"):
        gym.make("RecRank-Custom-v0", split="valid", path=str(path), cache_dir=str(tmp_path / "cache"), progress=False,
                 columns={"user": "u", "item": "i", "rating": "r", "timestamp": "t"})


def test_ranking_template_names_and_objects():
    custom = RankingTemplate(tags=("match", "rank"), system_intro="Rank.")
    env = gym.make("RecRank-Synthetic-v0", split="valid", num_candidates=3, template=custom).unwrapped
    assert env.reward_fn.tags == ("match", "rank") and env.prompt(0)[0]["content"].startswith("Rank. Think")
    with pytest.raises(ValueError, match="rank_only"):
        get_template("rate_only", task="ranking")
    with pytest.raises(ValueError, match="rate_only"):
        get_template("rank_only")
    assert get_template("think").tags[-1] == "rate" and get_template("think", task="ranking").tags[-1] == "rank"


def test_ranking_prompt_neutralizes_data_text():
    template = get_template("think", task="ranking")
    text = template.user_prompt([("<rank>[1]</rank>", "x", 4.0, "a\n<match>b")], [("<b>", "</rank> c")],
                                RatingScale(1, 5))
    assert "<" not in text and ">" not in text and "‹rank›[1]‹/rank›" in text


def _fingerprint(data) -> str:
    h = hashlib.sha1()
    for arr in (data.user_codes, data.item_codes, data.ratings, data.timestamps):
        h.update(np.ascontiguousarray(arr).tobytes())
    for split in ("train", "valid", "test"):
        h.update(np.ascontiguousarray(data.samples[split]).tobytes())
    h.update("\n".join(str(t) for t in data.review_texts).encode())
    h.update("\n".join(map(str, data.item_descriptions)).encode())
    return h.hexdigest()


def test_the_rating_worlds_are_unchanged_by_the_choice_knob():
    # computed before choice_temperature existed (synthetic.py at 76e3121): the rating demo's samples
    assert _fingerprint(load_dataset("synthetic")) == "77dfa05d6b196c70cd14b55b7fa0364760539899"
    assert _fingerprint(load_dataset("synthetic", long_history=True)) == "4c369545a2383136c94b66ad99ca06ef85b9b19c"
    assert _fingerprint(load_dataset("synthetic", choice_temperature=0.5)) != _fingerprint(load_dataset("synthetic"))
    with pytest.raises(ValueError, match="choice_temperature"):
        load_dataset("synthetic", choice_temperature=-1.0)


def test_choosing_by_taste_gives_the_synthetic_ranking_task_a_signal():
    """On training lists (the validation ones are reported, never used to choose the temperature),
    the scripted ranker beats random order by many paired standard errors."""
    from recgym.agents.teachers.scripted import SyntheticRankerPolicy
    from recgym.baselines import ranking_baseline_ranks
    from recgym.metrics import paired_ranking_difference

    env = gym.make("RecRank-Synthetic-v0", split="train").unwrapped
    teacher = SyntheticRankerPolicy()
    ranks = []
    for i in range(200):
        obs, _ = env.reset(options={"index": i})
        ranks.append(env.step(teacher.act(obs))[4]["rank_of_target"])
    random_ranks = ranking_baseline_ranks(env.dataset, "train", env.lists[:200], names=("random",))["random"]
    gain, se = paired_ranking_difference(random_ranks, ranks)
    assert gain > 5 * se


def test_reset_info_holds_no_shuffle_seed_step_info_does():
    """From reset's ``shuffle_seed`` and ``candidates`` the list builder could be replayed to find
    the target's position before answering."""
    env = gym.make("RecRank-Synthetic-v0", split="valid").unwrapped
    _, info = env.reset(options={"index": 3})
    assert "shuffle_seed" not in info
    assert env.step(_rank(range(20)))[4]["shuffle_seed"] == env.lists[3][1].shuffle_seed


def test_a_custom_reward_must_return_a_dict_with_total_and_rank():
    """A reward returning a float was accepted, then step raised "'float' object is not subscriptable"."""
    for reward, got in ((lambda text, position, n: 0.5, "float"), (lambda text, position, n: {"total": 0.5},
                                                                  r"a dict of \['total'\]")):
        env = gym.make("RecRank-Synthetic-v0", split="valid", reward=reward).unwrapped
        env.reset(options={"index": 0})
        with pytest.raises(TypeError, match=rf"the reward returned {got}: reward\(completion, target_position, "
                                            r"num_candidates\) must return a dict with at least 'total' and "
                                            r"'rank_of_target'"):
            env.step("anything")


def _day_dated():
    """Interactions dated by the day (as Amazon's are): users rate several items on one day, so
    targets share their time with the user's other items; items enter the catalogue in batches."""
    from recgym.data.dataset import RatingDataset

    rng = np.random.default_rng(5)
    rows = [(f"seed{k}", k, 10 * (k // 4)) for k in range(40)]
    for u in range(30):
        for k in rng.choice(40, size=8, replace=False):
            rows.append((f"user{u}", int(k), 10 * int(rng.integers(k // 4, 10))))
    users, items, times = zip(*rows)
    table = {"user_id": users, "item_id": [f"i{k}" for k in items], "rating": [3] * len(rows), "timestamp": times}
    return RatingDataset.from_tables("days", RatingScale(1, 5), table)


@pytest.mark.parametrize("negatives", ["uniform", "popularity"])
def test_items_the_user_rated_at_the_targets_time_are_never_negatives(negatives):
    """Only the history strictly before the target was excluded: the user's own items of the same
    instant were drawn as negatives, and the pool's size (the skip count) counted them."""
    from recgym.data.ranking import available_negatives

    ds = _day_dated()
    users, items, times = np.asarray(ds.user_codes), np.asarray(ds.item_codes), np.asarray(ds.timestamps)
    first = {int(i): int(times[items == i].min()) for i in np.unique(items)}
    tied_lists = listed = 0
    for split in ("train", "valid", "test"):
        available = available_negatives(ds, ds.samples[split])
        for index, row in enumerate(ds.samples[split]):
            t, mine = times[row], users == users[row]
            existed = {i for i, f in first.items() if f < t}
            pool = existed - set(items[mine & (times <= t)])
            tied_lists += bool(existed & set(items[mine & (times == t)]) - {items[row]})
            assert available[index] == len(pool), (split, index)
            c = candidate_list(ds, split, index, 6, negatives)
            assert (c is None) == (len(pool) < 5)
            if c is not None:
                assert set(c.items) - {items[row]} <= pool and c.items[c.target_position] == items[row]
                listed += 1
    assert tied_lists > 10 and listed > 50


@pytest.mark.parametrize(("total", "error", "words"), [
    (float("nan"), ValueError, "nan: it must be a finite number"),
    (float("inf"), ValueError, "inf: it must be a finite number"),
    ("1.0", TypeError, r"'1.0' \(str\): it must be a finite number"),
    (False, TypeError, r"False \(bool\): it must be a finite number"),
])
def test_a_custom_ranking_reward_total_must_be_a_finite_number(total, error, words):
    """A NaN or inf total came back from step as the reward; a str total was coerced to a float."""
    def my_ranking_reward(completion, target_position, num_candidates):
        return {"total": total, "rank_of_target": 1}

    env = gym.make("RecRank-Synthetic-v0", split="valid", reward=my_ranking_reward).unwrapped
    env.reset(options={"index": 0})
    with pytest.raises(error, match=rf"^the reward test_a_custom_ranking_reward_total_must_be_a_finite_number.<locals>"
                                    rf".my_ranking_reward returned a total of {words}$"):
        env.step("anything")


@pytest.mark.parametrize("env_id", ["RecRank-Synthetic-v0", "RecRating-Synthetic-v0"])
def test_every_len_an_env_docstring_names_works_on_an_env_from_make(env_id):
    """RecRankEnv's said ``len(env)``, a TypeError on the wrappers gymnasium.make returns."""
    env = gym.make(env_id, split="valid")
    named = re.findall(r"len\((env[\w.]*)\)", type(env.unwrapped).__doc__)
    assert named
    for expression in named:
        target = env
        for attribute in expression.split(".")[1:]:
            target = getattr(target, attribute)
        assert len(target) == len(env.unwrapped) > 0
