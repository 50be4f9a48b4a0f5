import json
import re

import gymnasium as gym
import numpy as np
import pytest
from rich.console import Console
from tiny_lm import tiny_model, tiny_tokenizer

import recgym  # noqa: F401
from recgym.agents.collapse_guard import CollapseGuard
from recgym.agents.evaluation import evaluate, read_records
from recgym.agents.run_log import comparison_table, eval_record, is_eval_record
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


def test_ranking_eval_record_logs_ranking_figures_and_the_guard_reads_it():
    env = gym.make(ENV, split="valid", num_candidates=5)
    result = evaluate(env, SyntheticRankerPolicy(), n=6)
    record = eval_record(result, step=3)
    assert "eval/mae" not in record and not any(k.endswith("_mae") for k in record)
    for key in ("eval/ndcg@10", "eval/hr@1", "eval/mrr", "eval/format_rate", "eval/coverage"):
        assert record[key] == pytest.approx(result.metrics[key.removeprefix("eval/")])
    assert record["eval/baseline/bpr_ndcg@10"] == result.baselines["bpr"]["ndcg@10"]
    assert is_eval_record(record)
    guard = CollapseGuard("stop")
    assert guard.check(record) is None and guard.healthy_step == 3  # no rating spread to misread
    assert "format rate" in guard.check({**record, "step": 4, "eval/format_rate": 0.5})
    console = Console(width=200, record=True)
    console.print(comparison_table({"LLM": record}))
    text = console.export_text()
    assert "NDCG@10" in text and "bpr (baseline)" in text and "MAE" not in text


def test_ranking_progress_reports_ndcg():
    env = gym.make(ENV, split="valid", num_candidates=5)
    running = []
    evaluate(env, SyntheticRankerPolicy(), n=3, baselines=False, on_record=lambda r, stats: running.append(stats))
    assert "mae" not in running[-1] and running[-1]["coverage"] == 1.0
    result = evaluate(env, SyntheticRankerPolicy(), n=3, baselines=False)
    assert running[-1]["ndcg@10"] == pytest.approx(result.metrics["ndcg@10"])


def test_trainer_two_steps_on_ranking_logs_ranking_evals_and_resumes(tmp_path):
    import tiny_lm

    from recgym.agents.trainer import GRPOTrainer

    kwargs = {"env_id": ENV, "env_kwargs": {"num_candidates": 5, "max_user_history": 2}, "eval_interval": 1,
              "save_interval": 1}
    cfg = tiny_lm.tiny_config(tmp_path, **kwargs)
    result = GRPOTrainer(cfg, model=tiny_model(), tokenizer=tiny_tokenizer()).train()
    assert result.steps == 2 and [r["step"] for r in result.evals] == [0, 1, 2]
    assert all("eval/ndcg@10" in r and "eval/mae" not in r for r in result.evals)
    assert "eval/baseline/random_ndcg@10" in result.evals[0]
    steps = [r for r in result.records if "reward" in r]
    assert all(-0.5 <= r["reward/format"] + r["reward/ndcg"] <= 1.5 and r["reward/rank_of_target"] >= 1 for r in steps)

    more = tiny_lm.tiny_config(tmp_path, **kwargs, max_steps=3)
    resumed = GRPOTrainer(more, model=tiny_model(seed=1), tokenizer=tiny_tokenizer()).train(resume=True)
    assert resumed.steps == 3 and [r["step"] for r in resumed.evals] == [0, 1, 2, 3]
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines if "reward" in r] == [1, 2, 3]


def test_cli_eval_scripted_ranker(tmp_path, capsys):
    from recgym.cli import main

    metrics = tmp_path / "m.json"
    assert main(["eval", ENV, "--policy", "scripted", "--model", "ranker", "--split", "valid", "-n", "4",
                 "--quiet", "--no-baselines", "--metrics-json", str(metrics)]) == 0
    payload = json.loads(metrics.read_text())["metrics"]
    assert payload["n"] == 4 and payload["format_rate"] == 1.0 and payload["coverage"] == 1.0
    bare = tmp_path / "bare.json"  # the rank_only template gets the teacher's <rank> alone
    assert main(["eval", ENV, "--policy", "scripted", "--model", "ranker", "--split", "valid", "-n", "4", "--quiet",
                 "--no-baselines", "--template", "rank_only", "--metrics-json", str(bare)]) == 0
    assert json.loads(bare.read_text())["metrics"]["format_rate"] == 1.0
    assert main(["eval", ENV, "--policy", "scripted", "--model", "oracle", "-n", "1", "--quiet"]) != 0
    assert "unknown scripted teacher 'oracle'" in capsys.readouterr().err


def test_scripted_ranker_ranks_candidates_without_descriptions():
    """Real catalogues (MovieLens) have no item text: the prompt lists `[n] Title` alone, and the ranker
    must still rank every label (it wrote an empty ranking when it read only `[n] Title: text` lines)."""
    env = gym.make(ENV, split="valid")
    obs, _ = env.reset(seed=0)
    bare = re.sub(r"^(\[\d+\] [^:\n]*): .*$", r"\1", obs, flags=re.MULTILINE)
    assert bare != obs
    action = SyntheticRankerPolicy().act(bare)
    assert sorted(parse_ranking(action, 20, ("rank",)).order) == list(range(20))
    assert env.step(action)[4]["reward_breakdown"]["format"] == 0.5


class FirstRanksThenProse:
    """A ranking policy whose first of k completions is the scripted ranker's order and the others
    prose (unparsed: the prompt's order)."""

    def __init__(self):
        self.ranker = SyntheticRankerPolicy()

    def generate(self, prompts, n=1, sampling=None):
        from recgym.agents.types import Completion

        firsts = self.ranker.generate(prompts, n=1, sampling=sampling)
        return [[group[0], *(Completion("no idea", [1], [2], [-0.1], "stop") for _ in range(n - 1))]
                for group in firsts]


def test_ranking_eval_with_k_samples_scores_every_completion(tmp_path):
    """With --samples k the ranking figures and coverage came from the first completion alone: two
    unparsed completions of three showed coverage 100% and the first one's NDCG."""
    env = gym.make(ENV, split="valid")
    result = evaluate(env, FirstRanksThenProse(), n=6, samples_per_prompt=3, baselines=False,
                      out=tmp_path / "k.jsonl")
    records = result.records
    assert all(len(r["ranks"]) == 3 and r["ranks"][0] == r["rank"] for r in records)
    prompt_order = [[b["rank_of_target"] for b in r["reward_breakdowns"][1:]] for r in records]
    expected = ranking_metrics([[r["rank"], *rest] for r, rest in zip(records, prompt_order)])
    assert result.metrics["ndcg@10"] == pytest.approx(expected["ndcg@10"])
    assert result.metrics["ndcg@10"] != pytest.approx(ranking_metrics([r["rank"] for r in records])["ndcg@10"])
    assert result.metrics["coverage"] == pytest.approx(1 / 3)
    m = ranking_metrics([[1, 3], [2, 2]], [[True, False], [True, True]])
    assert m["hr@1"] == pytest.approx(0.25) and m["coverage"] == pytest.approx(0.75) and m["n"] == 2
    with pytest.raises(ValueError, match="same number of ranks"):
        ranking_metrics([[1, 3], [2]])


@pytest.mark.parametrize("changed", [{"candidate_seed": 1}, {"max_user_history": 2}])
def test_evaluate_refuses_to_resume_a_file_scored_on_other_lists(changed, tmp_path):
    """The header held neither setting: the new env's baselines were paired with the file's lists."""
    out = tmp_path / "r.jsonl"
    evaluate(gym.make(ENV, split="valid"), SyntheticRankerPolicy(), n=4, out=out, baselines=False)
    before = out.read_text()
    old, new = (gym.make(ENV, split="valid", **kwargs) for kwargs in ({}, changed))
    first = next(i for i in range(4) if old.reset(options={"index": i})[1] != new.reset(options={"index": i})[1])
    with pytest.raises(ValueError, match=rf"r.jsonl: sample {first} was scored on another "
                                         r"(prompt|prompt and candidate list) .*pass another --out \(out=\)"):
        evaluate(new, SyntheticRankerPolicy(), n=6, out=out)
    assert out.read_text() == before
    assert evaluate(new, SyntheticRankerPolicy(), n=2, out=out, resume=False, baselines=False).skipped == 0
