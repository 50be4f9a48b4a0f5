import json

import gymnasium as gym
import numpy as np
import pytest
from tiny_lm import tiny_model, tiny_tokenizer

import recgym  # noqa: F401
from recgym.agents.evaluation import evaluate, read_records
from recgym.agents.teachers.scripted import SyntheticRankerPolicy
from recgym.baselines import rank_of_target
from recgym.metrics import paired_ranking_difference, ranking_metrics
from recgym.rewards import parse_ranking

ENV = "RecRank-Synthetic-v0"


def test_ranking_metrics_hand_computed():
    m = ranking_metrics([1, 3, 11], [True, False, True])
    assert m["hr@1"] == pytest.approx(1 / 3) and m["hr@10"] == pytest.approx(2 / 3)
    assert m["ndcg@5"] == pytest.approx((1 + 0.5) / 3) and m["mrr"] == pytest.approx((1 + 1 / 3 + 1 / 11) / 3)
    assert m["coverage"] == pytest.approx(2 / 3)
    gain, se = paired_ranking_difference([2, 2, 2], [1, 1, 2], "hr@1")
    assert gain == pytest.approx(2 / 3) and se > 0


def test_rank_of_target_ties_use_prompt_order():
    assert rank_of_target(np.array([0.0, 0.0, 0.0]), 2) == 3
    assert rank_of_target(np.array([0.1, 0.5, 0.3]), 2) == 2


def test_teacher_writes_the_format_and_eval_resumes(tmp_path):
    env = gym.make(ENV, split="valid")
    out = tmp_path / "r.jsonl"
    first = evaluate(env, SyntheticRankerPolicy(), n=3, out=out)
    assert first.metrics["format_rate"] == 1.0 and first.metrics["coverage"] == 1.0
    text = first.records[0]["completions"][0]
    assert parse_ranking(text, 20).format_ok
    again = evaluate(env, SyntheticRankerPolicy(), n=5, out=out)
    assert again.skipped == 3 and len(read_records(out)) == 5
    assert set(again.baselines) == {"random", "popularity", "item_knn", "bpr"}
    assert "paired_se" in again.baselines["bpr"]


def test_cli_baseline_prints_ranking_metrics(capsys):
    from recgym.cli import main

    assert main(["baseline", ENV, "--splits", "valid", "--limit", "50"]) == 0
    printed = capsys.readouterr().out
    assert "NDCG@10" in printed and "bpr" in printed and "item_knn" in printed


def test_cli_eval_ranking_with_hf_policy(tmp_path, capsys):
    from recgym.cli import main

    tiny_model().save_pretrained(tmp_path / "tiny")
    tiny_tokenizer().save_pretrained(tmp_path / "tiny")
    metrics = tmp_path / "m.json"
    code = main(["eval", ENV, "--model", str(tmp_path / "tiny"), "--policy", "hf", "--split", "valid", "-n", "2",
                 "--max-new-tokens", "4", "--metrics-json", str(metrics), "--quiet",
                 "--env-kwargs", '{"num_candidates": 5, "max_user_history": 2}'])
    assert code == 0
    printed = capsys.readouterr().out
    assert "NDCG@10" in printed and "coverage" in printed
    payload = json.loads(metrics.read_text())
    assert payload["metrics"]["n"] == 2 and payload["metrics"]["coverage"] == 0.0


def test_trainer_two_steps_on_ranking(tmp_path):
    import tiny_lm

    from recgym.agents.trainer import GRPOTrainer

    cfg = tiny_lm.tiny_config(tmp_path, env_id=ENV, env_kwargs={"num_candidates": 5, "max_user_history": 2},
                              eval_on_start=False, eval_interval=0)
    result = GRPOTrainer(cfg, model=tiny_model(), tokenizer=tiny_tokenizer()).train()
    assert result is not None
