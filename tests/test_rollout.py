"""Group rollouts through the synthetic world with a tiny random Llama (fast) and a scripted policy."""

from __future__ import annotations

import numpy as np
import pytest
from tiny_lm import tiny_model, tiny_tokenizer

import recgym  # noqa: F401
from recgym.agents.policies.hf import HFPolicy
from recgym.agents.rollout.batch import pack_batch, rollout_metrics
from recgym.agents.rollout.single_turn import collect
from recgym.agents.types import Completion, SamplingParams
from recgym.envs.vector import make_group_vec

ENV = "RecRating-Synthetic-v0"


class ScriptedTokenPolicy:
    """Answers a fixed completion per sample in the group (token ids made up, logprobs -1)."""

    def __init__(self, texts):
        self.texts = texts
        self.calls = []

    def generate(self, prompts, n=1, sampling=None):
        self.calls.append((len(prompts), n))
        return [
            [Completion(self.texts[j % len(self.texts)], [1, 2, 3], [5] * (j + 1), [-1.0] * (j + 1),
                        "length" if j == n - 1 else "stop") for j in range(n)]
            for _ in prompts
        ]


def test_collect_with_tiny_hf_policy():
    env = make_group_vec(ENV, num_prompts=2, group_size=3)
    policy = HFPolicy(tiny_model(), tiny_tokenizer(), batch_size=6)
    batch, metrics = collect(env, policy, 2, 3, SamplingParams(max_new_tokens=8, seed=0), seed=0)
    assert len(batch) == 6 and batch.group_size == 3
    assert batch.group_ids.tolist() == [0, 0, 0, 1, 1, 1]
    assert batch.prompt_ids.shape[0] == 6 and batch.completion_ids.shape[1] <= 8
    # left-padded prompts: the mask ends with ones; right-padded completions: it starts with them
    assert batch.prompt_mask[:, -1].all()
    lengths = batch.completion_mask.sum(1)
    for row in range(6):
        assert batch.completion_mask[row, : lengths[row]].all() and not batch.completion_mask[row, lengths[row]:].any()
        assert (batch.old_logprobs[row, lengths[row]:] == 0).all()
    # one prompt per group: every row of a group has the same prompt ids
    for g in range(2):
        rows = batch.prompt_ids[g * 3 : g * 3 + 3]
        assert (rows == rows[0]).all()
    assert set(batch.reward_components) >= {"format", "accuracy", "total"}
    np.testing.assert_allclose(batch.reward_components["total"], batch.rewards, atol=1e-6)
    assert metrics["tokens_generated"] == int(lengths.sum())
    assert 0 <= metrics["clipped_ratio"] <= 1 and metrics["gen_seconds"] > 0
    assert batch.infos[0]["index"] == batch.infos[2]["index"] and "target_rating" in batch.infos[0]


def test_collect_one_policy_call_and_metrics():
    good = "<analyze user>a</analyze user><analyze item>b</analyze item><match>c</match><rate>4</rate>"
    policy = ScriptedTokenPolicy([good, "no tags at all"])
    env = make_group_vec(ENV, num_prompts=3, group_size=2)
    batch, metrics = collect(env, policy, sampling=SamplingParams(), indices=[0, 1, 2])
    assert policy.calls == [(3, 2)]  # one batched call, group_size completions per distinct prompt
    assert batch.rewards.shape == (6,)
    assert batch.reward_components["format"].tolist() == [0.5, -0.5] * 3
    assert metrics["clipped_ratio"] == pytest.approx(0.5)
    assert metrics["zero_std_group_frac"] == 0.0
    assert metrics["reward/format"] == pytest.approx(0.0)
    assert [i["index"] for i in batch.infos] == [0, 0, 1, 1, 2, 2]
    identical = ScriptedTokenPolicy([good])
    _, m2 = collect(env, identical, indices=[0, 1, 2])
    assert m2["zero_std_group_frac"] == 1.0


def test_collect_checks():
    env = make_group_vec(ENV, num_prompts=2, group_size=2)
    with pytest.raises(ValueError, match="group_size"):
        collect(env, ScriptedTokenPolicy(["x"]), num_prompts=2, group_size=4)
    bad = Completion("x", [1], [1, 2], [-1.0], "stop")
    with pytest.raises(ValueError, match="differ in length"):
        pack_batch([bad, bad], [0.0, 0.0], [{}, {}], 2)
    batch, _ = collect(ENV, ScriptedTokenPolicy(["x"]), num_prompts=1, group_size=2, seed=1)
    assert len(batch) == 2


def test_rollout_metrics_leave_out_nonfinite_rewards():
    """A custom reward's NaN made reward_mean NaN and counted its group as one with spread."""
    policy = ScriptedTokenPolicy(["a", "b", "c"])
    batch, _ = collect(make_group_vec(ENV, num_prompts=2, group_size=3), policy, indices=[0, 1])
    batch.rewards[:] = np.array([np.nan, 1.0, 1.0, 0.0, 1.0, np.inf], dtype=batch.rewards.dtype)
    metrics = rollout_metrics(batch, 3)
    assert metrics["reward_mean"] == pytest.approx(0.75) and np.isfinite(metrics["reward_std"])
    assert metrics["zero_std_group_frac"] == 0.5  # the first group's finite rewards agree
