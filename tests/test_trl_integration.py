"""recgym environments through TRL's GRPOTrainer (one real step with a tiny model on CPU)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from tiny_lm import tiny_model, tiny_tokenizer

from recgym.integrations.trl import REWARD_COLUMNS, env_to_dataset, reward_functions

ENV = "RecRating-Synthetic-v0"
GOOD = "<analyze user>likes it</analyze user><analyze item>fine</analyze item><match>ok</match><rate>4</rate>"


def test_dataset_has_prompt_and_reward_columns_matching_the_env():
    import gymnasium as gym

    ds = env_to_dataset(ENV, split="valid", num_samples=6, seed=3)
    assert len(ds) == 6 and {"prompt", *REWARD_COLUMNS} <= set(ds.column_names)
    env = gym.make(ENV, split="valid")
    for row in ds:
        _, info = env.reset(options={"index": row["index"]})
        assert row["prompt"] == info["messages"]
        _, reward, _, _, step_info = env.step(GOOD)
        assert row["target_rating"] == step_info["target_rating"]
        # the two reward columns sum to the environment's reward for the same completion
        parts = [f([GOOD], **{k: [row[k]] for k in REWARD_COLUMNS})[0] for f in reward_functions(ENV)]
        assert sum(parts) == pytest.approx(reward)


@pytest.mark.parametrize("num_samples", [None, -1])
def test_none_or_minus_one_samples_are_the_whole_split(num_samples):
    ds = env_to_dataset(ENV, split="valid", num_samples=num_samples, seed=2)
    assert sorted(ds["index"]) == list(range(300))


@pytest.mark.parametrize(("kwargs", "words"), [
    ({"num_samples": 0}, "num_samples (None or -1: all) must be >= 1, got 0"),
    ({"num_samples": -2}, "num_samples (None or -1: all) must be >= 1, got -2"),
    ({"num_samples": 2.5}, "num_samples (None or -1: all) must be an int"),
    ({"num_samples": 2, "seed": -1}, "seed must be >= 0, got -1"),
])
def test_bad_sizes_and_seeds_are_refused(kwargs, words):
    with pytest.raises((ValueError, TypeError)) as info:
        env_to_dataset(ENV, split="valid", **kwargs)
    assert words in str(info.value)


def test_tool_environments_are_refused():
    """TRL scores one completion per prompt: a tool env's turns and costs would be left out."""
    for make in (lambda: env_to_dataset("RecRatingTools-Synthetic-v0", num_samples=2),
                 lambda: reward_functions("RecRatingTools-Synthetic-v0")):
        with pytest.raises(ValueError, match="RecRatingTools-Synthetic-v0 is multi-turn .*`recgym export verl`"):
            make()


def test_reward_functions_accept_chat_completions_and_pickle():
    fmt, acc = reward_functions()
    kw = {"target_rating": [2.0, 2.0], "scale_low": [1.0] * 2, "scale_high": [5.0] * 2, "scale_step": [1.0] * 2}
    completions = [[{"role": "assistant", "content": GOOD}], "no tags at all"]
    assert fmt(completions, **kw) == [0.5, -0.5]
    assert acc(completions, **kw) == [pytest.approx(1 - 2 / 4), 0.0]
    assert [f.__name__ for f in (fmt, acc)] == ["format_reward", "accuracy_reward"]
    assert pickle.loads(pickle.dumps(acc))(completions, **kw) == acc(completions, **kw)


def test_one_trl_grpo_step_on_cpu_with_a_tiny_model(tmp_path):
    from trl import GRPOConfig, GRPOTrainer

    dataset = env_to_dataset(ENV, split="train", num_samples=4, seed=0)
    args = GRPOConfig(
        output_dir=str(tmp_path), per_device_train_batch_size=4, num_generations=2,
        max_completion_length=8, max_steps=1, learning_rate=1e-3, use_cpu=True, report_to=[],
        logging_steps=1, save_strategy="no", seed=0, bf16=False,
    )
    trainer = GRPOTrainer(
        model=tiny_model(), reward_funcs=reward_functions(ENV), args=args,
        train_dataset=dataset, processing_class=tiny_tokenizer(),
    )
    trainer.train()
    assert trainer.state.global_step == 1
    logged = {k: v for entry in trainer.state.log_history for k, v in entry.items()}
    # a random tiny model writes no tags: every completion gets the format penalty and no accuracy
    assert logged["rewards/format_reward/mean"] == pytest.approx(-0.5)
    assert logged["rewards/accuracy_reward/mean"] == pytest.approx(0.0)
    assert np.isfinite(logged["loss"])


def first_is_target(completion, target_position, num_candidates):
    """A custom RecRank reward (module level, so it pickles): 1 when the target is ranked first; no
    format or ndcg part."""
    from recgym.rewards import RankingReward

    rank = RankingReward()(completion, target_position, num_candidates)["rank_of_target"]
    return {"total": float(rank == 1), "rank_of_target": rank}


def _rank_answer(order) -> str:
    return ("<analyze user>a</analyze user><analyze candidates>b</analyze candidates><match>c</match>"
            f"<rank>{' '.join(f'[{j + 1}]' for j in order)}</rank>")


def test_custom_ranking_reward_gets_the_ranking_columns_and_scores_its_total():
    import gymnasium as gym

    rank_env, kwargs = "RecRank-Synthetic-v0", {"num_candidates": 5, "reward": first_is_target}
    ds = env_to_dataset(rank_env, split="valid", num_samples=3, **kwargs)
    assert {"target_position", "num_candidates"} <= set(ds.column_names) and "target_rating" not in ds.column_names
    env = gym.make(rank_env, split="valid", **kwargs)
    for funcs in (reward_functions(env), reward_functions(rank_env, reward=first_is_target, num_candidates=5)):
        assert [f.__name__ for f in funcs] == ["total_reward"]
        rewards = set()
        for row in ds:
            for order in ([row["target_position"], *range(5)], range(5)):
                completion = _rank_answer(dict.fromkeys(order))
                env.reset(options={"index": row["index"]})
                reward = env.step(completion)[1]
                got = funcs[0]([[{"role": "assistant", "content": completion}]], [row["target_position"]],
                               [row["num_candidates"]])
                assert got == [pytest.approx(reward)]
                rewards.add(reward)
        assert rewards == {0.0, 1.0}
        assert pickle.loads(pickle.dumps(funcs[0])).part == "total"
