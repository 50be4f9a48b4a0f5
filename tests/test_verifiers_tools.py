"""The verifiers adapter for the tool-using environment: a MultiTurnEnv whose environment turns are
the Gymnasium environment's tool results and whose rubric sums to its reward."""

from __future__ import annotations

import asyncio

import gymnasium as gym
import pytest

vf = pytest.importorskip("verifiers")

import recgym  # noqa: F401  (registers the environments)
from recgym.rewards import FOUR_STEP_TAGS

ENV = "RecRatingTools-Synthetic-v0"
ANSWER = "".join(f"<{t}>{'4' if t == 'rate' else 'ok'}</{t}>" for t in FOUR_STEP_TAGS)
CALL = "<call>similar_items(limit=2)</call>"


@pytest.fixture(scope="module")
def env():
    return vf.load_environment("recgym-verifiers", gym_id=ENV, split="test", num_samples=3, max_turns=3)


def test_tool_ids_load_as_a_multi_turn_env(env):
    assert isinstance(env, vf.MultiTurnEnv) and not isinstance(env, vf.SingleTurnEnv) and env.max_turns == 3
    gym_env = gym.make(ENV, split="test", max_turns=3)
    for row in env.get_dataset():
        _, info = gym_env.reset(options={"index": row["info"]["index"]})
        assert row["prompt"] == info["messages"]
        assert float(row["answer"]) == row["info"]["target_rating"]


def test_minus_one_samples_is_the_whole_split():
    every = vf.load_environment("recgym-verifiers", gym_id=ENV, split="valid", num_samples=-1).get_dataset()
    assert sorted(i["index"] for i in every["info"]) == list(range(len(gym.make(ENV, split="valid").unwrapped)))
    with pytest.raises(RuntimeError, match="must be >= 1, got 0"):  # verifiers' loader wraps the ValueError
        vf.load_environment("recgym-verifiers", gym_id=ENV, split="valid", num_samples=0)


def test_env_turns_are_the_tool_results(env):
    row = env.get_dataset()[1]
    state = {"prompt": row["prompt"], "info": row["info"]}
    messages = [*row["prompt"], {"role": "assistant", "content": CALL}]
    reply = asyncio.run(env.env_response(messages, state))
    gym_env = gym.make(ENV, split="test", max_turns=3)
    gym_env.reset(options={"index": row["info"]["index"]})
    obs, *_ = gym_env.step(CALL)
    assert reply == [{"role": "user", "content": obs}] and "final_env_response" not in state
    messages += [*reply, {"role": "assistant", "content": ANSWER}]
    assert asyncio.run(env.env_response(messages, state)) == [] and state["final_env_response"] == []


@pytest.mark.parametrize("turns", [[CALL, ANSWER], [ANSWER], ["hm", CALL, "<call>x(</call>"], [CALL]])
def test_rubric_parts_sum_to_the_environment_reward(env, turns):
    rubric = env.rubric.rubrics[0]
    names = [f.__name__ for f in rubric.funcs]
    assert names == ["format_reward", "accuracy_reward", "tool_cost_reward", "tool_calls", "tokens_read"]
    gym_env = gym.make(ENV, split="test", max_turns=3)
    for row in env.get_dataset():
        gym_env.reset(options={"index": row["info"]["index"]})
        ended = False
        for text in turns:
            _, reward, terminated, truncated, info = gym_env.step(text)
            if terminated or truncated:
                ended = True
                break
        if not ended:  # the rollout stopped before an answer (e.g. a prompt too long): truncation
            _, reward, _, _, info = gym_env.unwrapped.end_episode()
        completion = []
        for text in turns:
            completion += [{"role": "assistant", "content": text}, {"role": "user", "content": "(tool result)"}]
        parts = [f(completion=completion, answer=row["answer"], info=row["info"]) for f in rubric.funcs]
        assert sum(w * p for w, p in zip(rubric.weights, parts)) == pytest.approx(reward)
        assert parts[3] == info["num_calls"] and parts[4] == info["tokens_read"]


@pytest.mark.slow
def test_evaluate_against_a_real_server(env, openai_server):
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=openai_server, api_key="EMPTY")
    results = env.evaluate_sync(client=client, model="smollm2-135m-instruct", num_examples=2,
                                sampling_args={"max_tokens": 48, "temperature": 0.0})
    outputs = results["outputs"]
    assert len(outputs) == 2
    gym_env = gym.make(ENV, split="test", max_turns=3)
    for output in outputs:
        assert not output.get("error"), output.get("error")
        turns = [m["content"] for m in output["completion"] if m["role"] == "assistant"]
        assert 1 <= len(turns) <= 3
        gym_env.reset(options={"index": output["info"]["index"]})
        for text in turns:
            _, reward, terminated, truncated, _ = gym_env.step(text)
            if terminated or truncated:
                break
        else:
            _, reward, *_ = gym_env.unwrapped.end_episode()
        assert output["reward"] == pytest.approx(reward)
