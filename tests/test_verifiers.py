"""The verifiers adapter ``recgym_verifiers``: loaded by verifiers' own loader, its dataset is the
split's prompts with the target, its rubric's two parts sum to the environment's reward, and its
own ``evaluate`` runs against a real OpenAI-compatible server."""

from __future__ import annotations

import gymnasium as gym
import pytest

vf = pytest.importorskip("verifiers")

import recgym  # noqa: F401  (registers the environments)

ENV = "RecRating-Synthetic-v0"
KWARGS = {"max_user_history": 3, "max_item_history": 2}


@pytest.fixture(scope="module")
def env():
    return vf.load_environment("recgym-verifiers", gym_id=ENV, split="test", num_samples=4, **KWARGS)


def test_verifiers_loader_finds_the_adapter(env):
    gym_env = gym.make(ENV, split="test", **KWARGS)
    assert isinstance(env, vf.SingleTurnEnv)
    dataset = env.get_dataset()
    assert len(dataset) == 4 and {"prompt", "answer", "info"} <= set(dataset.column_names)
    targets = gym_env.unwrapped.dataset.targets("test")
    for row in dataset:
        _, info = gym_env.reset(options={"index": row["info"]["index"]})
        assert row["prompt"] == info["messages"]
        assert float(row["answer"]) == row["info"]["target_rating"] == float(targets[row["info"]["index"]])
        assert row["info"]["scale"] == [1.0, 5.0, 1.0]


def test_direct_call_takes_env_id():
    from recgym_verifiers import load_environment

    direct = load_environment(ENV, split="valid", num_samples=2, seed=1, **KWARGS)
    assert direct.env_args["env_id"] == ENV and len(direct.get_dataset()) == 2


def test_minus_one_samples_is_the_whole_split():
    """verifiers' convention: ``num_samples=-1`` means all."""
    from recgym_verifiers import load_environment

    every = load_environment(ENV, split="valid", num_samples=-1, seed=0, **KWARGS).get_dataset()
    assert sorted(i["index"] for i in every["info"]) == list(range(300))
    with pytest.raises(ValueError, match="must be >= 1, got 0"):
        load_environment(ENV, split="valid", num_samples=0, **KWARGS)


@pytest.mark.parametrize("text", [
    "<analyze user>likes it</analyze user><analyze item>good</analyze item><match>yes</match><rate>4</rate>",
    "<analyze user>a</analyze user><analyze item>b</analyze item><match>c</match><rate>1</rate>",
    "<rate>3</rate> without the other steps",
    "no tags, no rating",
    "<analyze user>a</analyze user><analyze item>b</analyze item><match>c</match><rate>9</rate>",
])
def test_rubric_parts_sum_to_the_environment_reward(env, text):
    rubric = env.rubric.rubrics[0]  # verifiers appends its own zero-weight monitor rubric
    assert [f.__name__ for f in rubric.funcs] == ["format_reward", "accuracy_reward"] and rubric.weights == [1, 1]
    gym_env = gym.make(ENV, split="test", **KWARGS)
    for row in env.get_dataset():
        gym_env.reset(options={"index": row["info"]["index"]})
        _, reward, *_ = gym_env.step(text)
        completion = [{"role": "assistant", "content": text}]
        parts = [f(completion=completion, answer=row["answer"], info=row["info"]) for f in rubric.funcs]
        assert sum(w * p for w, p in zip(rubric.weights, parts)) == pytest.approx(reward)


@pytest.mark.slow
def test_evaluate_against_a_real_server(env, openai_server):
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=openai_server, api_key="EMPTY")
    results = env.evaluate_sync(client=client, model="smollm2-135m-instruct", num_examples=3,
                                sampling_args={"max_tokens": 48, "temperature": 0.0})
    outputs = results["outputs"]
    assert len(outputs) == 3
    gym_env = gym.make(ENV, split="test", **KWARGS)
    for output in outputs:
        assert not output.get("error"), output.get("error")
        text = output["completion"][-1]["content"]
        assert text.strip()
        gym_env.reset(options={"index": output["info"]["index"]})
        _, reward, *_ = gym_env.step(text)
        metrics = output["metrics"]
        assert output["reward"] == pytest.approx(reward)
        assert metrics["format_reward"] + metrics["accuracy_reward"] == pytest.approx(reward)
