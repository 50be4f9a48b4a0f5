import gymnasium as gym
import pytest

import recgym  # noqa: F401
from recgym.agents.evaluation import evaluate
from recgym.agents.teachers.scripted import (
    FormatBreakingPolicy,
    SyntheticReasonerPolicy,
    UserAveragePolicy,
)
from recgym.rewards import parse_completion


def evaluate_on_valid(policy, n=None):
    env = gym.make("RecRating-Synthetic-v0", split="valid")
    return evaluate(env, policy, n=n, baselines=False).metrics


def test_reasoner_reads_the_text_and_beats_the_user_average():
    reasoner = evaluate_on_valid(SyntheticReasonerPolicy())
    user_avg = evaluate_on_valid(UserAveragePolicy())
    assert reasoner.format_rate == 1.0 and reasoner.coverage == 1.0
    assert reasoner.mae < user_avg.mae - 0.1
    assert reasoner.mean_reward > user_avg.mean_reward


def test_reasoner_traces_name_the_traits_they_use():
    env = gym.make("RecRating-Synthetic-v0", split="train")
    texts = [SyntheticReasonerPolicy().act(env.reset(options={"index": i})[0]) for i in range(30)]
    assert all(parse_completion(t).format_ok for t in texts)
    assert any(": disliked" in t for t in texts) and any(": liked" in t for t in texts)
    assert len(set(texts)) == len(texts)  # traces differ from prompt to prompt


def test_format_breaking_policy_keeps_the_number_but_loses_the_format():
    broken = evaluate_on_valid(FormatBreakingPolicy(), n=50)
    tagged = evaluate_on_valid(UserAveragePolicy(), n=50)
    assert broken.format_rate == 0.0 and tagged.format_rate == 1.0
    assert broken.mae == tagged.mae
    assert broken.mean_reward == pytest.approx(tagged.mean_reward - 1.0)


def test_scripted_policies_are_policies_with_n_completions_per_prompt():
    env = gym.make("RecRating-Synthetic-v0")
    _, info = env.reset(seed=0)
    groups = UserAveragePolicy().generate([info["messages"], env.reset(seed=1)[0]], n=3)
    assert [len(g) for g in groups] == [3, 3]
    assert all(parse_completion(c.text).format_ok and c.finish_reason == "stop" for g in groups for c in g)
