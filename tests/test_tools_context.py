"""A full context ends one episode of a group while the others play on: through the trainer's
collection path (the group vector env) and through evaluation's multi-turn path."""

from __future__ import annotations

import gymnasium as gym
import pytest
from tiny_lm import tiny_tokenizer

import recgym  # noqa: F401
from recgym.agents.evaluation import evaluate
from recgym.agents.policies.base import BasePolicy, PromptEncoder
from recgym.agents.rollout.single_turn import collect
from recgym.agents.types import Completion, SamplingParams
from recgym.envs import make_group_vec
from recgym.rewards import FOUR_STEP_TAGS

ENV = "RecRatingTools-Synthetic-v0"
ANSWER = "".join(f"<{t}>{'4' if t == 'rate' else 'ok'}</{t}>" for t in FOUR_STEP_TAGS)
LONG = "<call>recent_reviews(limit=10)</call>"  # a long result
SHORT = "<call>user_stats()</call>"  # a short one
SAMPLING = SamplingParams(max_new_tokens=64, temperature=0.0)


class LongShortPolicyMock(BasePolicy):
    """A mock token-level policy: the first turn of each prompt's two samples calls LONG and SHORT,
    every later turn answers."""

    supports_token_ids = True

    def __init__(self) -> None:
        self.tokenizer = tiny_tokenizer()
        self.encoder = PromptEncoder(self.tokenizer)
        self.turn = 0
        self.max_context = None

    def _ids(self, text: str) -> list[int]:
        return [*self.tokenizer(text, add_special_tokens=False)["input_ids"], self.tokenizer.eos_token_id]

    def _generate_ids(self, prompt_ids, n, sampling):
        self.turn += 1
        texts = [LONG, SHORT][:n] if self.turn == 1 else [ANSWER] * n
        return [[Completion(t, list(ids), self._ids(t), [-0.1] * len(self._ids(t)), "stop") for t in texts]
                for ids in prompt_ids]


def room_for_the_short_result_only(policy: LongShortPolicyMock, messages) -> int:
    """A context that holds the prompt, a turn and the short result, not the long result."""
    return len(policy.encoder.encode(messages)) + SAMPLING.max_new_tokens + 200


def test_one_episode_of_a_group_fills_its_context_while_the_other_plays_on():
    """It raised TypeError (actions[0] ... got NoneType): the vector env was never told episode 0 ended."""
    policy = LongShortPolicyMock()
    vec = make_group_vec(ENV, num_prompts=1, group_size=2, split="valid")
    policy.max_context = room_for_the_short_result_only(policy, vec.reset(options={"indices": [3]})[1][0]["messages"])
    batch, metrics = collect(vec, policy, indices=[3], sampling=SAMPLING)
    assert batch.truncated.tolist() == [True, False]
    assert batch.infos[0]["truncation"].startswith("the context of") and "truncation" not in batch.infos[1]
    assert batch.rewards[0] == pytest.approx(-0.5 - 0.02)
    assert batch.infos[1]["parsed_rating"] == 4 and batch.infos[1]["turn"] == 2  # called, then answered
    assert not batch.observation_mask[0].any() and batch.observation_mask[1].any()  # 0's long result is gone
    assert metrics["turns_mean"] == 1.5


def test_evaluation_plays_the_other_episodes_on_after_one_context_fills():
    policy = LongShortPolicyMock()
    env = gym.make(ENV, split="valid")
    policy.max_context = room_for_the_short_result_only(policy, env.unwrapped.reset(options={"index": 0})[1]["messages"])
    result = evaluate(env, policy, n=1, sampling=SAMPLING, samples_per_prompt=2, baselines=False)
    record = result.records[0]
    assert record["truncated"] == [True, False] and record["turns"] == [1, 2]
