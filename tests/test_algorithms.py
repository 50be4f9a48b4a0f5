"""Algorithms: exact advantages and losses on hand-made batches, and the registry."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from recgym.agents.algorithms import (
    Algorithm,
    LossInputs,
    get_algorithm,
    kl_penalty,
    list_algorithms,
    register_algorithm,
)
from recgym.agents.types import RolloutBatch


def make_batch(rewards, group_ids, completion_len=3) -> RolloutBatch:
    b = len(rewards)
    return RolloutBatch(
        prompt_ids=np.zeros((b, 2), dtype=np.int64),
        prompt_mask=np.ones((b, 2), dtype=bool),
        completion_ids=np.ones((b, completion_len), dtype=np.int64),
        completion_mask=np.ones((b, completion_len), dtype=bool),
        old_logprobs=np.zeros((b, completion_len), dtype=np.float32),
        rewards=np.asarray(rewards, dtype=np.float32),
        group_ids=np.asarray(group_ids, dtype=np.int64),
        truncated=np.zeros(b, dtype=bool),
    )


def inputs(logprobs, old, mask, adv, ref=None, max_len=None, group_ids=None) -> LossInputs:
    mask = torch.tensor(mask, dtype=torch.float32)
    return LossInputs(
        logprobs=torch.tensor(logprobs, dtype=torch.float32, requires_grad=True),
        old_logprobs=torch.tensor(old, dtype=torch.float32),
        mask=mask,
        advantages=torch.tensor(adv, dtype=torch.float32),
        total_sequences=mask.shape[0],
        total_tokens=int(mask.sum()),
        ref_logprobs=None if ref is None else torch.tensor(ref, dtype=torch.float32),
        max_completion_length=max_len,
        group_ids=None if group_ids is None else torch.tensor(group_ids, dtype=torch.int64),
    )


def test_registry_lists_builtins_and_rejects_unknown():
    names = list_algorithms()
    builtins = ("grpo", "dr_grpo", "rloo", "reinforce", "dapo", "gspo", "ppo", "online_dpo")
    assert set(builtins) <= set(names)
    assert all(names[n] for n in builtins)  # one-line docs
    with pytest.raises(KeyError, match="registered"):
        get_algorithm("nope")


def test_register_new_algorithm_and_name_clash():
    @register_algorithm("test_const")
    class Const(Algorithm):
        """Every completion gets advantage 1."""

        def advantages(self, batch):
            return np.ones(len(batch), dtype=np.float32)

    assert get_algorithm("test_const") is Const and Const.name == "test_const"
    with pytest.raises(ValueError, match="already registered"):
        register_algorithm("grpo")(Const)
    with pytest.raises(TypeError):
        register_algorithm("not_an_algo")(object)
    with pytest.raises(TypeError, match="Half does not define advantages"):  # it would stop at step 1
        register_algorithm("half")(type("Half", (Algorithm,), {}))

    for _ in range(2):  # the same definition run again (a notebook cell): the newest counts
        @register_algorithm("test_again")
        class Again(Algorithm):
            def advantages(self, batch):
                return np.zeros(len(batch), dtype=np.float32)
    assert get_algorithm("test_again") is Again
    with pytest.raises(ValueError, match="'test_const' is already registered"):
        register_algorithm("test_const")(Again)


def test_an_algorithm_named_by_file_or_module_path(tmp_path, monkeypatch):
    source = ("import numpy as np\nfrom recgym.agents.algorithms import Algorithm, register_algorithm\n\n"
              "@register_algorithm('test_ones')\nclass Ones(Algorithm):\n"
              "    def advantages(self, batch):\n        return np.ones(len(batch), dtype=np.float32)\n")
    (tmp_path / "my_algos.py").write_text(source)
    cls = get_algorithm(f"{tmp_path}/my_algos.py:Ones")
    assert cls.__name__ == "Ones" and get_algorithm(f"{tmp_path}/my_algos.py:Ones") is cls  # imported once
    assert get_algorithm("test_ones") is cls  # importing registered it
    monkeypatch.syspath_prepend(str(tmp_path))
    assert get_algorithm("my_algos:Ones").__qualname__ == "Ones"
    for target, words in ((f"{tmp_path}/none.py:Ones", "does not exist"), ("no_such_module:X", "cannot import"),
                          (f"{tmp_path}/my_algos.py:np", "no Algorithm subclass named 'np'")):
        with pytest.raises(KeyError, match=words):
            get_algorithm(target)


def test_grpo_advantages_exact():
    # group 0: rewards 1, 2, 3 -> mean 2, sample std 1; group 1: all equal -> 0
    batch = make_batch([1.0, 2.0, 3.0, 5.0, 5.0, 5.0], [0, 0, 0, 1, 1, 1])
    adv = get_algorithm("grpo")(advantage_epsilon=0.0 + 1e-12).advantages(batch)
    np.testing.assert_allclose(adv, [-1, 0, 1, 0, 0, 0], atol=1e-6)
    adv = get_algorithm("grpo")(advantage_epsilon=1.0).advantages(batch)
    np.testing.assert_allclose(adv, [-0.5, 0, 0.5, 0, 0, 0], atol=1e-6)
    adv = get_algorithm("grpo")(scale_rewards=False).advantages(batch)
    np.testing.assert_allclose(adv, [-1, 0, 1, 0, 0, 0], atol=1e-6)


def test_grpo_groups_need_not_be_contiguous():
    batch = make_batch([1.0, 10.0, 3.0, 20.0], [7, 9, 7, 9])
    adv = get_algorithm("grpo")(advantage_epsilon=1e-12).advantages(batch)
    s = math.sqrt(2.0)  # std(ddof=1) of {1, 3} is sqrt(2); of {10, 20} is 5*sqrt(2)
    np.testing.assert_allclose(adv, [-1 / s, -1 / s, 1 / s, 1 / s], rtol=1e-5)


def test_dr_grpo_rloo_reinforce_advantages_exact():
    batch = make_batch([0.0, 1.0, 2.0, 4.0], [0, 0, 1, 1])
    np.testing.assert_allclose(get_algorithm("dr_grpo")().advantages(batch), [-0.5, 0.5, -1, 1])
    # G=2: leave-one-out baseline is the other reward
    np.testing.assert_allclose(get_algorithm("rloo")().advantages(batch), [-1, 1, -2, 2])
    # batch mean 1.75, groups ignored
    np.testing.assert_allclose(
        get_algorithm("reinforce")().advantages(batch), [-1.75, -0.75, 0.25, 2.25]
    )
    batch3 = make_batch([0.0, 3.0, 6.0], [0, 0, 0])
    # A_0 = 0 - (3+6)/2 = -4.5 ; A_1 = 3 - 3 = 0 ; A_2 = 6 - 1.5 = 4.5
    np.testing.assert_allclose(get_algorithm("rloo")().advantages(batch3), [-4.5, 0, 4.5])


def test_unequal_group_sizes_still_work_per_group():
    batch = make_batch([1.0, 3.0, 7.0], [0, 0, 1])
    adv = get_algorithm("rloo")().advantages(batch)
    np.testing.assert_allclose(adv, [-2, 2, 0])  # a singleton group gets no signal


def test_grpo_loss_on_policy_equals_minus_mean_advantage_and_gradient():
    # ratio 1 everywhere: loss = -mean over sequences of A; d loss / d logp_t = -A / (len * B)
    mask = [[1, 1, 0], [1, 1, 1]]
    x = inputs([[0.0] * 3, [0.0] * 3], [[0.0] * 3, [0.0] * 3], mask, [2.0, -1.0])
    loss, stats = get_algorithm("grpo")().loss(x)
    assert loss.item() == pytest.approx(-(2.0 - 1.0) / 2)
    loss.backward()
    expected = torch.tensor([[-2.0 / 2 / 2, -2.0 / 2 / 2, 0.0], [1.0 / 3 / 2] * 3])
    torch.testing.assert_close(x.logprobs.grad, expected)
    assert stats["clip_fraction"] == 0.0


def test_grpo_loss_clips_ratio():
    # ratio e^{0.5} ~ 1.65 > 1.2 with A>0: clipped to 1.2, no gradient; A<0: unclipped min
    lp = math.log(1.65)
    x = inputs([[lp], [lp]], [[0.0], [0.0]], [[1], [1]], [1.0, -1.0])
    loss, stats = get_algorithm("grpo")(clip_epsilon=0.2).loss(x)
    # seq0: -min(1.65*1, 1.2*1) = -1.2 ; seq1: -min(-1.65, -1.2) = 1.65 ; mean = 0.225
    assert loss.item() == pytest.approx((-1.2 + 1.65) / 2, abs=1e-5)
    loss.backward()
    assert x.logprobs.grad[0, 0].item() == 0.0
    assert x.logprobs.grad[1, 0].item() == pytest.approx(1.65 / 2, abs=1e-5)
    assert stats["clip_fraction"] == pytest.approx(0.5)  # row 1's gradient is not clipped: not counted


def test_token_vs_sequence_aggregation():
    mask = [[1, 0, 0], [1, 1, 1]]
    per_tok = [[0.0] * 3, [0.0] * 3]
    adv = [[3.0, 0, 0], [1.0, 1.0, 1.0]]
    seq = get_algorithm("grpo")(loss_aggregation="sequence").loss(inputs(per_tok, per_tok, mask, adv))
    tok = get_algorithm("grpo")(loss_aggregation="token").loss(inputs(per_tok, per_tok, mask, adv))
    assert seq[0].item() == pytest.approx(-(3.0 + 1.0) / 2)
    assert tok[0].item() == pytest.approx(-(3.0 + 3.0) / 4)


def test_dr_grpo_constant_normalizer():
    mask = [[1, 0, 0, 0], [1, 1, 0, 0]]
    z = [[0.0] * 4, [0.0] * 4]
    loss, _ = get_algorithm("dr_grpo")().loss(inputs(z, z, mask, [1.0, 1.0], max_len=10))
    assert loss.item() == pytest.approx(-3.0 / (2 * 10))


def test_reinforce_loss_has_no_ratio():
    lp = [[-2.0, -1.0]]
    loss, _ = get_algorithm("reinforce")().loss(inputs(lp, [[5.0, 5.0]], [[1, 1]], [2.0]))
    assert loss.item() == pytest.approx(-2.0 * (-3.0))  # one sequence: its token sum


def test_kl_estimators_and_penalty():
    lp, ref = torch.tensor([0.0, -1.0]), torch.tensor([-1.0, -1.0])
    torch.testing.assert_close(kl_penalty(lp, ref, "k1"), torch.tensor([1.0, 0.0]))
    torch.testing.assert_close(kl_penalty(lp, ref, "k2"), torch.tensor([0.5, 0.0]))
    torch.testing.assert_close(kl_penalty(lp, ref, "k3"), torch.tensor([math.exp(-1) - 1 + 1, 0.0]))
    x = inputs([[0.0, -1.0]], [[0.0, -1.0]], [[1, 1]], [0.0], ref=[[-1.0, -1.0]])
    loss, stats = get_algorithm("grpo")(beta=0.5).loss(x)
    assert stats["kl"] == pytest.approx(math.exp(-1) / 2)
    assert loss.item() == pytest.approx(0.5 * math.exp(-1) / 2)
    with pytest.raises(ValueError, match="ref_logprobs"):
        get_algorithm("grpo")(beta=0.5).loss(inputs([[0.0]], [[0.0]], [[1]], [1.0]))


def test_micro_batch_shares_sum_to_full_batch_loss():
    rng = np.random.default_rng(0)
    lp = rng.normal(size=(4, 5)).astype(np.float32)
    old = lp + rng.normal(scale=0.3, size=lp.shape).astype(np.float32)
    mask = (rng.random((4, 5)) > 0.3).astype(np.float32)
    mask[:, 0] = 1
    adv = rng.normal(size=4).astype(np.float32)
    for name in ("grpo", "dr_grpo", "rloo", "reinforce"):
        for agg in ((None,) if name == "dr_grpo" else (None, "sequence", "token", "sequence_sum")):
            algo = get_algorithm(name)(loss_aggregation=agg)
            full = algo.loss(inputs(lp, old, mask, adv, max_len=5))[0].item()
            parts = 0.0
            for sl in (slice(0, 1), slice(1, 4)):
                x = inputs(lp[sl], old[sl], mask[sl], adv[sl], max_len=5)
                x.total_sequences, x.total_tokens = 4, int(mask.sum())
                parts += algo.loss(x)[0].item()
            assert parts == pytest.approx(full, rel=1e-5), (name, agg)


def test_from_config_picks_known_fields():
    algo = get_algorithm("grpo").from_config({"clip_epsilon": 0.1, "beta": 0.2, "unrelated": 1})
    assert (algo.clip_epsilon, algo.beta, algo.needs_reference) == (0.1, 0.2, True)
    with pytest.raises(ValueError):
        get_algorithm("grpo")(loss_aggregation="bogus")


def test_k1_kl_estimator_is_refused_as_a_loss_term():
    """k1's gradient is the score function, zero in expectation: the penalty would do nothing."""
    with pytest.raises(ValueError, match=r"k1.*(k3|k2)"):
        get_algorithm("grpo")(beta=0.1, kl_estimator="k1")
    with pytest.raises(ValueError, match="k1"):
        get_algorithm("rloo").from_config({"beta": 0.04, "kl_estimator": "k1"})
    assert get_algorithm("grpo")(beta=0.0, kl_estimator="k1").beta == 0.0  # no loss term: harmless
    assert get_algorithm("grpo")(beta=0.1, kl_estimator="k2").kl_estimator == "k2"


def test_rloo_default_loss_sums_tokens_and_averages_sequences():
    # on-policy (ratio 1): per-token term -A_i; loss = sum_i sum_t -A_i / B = -(2*2 + 1*3) / 2
    mask = [[1, 1, 0], [1, 1, 1]]
    z = [[0.0] * 3, [0.0] * 3]
    x = inputs(z, z, mask, [2.0, 1.0])
    loss, _ = get_algorithm("rloo")().loss(x)
    assert loss.item() == pytest.approx(-7.0 / 2)
    loss.backward()
    torch.testing.assert_close(x.logprobs.grad, torch.tensor([[-1.0, -1.0, 0.0], [-0.5, -0.5, -0.5]]))
    # an explicit aggregation still wins: the per-sequence token mean gives -(2 + 1) / 2
    seq, _ = get_algorithm("rloo")(loss_aggregation="sequence").loss(inputs(z, z, mask, [2.0, 1.0]))
    assert seq.item() == pytest.approx(-1.5)


def test_reinforce_default_loss_sums_tokens_and_averages_sequences():
    # per-token term -A_i * logp: row 0: -2 * (-1 - 2) = 6, row 1: 1 * (-0.5 - 0.5 - 1) = -2
    mask = [[1, 1, 0], [1, 1, 1]]
    lp = [[-1.0, -2.0, -7.0], [-0.5, -0.5, -1.0]]
    x = inputs(lp, lp, mask, [2.0, -1.0])
    loss, _ = get_algorithm("reinforce")().loss(x)
    assert loss.item() == pytest.approx((6.0 - 2.0) / 2)
    loss.backward()
    torch.testing.assert_close(x.logprobs.grad, torch.tensor([[-1.0, -1.0, 0.0], [0.5, 0.5, 0.5]]))


def test_default_aggregation_per_algorithm_and_from_config():
    assert get_algorithm("grpo")().loss_aggregation == "sequence"
    assert get_algorithm("rloo")().loss_aggregation == "sequence_sum"
    assert get_algorithm("reinforce")().loss_aggregation == "sequence_sum"
    assert get_algorithm("rloo").from_config({"loss_aggregation": None}).loss_aggregation == "sequence_sum"
    assert get_algorithm("grpo").from_config({"loss_aggregation": None}).loss_aggregation == "sequence"
    assert get_algorithm("reinforce")(loss_aggregation="token").loss_aggregation == "token"


def test_sequence_sum_clip_fraction_is_a_fraction():
    lp = math.log(1.65)  # ratio 1.65 > 1.2 on one of row 0's two tokens, none of row 1's
    x = inputs([[lp, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]], [[1, 1], [1, 1]], [1.0, 1.0])
    _, stats = get_algorithm("rloo")().loss(x)
    assert stats["clip_fraction"] == pytest.approx((0.5 + 0.0) / 2)


def test_clip_fraction_counts_only_where_the_clip_stops_the_gradient():
    """TRL's count: a ratio above ``1 + eps`` with a positive advantage, or below ``1 - eps`` with a
    negative one (the min then takes the constant clipped term). The other way round the unclipped
    term wins and the gradient flows: not clipped."""
    up, down = math.log(1.5), math.log(0.5)
    for lp, adv, expected in ((up, 1.0, 1.0), (up, -1.0, 0.0), (down, -1.0, 1.0), (down, 1.0, 0.0), (up, 0.0, 0.0)):
        _, stats = get_algorithm("grpo")().loss(inputs([[lp]], [[0.0]], [[1]], [adv]))
        assert stats["clip_fraction"] == expected, (lp, adv)
    # per-token advantages (PPO): each token's own sign
    x = inputs([[up, up, down]], [[0.0] * 3], [[1, 1, 1]], [[1.0, -1.0, -1.0]])
    assert get_algorithm("ppo")().loss(x)[1]["clip_fraction"] == pytest.approx(2 / 3)
    # GSPO clips whole completions: the share of completions, not of tokens. Both rows' ratio is
    # e^0.1 > 1 + 4e-4; row 0 (1 token, A > 0) is clipped, row 1 (3 tokens, A < 0) is not
    x = inputs([[0.1, 0.0, 0.0], [0.1, 0.1, 0.1]], [[0.0] * 3] * 2, [[1, 0, 0], [1, 1, 1]], [1.0, -1.0])
    assert get_algorithm("gspo")().loss(x)[1]["clip_fraction"] == pytest.approx(1 / 2)


def test_algorithms_without_a_clip_report_no_clip_fraction():
    x = inputs([[math.log(1.5)]] * 2, [[0.0]] * 2, [[1]] * 2, [1.0, -1.0], ref=[[0.0]] * 2, group_ids=[0, 0])
    for name in ("reinforce", "online_dpo"):
        _, stats = get_algorithm(name)().loss(x)
        assert "loss" in stats and "clip_fraction" not in stats, name
        assert not get_algorithm(name).uses_importance_ratio
    assert all(get_algorithm(n).uses_importance_ratio for n in ("grpo", "dr_grpo", "rloo", "dapo", "gspo", "ppo"))


def test_logged_clip_fraction_and_kl_are_token_means_whatever_the_loss_divides_by():
    """Every token is clipped (ratio e > 1.28 with A > 0): clip_fraction is 1 for every algorithm,
    Dr. GRPO's constant divisor and RLOO's token sums included; kl is the plain token mean."""
    mask = [[1, 1, 0, 0], [1, 0, 0, 0]]
    lp, old = [[0.0] * 4] * 2, [[-1.0] * 4] * 2
    ref = [[-0.5, -1.0, 0.0, 0.0], [-2.0, 0.0, 0.0, 0.0]]
    k3 = [math.exp(-d) - 1 + d for d in (0.5, 1.0, 2.0)]
    for name in ("grpo", "dr_grpo", "rloo", "dapo", "gspo", "ppo"):
        _, stats = get_algorithm(name)(beta=0.1).loss(inputs(lp, old, mask, [1.0, 2.0], ref=ref, max_len=256))
        assert stats["clip_fraction"] == pytest.approx(1.0), name
        assert stats["kl"] == pytest.approx(sum(k3) / 3), name


def test_dr_grpo_refuses_another_loss_aggregation():
    """Its constant normalizer is the algorithm: a loss_aggregation would be ignored."""
    for agg in ("token", "sequence", "sequence_sum"):
        with pytest.raises(ValueError, match=f"dr_grpo.*loss_aggregation.*{agg}"):
            get_algorithm("dr_grpo")(loss_aggregation=agg)
    with pytest.raises(ValueError, match="dr_grpo"):
        get_algorithm("dr_grpo").from_config({"loss_aggregation": "token"})
    assert get_algorithm("dr_grpo").from_config({"loss_aggregation": None, "clip_epsilon": 0.1}).clip_epsilon == 0.1


# ---- non-finite rewards ----


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("name", ["grpo", "dr_grpo", "rloo", "reinforce", "dapo", "gspo", "ppo", "online_dpo"])
def test_a_nonfinite_reward_gets_advantage_0_and_leaves_the_others_as_without_it(name, bad):
    """A reward function's NaN or inf takes no part in any mean, std, leave-one-out or batch
    baseline, whitening or pairing: every other completion's advantage is what it is without that
    completion, and its own is 0."""
    algo = tiny_ppo() if name == "ppo" else get_algorithm(name)()
    rewards, groups = [bad, 0.0, 1.0, 0.3, 0.2, 0.5, 0.9, 0.4], [0, 0, 0, 0, 1, 1, 1, 1]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no numpy RuntimeWarning on the way
        adv = algo.advantages(make_batch(rewards, groups))
    without = algo.advantages(make_batch(rewards[1:], groups[1:]))
    assert np.all(adv[0] == 0)
    np.testing.assert_allclose(adv[1:], without, rtol=1e-5, atol=1e-6)


def test_a_group_without_finite_rewards_learns_nothing():
    batch = make_batch([math.nan, math.inf, 1.0, 2.0], [0, 0, 1, 1])
    for name in ("grpo", "dr_grpo", "rloo", "gspo", "online_dpo"):
        adv = get_algorithm(name)().advantages(batch)
        assert adv[:2].tolist() == [0.0, 0.0] and adv[2] < 0 < adv[3], name
    assert get_algorithm("reinforce")().advantages(make_batch([math.nan, math.inf], [0, 1])).tolist() == [0.0, 0.0]


def test_dapo_judges_a_groups_spread_on_its_finite_rewards():
    batch = make_batch([math.nan, 0.0, 1.0, math.inf, 1.0, 1.0, math.nan, math.nan, math.nan], [0, 0, 0, 1, 1, 1, 2, 2, 2])
    np.testing.assert_array_equal(get_algorithm("dapo")().keep_groups(batch), [True, False, False])


# ---- DAPO ----


def test_dapo_keeps_only_groups_with_reward_spread():
    batch = make_batch([1.0, 1.0, 1.0, 0.0, 1.0, 0.5, 2.0, 2.0, 2.0], [0, 0, 0, 1, 1, 1, 2, 2, 2])
    np.testing.assert_array_equal(get_algorithm("dapo")().keep_groups(batch), [False, True, False])
    assert get_algorithm("dapo")().max_refills == 3 and get_algorithm("dapo")(max_refills=5).max_refills == 5
    assert get_algorithm("grpo")().max_refills == 0  # the class default is untouched


def test_dapo_overlong_shaping_exact():
    batch = make_batch([1.0, 1.0, 1.0, 1.0], [0, 0, 1, 1], completion_len=10)
    batch.completion_mask[:] = np.arange(10) < np.array([[6], [7], [8], [10]])  # lengths 6, 7, 8, 10
    shaped = get_algorithm("dapo")(overlong_buffer=4, overlong_penalty=1.0).shape_rewards(batch, max_new_tokens=10)
    # no penalty up to 10 - 4 = 6 tokens, then linear to -1 at the cap: -(L - 6) / 4
    np.testing.assert_allclose(shaped.rewards, [1.0, 0.75, 0.5, 0.0])
    np.testing.assert_allclose(batch.rewards, [1.0] * 4)  # the input batch is not modified
    # the default buffer is a fifth of max_new_tokens (2 of 10): lengths 8 and 10 -> 0 and -1 (x 0.5)
    shaped = get_algorithm("dapo")(overlong_penalty=0.5).shape_rewards(batch, max_new_tokens=10)
    np.testing.assert_allclose(shaped.rewards, [1.0, 1.0, 1.0, 0.5])
    assert get_algorithm("dapo")(overlong_buffer=0).shape_rewards(batch, 10).rewards.tolist() == [1.0] * 4
    # the advantages are GRPO's on the shaped rewards: group 1 is {0.5, 0.0}
    adv = get_algorithm("dapo")(overlong_buffer=4, advantage_epsilon=1e-12).advantages(
        get_algorithm("dapo")(overlong_buffer=4).shape_rewards(batch, 10))
    s = math.sqrt(0.125)  # std(ddof=1) of {0.5, 0.0}
    np.testing.assert_allclose(adv, [0.125 / math.sqrt(0.03125), -0.125 / math.sqrt(0.03125), 0.25 / s, -0.25 / s],
                               rtol=1e-5)


def test_dapo_clip_higher_and_token_level_loss():
    # row 0 (A = 1): ratios 1.25 (inside [0.8, 1.28]: GRPO's 1.2 would clip it), 1.3 (clipped to 1.28), 1.0;
    # row 1 (A = -1): ratio 0.75, clipped to 0.8 (the min picks the clipped term)
    lp = [[math.log(1.25), math.log(1.3), 0.0], [math.log(0.75), 0.0, 0.0]]
    x = inputs(lp, [[0.0] * 3] * 2, [[1, 1, 1], [1, 0, 0]], [1.0, -1.0])
    algo = get_algorithm("dapo")()
    assert algo.loss_aggregation == "token" and algo.clip_range() == (0.2, 0.28)
    loss, stats = algo.loss(x)
    assert loss.item() == pytest.approx((-1.25 - 1.28 - 1.0 + 0.8) / 4, abs=1e-6)
    assert stats["clip_fraction"] == pytest.approx(2 / 4)  # 1.3 and 0.75
    loss.backward()
    torch.testing.assert_close(x.logprobs.grad, torch.tensor([[-1.25 / 4, 0.0, -1.0 / 4], [0.0, 0.0, 0.0]]))


# ---- GSPO ----


def test_gspo_sequence_ratio_clipping_and_gradient():
    # row 0: log ratios 0.1, 0.3 -> s = e^0.2, A = 1; row 1: 0, 0, -0.3 -> s = e^-0.1, A = -2
    lp = [[0.1, 0.3, 9.0], [0.0, 0.0, -0.3]]
    old = [[0.0] * 3] * 2
    mask = [[1, 1, 0], [1, 1, 1]]
    s0, s1 = math.exp(0.2), math.exp(-0.1)
    x = inputs(lp, old, mask, [1.0, -2.0])
    algo = get_algorithm("gspo")(clip_epsilon_low=0.2, clip_epsilon_high=0.3)  # wide: nothing clipped
    torch.testing.assert_close(algo.importance_ratio(x)[:, 0], torch.tensor([s0, s1]))
    loss, stats = algo.loss(x)
    assert loss.item() == pytest.approx((-s0 + 2 * s1) / 2, abs=1e-6)
    assert stats["clip_fraction"] == 0.0
    loss.backward()
    # d/dlogp_t of -A s / B: -A s / |y| / B on each real token (the tokens share one weight)
    torch.testing.assert_close(x.logprobs.grad, torch.tensor([[-s0 / 2 / 2] * 2 + [0.0], [2 * s1 / 3 / 2] * 3]))

    # the paper's ranges (3e-4, 4e-4) clip both sequences: no gradient
    x = inputs(lp, old, mask, [1.0, -2.0])
    loss, stats = get_algorithm("gspo")().loss(x)
    assert loss.item() == pytest.approx((-(1 + 4e-4) + 2 * (1 - 3e-4)) / 2, abs=1e-6)
    assert stats["clip_fraction"] == pytest.approx(1.0)
    loss.backward()
    assert torch.count_nonzero(x.logprobs.grad) == 0


def test_gspo_advantages_are_grpos_and_config_clip_epsilon_does_not_widen_it():
    batch = make_batch([1.0, 2.0, 3.0, 5.0, 5.0, 5.0], [0, 0, 0, 1, 1, 1])
    np.testing.assert_allclose(get_algorithm("gspo")(advantage_epsilon=1e-12).advantages(batch), [-1, 0, 1, 0, 0, 0],
                               atol=1e-6)
    assert get_algorithm("gspo").from_config({"clip_epsilon": 0.2}).clip_range() == (3e-4, 4e-4)


# ---- PPO ----


def test_gae_exact():
    from recgym.agents.algorithms.ppo import gae

    values = np.array([[0.5, 0.2, 9.0], [0.1, 0.4, 0.3]])  # 9.0 is padding
    mask = np.array([[1, 1, 0], [1, 1, 1]])
    adv, ret = gae(np.array([1.0, 2.0]), values, mask, gamma=1.0, lam=0.5)
    # row 0: d1 = 1 - 0.2 = 0.8, d0 = 0.2 - 0.5 = -0.3, A0 = -0.3 + 0.5 * 0.8 = 0.1
    # row 1: d2 = 2 - 0.3 = 1.7, d1 = 0.3 - 0.4 = -0.1, d0 = 0.4 - 0.1 = 0.3; A1 = -0.1 + 0.85, A0 = 0.3 + 0.375
    np.testing.assert_allclose(adv, [[0.1, 0.8, 0.0], [0.675, 0.75, 1.7]], atol=1e-6)
    np.testing.assert_allclose(ret, [[0.6, 1.0, 0.0], [0.775, 1.15, 2.0]], atol=1e-6)
    adv, _ = gae(np.array([1.0, 2.0]), values, mask, gamma=0.9, lam=1.0)
    assert adv[0, 0] == pytest.approx(0.9 * 1.0 - 0.5)  # discounted return less V(s_0)


def test_gae_skips_tool_results_in_multi_turn_episodes():
    """A multi-turn row: model tokens, a tool result (mask 0), model tokens. The reward lands on the
    model's last token and the recursion steps from a model token to the model's next token, so the
    row equals the contiguous row of its own tokens."""
    from recgym.agents.algorithms.ppo import gae

    values = np.array([[0.1, 0.4, 7.0, 8.0, 0.3, 9.0]])  # 7, 8: tool-result tokens; 9: padding
    mask = np.array([[1, 1, 0, 0, 1, 0]])
    adv, ret = gae(np.array([2.0]), values, mask, gamma=1.0, lam=0.5)
    contiguous, contiguous_ret = gae(np.array([2.0]), np.array([[0.1, 0.4, 0.3]]), np.array([[1, 1, 1]]), 1.0, 0.5)
    np.testing.assert_allclose(adv[0, [0, 1, 4]], contiguous[0], atol=1e-6)
    np.testing.assert_allclose(adv, [[0.675, 0.75, 0.0, 0.0, 1.7, 0.0]], atol=1e-6)
    np.testing.assert_allclose(ret[0, [0, 1, 4]], contiguous_ret[0], atol=1e-6)
    assert ret[0, [2, 3, 5]].tolist() == [0.0, 0.0, 0.0]


def test_dapo_overlong_shaping_counts_the_longest_turn_of_a_multi_turn_episode():
    """max_new_tokens caps each turn: two 5-token turns of a 6-token cap are not overlong, a 6-token
    turn is."""
    batch = make_batch([1.0, 1.0], [0, 0], completion_len=12)
    batch.completion_mask[:] = np.array([[1] * 5 + [0] * 2 + [1] * 5, [1] * 6 + [0] * 2 + [1] * 2 + [0] * 2], bool)
    batch.observation_mask = np.array([[0] * 5 + [1] * 2 + [0] * 5, [0] * 6 + [1] * 2 + [0] * 4], bool)
    np.testing.assert_array_equal(batch.longest_turn(), [5, 6])
    shaped = get_algorithm("dapo")(overlong_buffer=2, overlong_penalty=1.0).shape_rewards(batch, max_new_tokens=6)
    np.testing.assert_allclose(shaped.rewards, [0.5, 0.0])  # 5 tokens: -(5 - 4) / 2; 6: -1


def tiny_ppo(**kwargs):
    from tiny_lm import tiny_model

    from recgym.agents.config import GRPOConfig

    algo = get_algorithm("ppo")(**kwargs)
    algo.setup(tiny_model(seed=1), GRPOConfig(micro_batch_size=2))
    return algo


def test_ppo_critic_reads_each_token_state_like_an_unpadded_forward():
    from tiny_lm import tiny_model

    algo = tiny_ppo()
    batch = make_batch([0.0, 1.0, 2.0], [0, 0, 1], completion_len=4)
    batch.prompt_ids = np.array([[0, 5, 6], [0, 5, 6], [7, 8, 9]])
    batch.prompt_mask = np.array([[0, 1, 1], [0, 1, 1], [1, 1, 1]], dtype=bool)
    batch.completion_ids = np.array([[11, 12, 0, 0], [13, 14, 15, 16], [17, 0, 0, 0]])
    batch.completion_mask = batch.completion_ids > 0
    features = algo.features(batch)
    body = tiny_model(seed=1).model
    for i in range(3):
        tokens = np.concatenate([batch.prompt_ids[i][batch.prompt_mask[i]], batch.completion_ids[i]])
        with torch.no_grad():
            hidden = body(input_ids=torch.as_tensor(tokens)[None]).last_hidden_state[0]
        p = int(batch.prompt_mask[i].sum())
        n = int(batch.completion_mask[i].sum())
        torch.testing.assert_close(features[i, :n], hidden[p - 1 : p - 1 + n], atol=1e-5, rtol=1e-4)


def test_ppo_advantages_value_loss_and_state_round_trip():
    batch = make_batch([1.0, 3.0], [0, 0], completion_len=3)
    # an untrained critic says V = 0: with gamma = lambda = 1 every token's advantage is R
    np.testing.assert_allclose(tiny_ppo(whiten_advantages=False).advantages(batch), [[1.0] * 3, [3.0] * 3])
    algo = tiny_ppo(advantage_epsilon=0.0)
    np.testing.assert_allclose(algo.advantages(batch), [[-1.0] * 3, [1.0] * 3], atol=1e-6)  # whitened: mean 2, std 1
    losses = [algo.after_update()["value_loss"] for _ in range(5)]
    assert losses[0] == pytest.approx(0.5 * (1 + 9) / 2)  # 1/2 mean (0 - G)^2 over tokens, before the update
    assert losses[-1] < losses[0]

    resumed = tiny_ppo()
    resumed.load_state_dict(algo.state_dict())
    for a, b in zip(algo.head.parameters(), resumed.head.parameters()):
        assert torch.equal(a, b)
    resumed.advantages(batch)
    assert resumed.after_update() == algo.after_update()  # same head, same Adam moments: same next step


def test_ppo_critic_learns_the_mean_over_every_processs_tokens_fake_two_processes(monkeypatch):
    """Two processes (threads over a fake all-reduce) with 2 and 6 completion tokens: the averaged
    critic gradient is the one a single process holding both batches computes (the mean over all 8
    tokens, not the mean of the two processes' token means)."""
    import threading

    batches = [make_batch([1.0], [0]), make_batch([2.0, 3.0], [0, 0])]
    batches[0].completion_mask[0, 2] = False  # 2 tokens here, 6 there
    union = make_batch([1.0, 2.0, 3.0], [0, 0, 0])
    union.completion_mask[0, 2] = False

    def critic():
        algo = tiny_ppo(critic_updates=1)
        algo.critic_optimizer = torch.optim.SGD(algo.head.parameters(), lr=1.0)  # the step is the gradient
        return algo

    def critic_step(algo, batch):
        algo.advantages(batch)
        loss = algo.after_update()["value_loss"]
        return loss, [p.detach().clone() for p in algo.head.parameters()]

    expected_loss, expected = critic_step(critic(), union)
    algos = [critic(), critic()]  # built here: the model's seeded initialization is not thread-safe
    barrier, slots, local, results = threading.Barrier(2), [None, None], threading.local(), [None, None]

    def all_reduce(tensor, *args, **kwargs):
        slots[local.rank] = tensor.clone()
        barrier.wait()
        total = slots[0] + slots[1]
        barrier.wait()
        tensor.copy_(total)

    def rank(r):
        local.rank = r
        results[r] = critic_step(algos[r], batches[r])

    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda: 2)
    monkeypatch.setattr(torch.distributed, "all_reduce", all_reduce)
    threads = [threading.Thread(target=rank, args=(r,)) for r in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    for loss, params in results:  # every process takes the same step
        for got, want in zip(params, expected, strict=True):
            torch.testing.assert_close(got, want)
    assert (results[0][0] + results[1][0]) / 2 == pytest.approx(expected_loss)  # the logged mean over processes


def test_ppo_loss_is_the_clip_surrogate_on_token_advantages():
    z = [[0.0, 0.0], [0.0, 0.0]]
    loss, _ = get_algorithm("ppo")().loss(inputs(z, z, [[1, 1], [1, 0]], [[1.0, 2.0], [-1.0, 5.0]]))
    assert loss.item() == pytest.approx(-(1.0 + 2.0 - 1.0) / 3)  # token mean; the padded 5.0 is ignored


# ---- online DPO ----


def test_online_dpo_pairs_best_and_worst_of_each_group():
    batch = make_batch([0.2, 0.9, 0.5, 1.0, 1.0, 1.0, 0.3, 0.3, 0.1], [0, 0, 0, 1, 1, 1, 2, 2, 2])
    roles = get_algorithm("online_dpo")().advantages(batch)
    np.testing.assert_array_equal(roles, [-1, 1, 0, 0, 0, 0, 1, 0, -1])  # ties: the first; all equal: none
    algo = get_algorithm("online_dpo")()
    assert algo.needs_reference and algo.whole_groups


def test_online_dpo_loss_exact_and_micro_batch_shares():
    roles = [-1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, -1.0]
    groups = [0, 0, 0, 1, 1, 1, 2, 2, 2]
    mask = [[1, 1]] * 8 + [[1, 0]]
    ref = [[-1.0, -1.0]] * 9
    lp = [[-1.0, -1.0]] * 9
    lp[0] = [-1.25, -1.25]  # rejected of group 0: log(pi / ref) = -0.5
    lp[1] = [-0.75, -0.75]  # chosen of group 0: +0.5
    lp[8] = [-1.0, 7.0]  # rejected of group 2: its padded token does not count, gain 0
    x = inputs(lp, lp, mask, roles, ref=ref, group_ids=groups)
    loss, stats = get_algorithm("online_dpo")(dpo_beta=0.1).loss(x)
    # group 0: margin 0.1 * (0.5 - -0.5) = 0.1; group 2: margin 0; group 1: no pair; over 3 groups
    expected = (math.log1p(math.exp(-0.1)) + math.log(2.0)) / 3
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    assert stats["dpo_pairs"] == pytest.approx(2 / 3) and stats["dpo_accuracy"] == pytest.approx(1 / 3)
    loss.backward()
    g = 0.1 * (1 - 1 / (1 + math.exp(-0.1))) / 3  # beta * sigmoid(-margin) / N
    assert x.logprobs.grad[1, 0].item() == pytest.approx(-g, abs=1e-7)
    assert x.logprobs.grad[0, 0].item() == pytest.approx(g, abs=1e-7)
    assert x.logprobs.grad[6, 0].item() == pytest.approx(-0.1 * 0.5 / 3, abs=1e-7)
    assert x.logprobs.grad[8, 1].item() == 0.0 and x.logprobs.grad[3].abs().sum() == 0

    parts = 0.0
    for sl in (slice(0, 3), slice(3, 9)):
        part = inputs(lp[sl], lp[sl], mask[sl], roles[sl], ref=ref[sl], group_ids=groups[sl])
        part.total_sequences = 9
        parts += get_algorithm("online_dpo")(dpo_beta=0.1).loss(part)[0].item()
    assert parts == pytest.approx(expected, abs=1e-6)


def test_new_algorithms_micro_batch_shares_sum_to_full_batch_loss():
    rng = np.random.default_rng(1)
    lp = rng.normal(size=(4, 5)).astype(np.float32)
    old = lp + rng.normal(scale=0.3, size=lp.shape).astype(np.float32)
    mask = (rng.random((4, 5)) > 0.3).astype(np.float32)
    mask[:, 0] = 1
    adv = rng.normal(size=(4, 5)).astype(np.float32)
    for name in ("dapo", "gspo", "ppo"):
        algo = get_algorithm(name)()
        full = algo.loss(inputs(lp, old, mask, adv))[0].item()
        parts = 0.0
        for sl in (slice(0, 1), slice(1, 4)):
            x = inputs(lp[sl], old[sl], mask[sl], adv[sl])
            x.total_sequences, x.total_tokens = 4, int(mask.sum())
            parts += algo.loss(x)[0].item()
        assert parts == pytest.approx(full, rel=1e-5), name


# ---- what a plug-in gets wrong: one line that says what to do ----


def test_register_algorithm_refuses_a_missing_or_unusable_name():
    """``@register_algorithm`` without its name used to replace the class by a function, and a
    name that is not an identifier broke ``list_algorithms()`` later."""
    class Plain(Algorithm):
        def advantages(self, batch):
            return np.zeros(len(batch), dtype=np.float32)

    with pytest.raises(TypeError, match=r'write @register_algorithm\("my_name"\) above class .*Plain'):
        register_algorithm(Plain)
    with pytest.raises(TypeError, match="must be a str"):
        register_algorithm(3)
    for bad in ("", "my algo", "my:algo", "1st"):
        with pytest.raises(ValueError, match="must be a non-empty str of letters"):
            register_algorithm(bad)
    assert "" not in list_algorithms() and "my algo" not in list_algorithms()


def write_plugin(folder, name: str, body: str) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    head = "import numpy as np\nfrom recgym.agents.algorithms import Algorithm, register_algorithm\n\n"
    (folder / name).write_text(head + body)
    return str(folder / name)


ZEROS = "    def advantages(self, batch):\n        return np.zeros(len(batch), dtype=np.float32)\n"


def test_a_plugin_file_that_fails_halfway_is_not_kept_as_loaded(tmp_path):
    path = write_plugin(tmp_path, "half.py", f"class Half(Algorithm):\n{ZEROS}\nraise RuntimeError('boom')\n")
    for _ in range(2):  # the second call used to return the class of the half-run module
        with pytest.raises(RuntimeError, match="boom"):
            get_algorithm(f"{path}:Half")


def test_plugin_files_of_one_name_in_two_folders_are_two_modules(tmp_path):
    import pickle

    a = get_algorithm(write_plugin(tmp_path / "a", "algo.py", f'class Algo(Algorithm):\n    """A"""\n{ZEROS}') + ":Algo")
    b = get_algorithm(write_plugin(tmp_path / "b", "algo.py", f'class Algo(Algorithm):\n    """B"""\n{ZEROS}') + ":Algo")
    assert (a.__doc__, b.__doc__) == ("A", "B") and a.__module__ != b.__module__
    assert pickle.loads(pickle.dumps(a())).__class__ is a  # module a is still where pickle looks for it
    assert get_algorithm(f"{tmp_path}/a/algo.py:Algo") is a


def test_a_name_clash_or_bad_registration_in_a_plugin_file_is_one_key_error(tmp_path):
    """The CLI turns get_algorithm's KeyError into one line and exit status 2."""
    clash = write_plugin(tmp_path, "clash.py", f"@register_algorithm('grpo')\nclass Mine(Algorithm):\n{ZEROS}")
    with pytest.raises(KeyError, match="'grpo' is already registered .*: choose another name for Mine"):
        get_algorithm(f"{clash}:Mine")
    bare = write_plugin(tmp_path, "bare.py", f"@register_algorithm\nclass Bare(Algorithm):\n{ZEROS}")
    with pytest.raises(KeyError, match=r"write @register_algorithm\(\"my_name\"\)"):
        get_algorithm(f"{bare}:Bare")


def test_a_plugin_file_importing_a_module_beside_it_says_its_folder_is_not_on_the_path(tmp_path):
    (tmp_path / "my_helper.py").write_text("SCALE = 2.0\n")
    path = write_plugin(tmp_path, "uses_helper.py", f"import my_helper\n\nclass H(Algorithm):\n{ZEROS}")
    with pytest.raises(KeyError, match=f"{tmp_path} is not on the Python path: add it to PYTHONPATH"):
        get_algorithm(f"{path}:H")


class NoKwargs(Algorithm):
    def __init__(self, *, foo: float = 1.0):
        super().__init__()
        self.foo = foo

    def advantages(self, batch):
        return np.zeros(len(batch), dtype=np.float32)


class NoSuper(Algorithm):
    def __init__(self, *, foo: float = 1.0, **kwargs):
        self.foo = foo

    def advantages(self, batch):
        return np.zeros(len(batch), dtype=np.float32)


class Knobs(Algorithm):
    def __init__(self, *, scale=1.0, rounds: int = 2, cap: int | None = None, whiten=True, label="x", **kwargs):
        super().__init__(**kwargs)
        self.scale, self.rounds, self.cap, self.whiten, self.label = scale, rounds, cap, whiten, label

    def advantages(self, batch):
        return np.zeros(len(batch), dtype=np.float32)


def test_from_config_passes_an_init_without_kwargs_only_its_own_knobs():
    """The config's clip_epsilon, beta, ... used to reach an ``__init__`` that takes none of them
    (TypeError blaming algorithm_kwargs the user never set)."""
    from recgym.agents.config import GRPOConfig

    algo = NoKwargs.from_config(GRPOConfig(), foo=2.0)
    assert (algo.foo, algo.clip_epsilon) == (2.0, 0.2)
    with pytest.raises(TypeError, match=r"NoKwargs.__init__ takes no \*\*kwargs, so beta 0.1 does not reach "
                                        r"Algorithm: accept \*\*kwargs and pass them to super\(\).__init__"):
        NoKwargs.from_config(GRPOConfig(beta=0.1))


def test_from_config_refuses_an_init_that_does_not_call_super_init():
    """It used to fail only after the model loaded: AttributeError 'NoSuper' object has no attribute 'beta'."""
    with pytest.raises(TypeError, match=r"NoSuper.__init__ does not call super\(\).__init__\(\*\*kwargs\)"):
        NoSuper.from_config({})


def test_algorithm_kwargs_are_checked_against_the_knobs_names_and_types():
    from recgym.agents.config import GRPOConfig

    dapo = get_algorithm("dapo")
    with pytest.raises(TypeError, match=r"DAPO has no knob 'max_refill' \(did you mean 'max_refills'\?\); its knobs: "
                                        r"clip_epsilon_high, max_refills, .*; config fields it reads: scale_rewards"):
        dapo.from_config(GRPOConfig(algorithm="dapo"), max_refill=2)
    with pytest.raises(TypeError, match="DAPO's max_refills must be an integer, got 'many'"):
        dapo.from_config(GRPOConfig(algorithm="dapo"), max_refills="many")
    with pytest.raises(TypeError, match="DAPO's max_refills must be an integer, got True"):
        dapo.from_config({}, max_refills=True)
    with pytest.raises(TypeError, match="DAPO's overlong_buffer must be an integer or null, got 2.5"):
        dapo.from_config({}, overlong_buffer=2.5)
    algo = dapo.from_config({}, overlong_buffer=None, overlong_penalty=2, max_refills=1)  # an int is a number
    assert (algo.overlong_buffer, algo.overlong_penalty, algo.max_refills) == (None, 2, 1)
    with pytest.raises(TypeError, match="Knobs's scale must be a number, got 'big'"):  # from the default's type
        Knobs.from_config({}, scale="big")
    with pytest.raises(TypeError, match="Knobs's whiten must be true or false, got 1"):
        Knobs.from_config({}, whiten=1)
    algo = Knobs.from_config({}, scale=2, cap=3, whiten=False, label=None)  # label's default is no number: unchecked
    assert (algo.scale, algo.cap, algo.whiten, algo.label) == (2, 3, False, None)
    with pytest.raises(TypeError, match="PPO's critic_updates must be an integer, got 2.5"):
        get_algorithm("ppo").from_config({}, critic_updates=2.5)


def test_an_init_argument_without_default_is_asked_for_by_name():
    class Needs(Algorithm):
        def __init__(self, bonus, **kwargs):
            super().__init__(**kwargs)
            self.bonus = bonus

        def advantages(self, batch):
            return np.zeros(len(batch), dtype=np.float32)

    with pytest.raises(TypeError, match="Needs needs bonus: give it in algorithm_kwargs"):
        Needs.from_config({})
    assert Needs.from_config({}, bonus=1).bonus == 1


def test_a_config_field_repeated_in_algorithm_kwargs_is_refused():
    """clip_epsilon 0.1 in the config and 0.3 in algorithm_kwargs used to train with 0.3 while
    config.yaml showed 0.1."""
    from recgym.agents.config import GRPOConfig

    with pytest.raises(ValueError, match=r"algorithm_kwargs: clip_epsilon is a config field: set it as the field "
                                         r"\(clip_epsilon: 0.3, --clip_epsilon 0.3\), not in algorithm_kwargs"):
        GRPOConfig(clip_epsilon=0.1, algorithm_kwargs={"clip_epsilon": 0.3})


def test_a_plugin_file_path_is_kept_absolute_and_module_paths_and_names_as_given(tmp_path, monkeypatch):
    from recgym.agents.config import GRPOConfig

    monkeypatch.chdir(tmp_path)
    assert GRPOConfig(algorithm="algos/mine.py:Mine").algorithm == f"{tmp_path}/algos/mine.py:Mine"
    assert GRPOConfig(algorithm="~/mine.py:Mine").algorithm.startswith(str(Path.home()))
    for name in ("grpo", "my_package.algos:Mine"):
        assert GRPOConfig(algorithm=name).algorithm == name


def test_checked_advantages_refuses_shapes_that_would_broadcast_or_be_sliced():
    from recgym.agents.algorithms.hook_checks import checked_advantages

    batch = make_batch([0.0, 1.0, 2.0, 3.0], [0, 0, 1, 1])  # B 4, C 3

    def returning(value):
        return type("Returns", (Algorithm,), {"advantages": lambda self, batch: value})()

    expected = r"expected a numpy array of shape \(B,\)=\(4,\) or \(B, C\)=\(4, 3\)"
    for value in (np.ones(1), np.ones(8), np.ones(2), np.ones((4, 2))):
        with pytest.raises(ValueError, match=rf"^Returns.advantages returned shape \({value.shape[0]},.*; {expected}$"):
            checked_advantages(returning(value), batch)
    with pytest.raises(TypeError, match=rf"returned a torch tensor; {expected}"):
        checked_advantages(returning(torch.ones(4)), batch)
    with pytest.raises(TypeError, match=rf"returned NoneType; {expected}"):
        checked_advantages(returning(None), batch)
    for value in (np.ones(4), np.ones((4, 3)), np.ones((4, 1)), [1.0, 2.0, 3.0, 4.0]):
        assert np.asarray(checked_advantages(returning(value), batch)).shape == np.asarray(value).shape


def test_checked_loss_holds_plugins_to_the_loss_contract():
    from recgym.agents.algorithms.hook_checks import LOSS_RULE, checked_loss

    x = inputs([[-1.0, -1.0]] * 2, [[-1.0, -1.0]] * 2, [[1, 1], [1, 0]], [1.0, -1.0])
    scalar = (x.logprobs * x.mask).sum()

    def returning(value):
        return type("Returns", (Algorithm,), {"advantages": lambda self, batch: None,
                                              "loss": lambda self, inputs: value})()

    rule = LOSS_RULE.replace("(", r"\(").replace(")", r"\)")
    for value, words in ((scalar, r"returned a Tensor of shape \(\)"),
                         ((x.logprobs * x.mask, {}), r"returned a loss of shape \(2, 2\)"),
                         ((x.logprobs.sum(-1), {}), r"returned a loss of shape \(2,\)"),
                         ((scalar, None), "returned stats of None"),
                         ((scalar, {"vec": x.advantages}), r"returned stats\['vec'\] of a Tensor of shape \(2,\)"),
                         ((scalar, {"note": "hi"}), r"returned stats\['note'\] of str 'hi'")):
        with pytest.raises(TypeError, match=f"^Returns.loss {words}; {rule}"):
            checked_loss(returning(value), x)
    with pytest.raises(ValueError, match=f"^Returns.loss returned a loss without grad .*; {rule}$"):
        checked_loss(returning((scalar.detach(), {})), x)
    loss, stats = checked_loss(returning((scalar, {"loss": scalar.detach(), "n": np.float32(2), "k": 3,
                                                   "m": np.array(0.5), "v": x.advantages[:1]})), x)
    assert loss is not None and loss.requires_grad and loss.dim() == 0
    assert stats == {"loss": float(scalar.detach()), "n": 2.0, "k": 3.0, "m": 0.5, "v": 1.0}
    assert all(type(v) is float for v in stats.values())


def test_float_knobs_take_yaml_strings_that_read_as_numbers():
    """YAML reads ``1e-5`` (no dot) as a string: ``{critic_learning_rate: 1e-5}`` used to be refused
    with "must be a number, got '1e-5'" (config fields convert it)."""
    import yaml

    from recgym.agents.config import GRPOConfig

    given = yaml.safe_load("{critic_learning_rate: 1e-5}")
    assert given == {"critic_learning_rate": "1e-5"}
    config = GRPOConfig().with_overrides(["--algorithm", "ppo", "--algorithm_kwargs", "{critic_learning_rate: 1e-5}"])
    assert get_algorithm("ppo").from_config(config, **config.algorithm_kwargs).critic_learning_rate == 1e-5
    assert get_algorithm("dapo").from_config({}, overlong_penalty="1e-1").overlong_penalty == 0.1
    assert Knobs.from_config({}, scale="2e0").scale == 2.0  # typed by its float default

    class Optional(Algorithm):
        def __init__(self, *, floor: float | None = None, **kwargs):
            super().__init__(**kwargs)
            self.floor = floor

        def advantages(self, batch):
            return np.zeros(len(batch), dtype=np.float32)

    assert Optional.from_config({}, floor="1e-3").floor == 1e-3
    with pytest.raises(TypeError, match="Optional's floor must be a number or null, got 'low'"):
        Optional.from_config({}, floor="low")
    with pytest.raises(TypeError, match="DAPO's max_refills must be an integer, got '1e1'"):  # ints stay strict
        get_algorithm("dapo").from_config({}, max_refills="1e1")


HOOK_SIGNATURES = {  # each a wrong one
    "setup": lambda self, model: None,
    "keep_groups": lambda self: None,
    "shape_rewards": lambda self, batch: batch,
    "after_update": lambda self, stats: {},
    "state_dict": lambda self, destination: {},
    "load_state_dict": lambda self: None,
    "advantages": lambda batch: None,
    "loss": lambda self, inputs, extra: None,
    "per_token_loss": lambda self: None,
    "aggregate": lambda self, per_token: None,
}


@pytest.mark.parametrize("hook", sorted(HOOK_SIGNATURES))
def test_a_hook_that_cannot_take_the_trainers_arguments_is_refused_at_registration(hook):
    """``def shape_rewards(self, batch)`` used to be a TypeError traceback mid-run, after the model loaded."""
    wrong = type("Wrong", (ZerosBase,), {hook: HOOK_SIGNATURES[hook]})
    with pytest.raises(TypeError, match=rf"^Wrong\.{hook}\(.*\) cannot be called as {hook}\(.*\): define it as "
                                        rf"def {hook}\(self.*\)$"):
        register_algorithm(f"test_wrong_{hook}")(wrong)


class ZerosBase(Algorithm):
    def advantages(self, batch):
        return np.zeros(len(batch), dtype=np.float32)


def test_hooks_with_extra_defaults_or_star_args_are_accepted():
    @register_algorithm("test_loose_hooks")
    class Loose(ZerosBase):
        def shape_rewards(self, batch, max_new_tokens, scale=1.0):
            return batch

        def setup(self, *args, **kwargs):
            pass

        def loss(self, inputs, /):
            return super().loss(inputs)

        @staticmethod
        def clip_range():
            return 0.2, 0.2

    assert get_algorithm("test_loose_hooks") is Loose
    for name in list_algorithms():  # every built-in's hooks fit
        get_algorithm(name)


def test_checked_shape_rewards_wants_a_batch_of_the_same_rows():
    from recgym.agents.algorithms.hook_checks import checked_shape_rewards

    batch = make_batch([0.0, 1.0, 2.0, 3.0], [0, 0, 1, 1])

    def returning(value):
        return type("Returns", (ZerosBase,), {"shape_rewards": lambda self, batch, max_new_tokens: value})()

    for value, words in ((None, "returned None"), (batch.rewards, r"returned a ndarray of shape \(4,\)"),
                         (make_batch([0.0, 1.0], [0, 0]), "returned a RolloutBatch of 2 rows")):
        with pytest.raises(TypeError, match=rf"^Returns.shape_rewards {words}; expected a RolloutBatch of its 4 rows "
                                            r"\(dataclasses.replace\(batch, rewards=...\)\)$"):
            checked_shape_rewards(returning(value), batch, 8)
    shaped = make_batch([1.0, 1.0, 2.0, 3.0], [0, 0, 1, 1])
    assert checked_shape_rewards(returning(shaped), batch, 8) is shaped


def test_a_stat_named_like_the_trainers_own_is_refused_with_one_line():
    """A plug-in's ``reward`` or ``step`` stat used to replace the trainer's in metrics.jsonl (and a
    ``grad_norm`` from after_update was added to the learner's)."""
    from recgym.agents.algorithms.hook_checks import checked_after_update, checked_stats

    for key in ("step", "reward", "entropy", "format_rate", "grad_norm", "learning_rate", "time/step",
                "time/critic", "reward/accuracy", "eval/mae", "tokens_per_second"):
        with pytest.raises(ValueError, match=rf"^X.loss returned stats\['{key}'\], a name the trainer logs itself "
                                             r"\(its figure would be overwritten\): rename it$"):
            checked_stats("X.loss", {"loss": 1.0, key: 2.0})
    after = type("After", (ZerosBase,), {"after_update": lambda self: {"grad_norm": 1.0}})()
    with pytest.raises(ValueError, match=r"^After.after_update returned stats\['grad_norm'\]"):
        checked_after_update(after)
    assert checked_stats("X.loss", {"loss": 1.0, "critic_grad_norm": 2.0, "value_loss": 3.0}) == {
        "loss": 1.0, "critic_grad_norm": 2.0, "value_loss": 3.0}


def test_checked_advantages_sets_per_token_values_on_padding_to_0():
    """NaN there used to spoil every built-in loss (NaN * mask 0 is NaN) and the whole update."""
    from recgym.agents.algorithms.hook_checks import checked_advantages

    batch = make_batch([0.0, 1.0], [0, 0])
    batch.completion_mask[1, 1:] = False
    nan = np.array([[1.0, 1.0, 1.0], [-1.0, np.nan, np.inf]], dtype=np.float32)
    algo = type("PerToken", (ZerosBase,), {"advantages": lambda self, batch: nan})()
    adv = checked_advantages(algo, batch)
    np.testing.assert_array_equal(adv, [[1.0, 1.0, 1.0], [-1.0, 0.0, 0.0]])
    x = inputs([[-1.0] * 3] * 2, [[-1.0] * 3] * 2, batch.completion_mask.astype(np.float32).tolist(), adv.tolist())
    for name in list_algorithms():
        algorithm = get_algorithm(name)()
        if name != "online_dpo":  # it needs ref_logprobs and group ids
            assert math.isfinite(algorithm.loss(x)[0].item()), name
