"""``recgym compare A.jsonl B.jsonl``: two eval files paired by sample, with the paired standard error."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest

import recgym  # noqa: F401
from recgym.agents.evaluation import evaluate, read_records
from recgym.agents.types import Completion
from recgym.cli import main
from recgym.metrics import paired_difference, paired_ranking_difference, ranking_values

ENV = "RecRating-Synthetic-v0"


def scripted_eval(path, model, *extra):
    assert main(["eval", ENV, "--policy", "scripted", "--model", model, "--no-baselines", "--quiet", "--out", str(path),
                 *extra]) == 0
    return read_records(path)


@pytest.fixture
def two_files(tmp_path):
    a, b = tmp_path / "reasoner.jsonl", tmp_path / "user_average.jsonl"
    scripted_eval(a, "reasoner", "-n", "20")
    scripted_eval(b, "user_average", "-n", "23")
    return a, b


def test_compare_gives_each_mae_and_the_paired_difference_on_the_common_samples(two_files, capsys):
    a, b = two_files
    capsys.readouterr()
    assert main(["compare", str(a), str(b), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    ra, rb = read_records(a), read_records(b)[:20]
    errors_a = np.array([r["prediction_or_fallback"] - r["target"] for r in ra])
    errors_b = np.array([r["prediction_or_fallback"] - r["target"] for r in rb])
    gain, se = paired_difference(errors_a, errors_b)
    assert summary["metric"] == "mae" and summary["n"] == 20
    assert summary["only_in_a"] == 0 and summary["only_in_b"] == 3
    assert summary["value_a"] == pytest.approx(np.abs(errors_a).mean())
    assert summary["value_b"] == pytest.approx(np.abs(errors_b).mean())
    assert summary["gain"] == pytest.approx(gain) and summary["se"] == pytest.approx(se) and se > 0
    assert summary["model_a"] == "reasoner" and summary["model_b"] == "user_average" and summary["split"] == "test"
    assert summary["protocol_differs"] == {}
    assert main(["compare", str(a), str(b)]) == 0
    printed = " ".join(capsys.readouterr().out.split())
    assert "20 paired samples; unpaired: 0 only in A, 3 only in B" in printed
    assert f"MAE: A {summary['value_a']:.3f}, B {summary['value_b']:.3f}" in printed
    assert f"B vs A: MAE lower by {gain:+.3f} (paired standard error {se:.3f}" in printed


@pytest.mark.parametrize("other, words", [
    (["--split", "valid"], "split='test' vs 'valid'"),
    (["--template", "rate_only"], "template='think' vs 'rate_only'"),
])
def test_compare_refuses_files_of_other_samples_or_prompts(other, words, two_files, tmp_path, capsys):
    a, _ = two_files
    c = tmp_path / "c.jsonl"
    scripted_eval(c, "user_average", "-n", "5", *other)
    capsys.readouterr()
    assert main(["compare", str(a), str(c)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("recgym compare: error: ") and words in err[0], err
    assert "compare files of one env, split, data and template" in err[0]


def test_compare_refuses_other_data_and_paired_samples_that_differ(two_files, tmp_path, capsys):
    a, b = two_files
    records = read_records(b)
    other_data = tmp_path / "other_data.jsonl"
    other_data.write_text("".join(json.dumps({**r, "dataset_key": "0" * 20}) + "\n" for r in records))
    assert main(["compare", str(a), str(other_data)]) == 2
    assert "dataset_key=" in capsys.readouterr().err
    records[4] = {**records[4], "prompt_sha1": "f" * 16}
    records[6] = {**records[6], "target": records[6]["target"] + 1}
    unlike = tmp_path / "unlike.jsonl"
    unlike.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert main(["compare", str(a), str(unlike)]) == 2
    err = capsys.readouterr().err.strip()
    assert "2 of the 20 paired samples differ in prompt or target (sample 4: the prompt)" in err
    for bad, words in (("nope.jsonl", "no such file"), ("empty.jsonl", "holds no records")):
        if bad == "empty.jsonl":
            (tmp_path / bad).write_text("")
        assert main(["compare", str(a), str(tmp_path / bad)]) == 2
        assert words in capsys.readouterr().err
    one = tmp_path / "one.jsonl"
    scripted_eval(one, "user_average", "-n", "1")
    assert main(["compare", str(a), str(one)]) == 2
    assert "1 sample(s) in both" in capsys.readouterr().err


class PromptOrder:
    """A ranking policy that answers prose: every list stays in the prompt's order."""

    def generate(self, prompts, n=1, sampling=None):
        return [[Completion("no idea", [1], [2], [-0.1], "stop") for _ in range(n)] for _ in prompts]


def test_compare_ranking_files_by_ndcg_at_10(tmp_path, capsys):
    from recgym.agents.teachers.scripted import SyntheticRankerPolicy

    env = gym.make("RecRank-Synthetic-v0", split="valid")
    a, b = tmp_path / "order.jsonl", tmp_path / "ranker.jsonl"
    evaluate(env, PromptOrder(), n=12, out=a, baselines=False)
    evaluate(env, SyntheticRankerPolicy(), n=10, out=b, baselines=False)
    assert main(["compare", str(a), str(b), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    ranks_a, ranks_b = [r["rank"] for r in read_records(a)[:10]], [r["rank"] for r in read_records(b)]
    gain, se = paired_ranking_difference(ranks_a, ranks_b)
    assert summary["metric"] == "ndcg@10" and summary["n"] == 10 and summary["only_in_a"] == 2
    assert summary["value_b"] == pytest.approx(ranking_values(ranks_b)["ndcg@10"].mean())
    assert summary["gain"] == pytest.approx(gain) and summary["se"] == pytest.approx(se)
    assert summary["coverage_a"] == 0 and summary["coverage_b"] == 1
    assert main(["compare", str(a), str(b)]) == 0
    assert "B vs A: NDCG@10 higher by" in capsys.readouterr().out
    rating = tmp_path / "rating.jsonl"
    scripted_eval(rating, "user_average", "-n", "3", "--split", "valid")
    assert main(["compare", str(a), str(rating)]) == 2
    assert "are not results on the same samples" in capsys.readouterr().err


def test_compare_names_the_decoding_settings_in_which_the_files_differ(two_files, tmp_path, capsys):
    """A greedy file against one sampled k times at T=1 was compared without a word of it: the gain
    read as the model's where part of it was the decoding's."""
    a, _ = two_files
    sampled = tmp_path / "sampled.jsonl"
    scripted_eval(sampled, "reasoner", "-n", "20", "--temperature", "1.0", "--samples", "3")
    capsys.readouterr()
    assert main(["compare", str(a), str(sampled), "--json"]) == 0
    differs = json.loads(capsys.readouterr().out)["protocol_differs"]
    assert differs["temperature"] == [0.0, 1.0] and differs["samples_per_prompt"] == [1, 3]
    assert main(["compare", str(a), str(sampled)]) == 0
    printed = " ".join(capsys.readouterr().out.split())
    assert "decoded differently: temperature 0.0 (A) vs 1.0 (B);" in printed
    assert "samples_per_prompt 1 (A) vs 3 (B)" in printed


def test_compare_pairs_a_python_evaluate_file_with_a_cli_file_of_the_same_samples(two_files, tmp_path, capsys):
    """evaluate(out=) records no env_id: it was refused against a CLI file (env_id=None vs '...')."""
    from recgym.agents.teachers.scripted import UserAveragePolicy

    a, _ = two_files
    py = tmp_path / "py.jsonl"
    evaluate(gym.make(ENV, split="test"), UserAveragePolicy(), n=20, out=py, baselines=False)
    capsys.readouterr()
    assert main(["compare", str(a), str(py), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["n"] == 20 and summary["policy_b"] == "UserAveragePolicy"
    # an env_id both files hold still has to match
    other = tmp_path / "other_env.jsonl"
    other.write_text("".join(json.dumps({**r, "env_id": "RecRating-Other-v0"}) + "\n" for r in read_records(a)))
    assert main(["compare", str(a), str(other)]) == 2
    assert "env_id='RecRating-Synthetic-v0' vs 'RecRating-Other-v0'" in capsys.readouterr().err


def test_compare_names_a_local_model_of_another_precision_or_context(two_files, tmp_path, capsys):
    a, _ = two_files
    local = tmp_path / "local.jsonl"
    local.write_text("".join(json.dumps({**r, "dtype": "bfloat16", "max_model_len": 400}) + "\n"
                             for r in read_records(a)))
    capsys.readouterr()
    assert main(["compare", str(a), str(local), "--json"]) == 0
    differs = json.loads(capsys.readouterr().out)["protocol_differs"]
    assert differs == {"dtype": [None, "bfloat16"], "max_model_len": [None, 400]}
