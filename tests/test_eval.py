"""Evaluation: streaming JSONL, resume, honest metrics, rating-from-probabilities, the CLI."""

from __future__ import annotations

import json
import math

import gymnasium as gym
import numpy as np
import pytest
import raw_fixtures as fx
from tiny_lm import tiny_model, tiny_tokenizer

import recgym  # noqa: F401
from recgym.agents.evaluation import evaluate, expected_rating, read_records
from recgym.agents.types import Completion
from recgym.data.schema import RatingScale

ENV = "RecRating-Synthetic-v0"
GOOD = "<analyze user>a</analyze user><analyze item>b</analyze item><match>c</match><rate>{}</rate>"


class ScriptedPolicy:
    """Answers ``GOOD`` with a rating of 4 for even sample calls, garbage otherwise (a stand-in LLM)."""

    def __init__(self):
        self.prompts_seen = 0

    def generate(self, prompts, n=1, sampling=None):
        out = []
        for _ in prompts:
            text = GOOD.format(4) if self.prompts_seen % 2 == 0 else "I cannot rate this."
            self.prompts_seen += 1
            out.append([Completion(text, [1], [2], [-0.1], "stop") for _ in range(n)])
        return out


def test_evaluate_streams_resumes_and_scores(tmp_path):
    env = gym.make(ENV, split="test")
    out = tmp_path / "results.jsonl"
    seen = []
    first = evaluate(env, ScriptedPolicy(), n=4, out=out, batch_size=3, header={"model": "scripted"},
                     on_record=lambda r, running: seen.append(running["done"]))
    assert seen == [1, 2, 3, 4]
    records = read_records(out)
    assert [r["index"] for r in records] == [0, 1, 2, 3]
    r0 = records[0]
    for key in ("user_id", "item_id", "prompt_sha1", "completions", "parsed_ratings", "target", "reward_breakdowns"):
        assert key in r0
    assert r0["prediction"] == 4.0 and records[1]["prediction"] is None
    m = first.metrics
    assert m.n == 4 and m.coverage == 0.5 and m.format_rate == 0.5
    assert m.mae_parsed == pytest.approx(sum(abs(4 - r["target"]) for r in records[::2]) / 2)
    assert m.mae == pytest.approx(sum(abs(r["prediction_or_fallback"] - r["target"]) for r in records) / 4)
    assert m.scale == "1-5"
    # a torn last line (an interrupted run) is dropped, and resuming redoes only missing samples
    text = out.read_text().splitlines()
    out.write_text("\n".join(text[:3]) + "\n" + text[3][:20])
    policy = ScriptedPolicy()
    second = evaluate(env, policy, n=6, out=out, header={"model": "scripted"})
    assert second.skipped == 3 and policy.prompts_seen == 3
    assert [r["index"] for r in read_records(out)] == [0, 1, 2, 3, 4, 5]
    assert read_records(str(out)) == read_records(out)  # a path as str too
    with pytest.raises(ValueError, match="model"):
        evaluate(env, ScriptedPolicy(), n=6, out=out, header={"model": "another"})


def test_evaluate_baselines_on_same_samples():
    env = gym.make(ENV, split="test")
    result = evaluate(env, ScriptedPolicy(), n=5)
    if result.baselines_note:
        pytest.skip(result.baselines_note)
    assert {"global_mean", "biased_mf"} <= set(result.baselines)
    assert all(scores["n"] == 5 for scores in result.baselines.values())


def test_evaluate_mean_of_k_samples():
    class Alternating:
        tokenizer = None

        def generate(self, prompts, n=1, sampling=None):
            return [[Completion(GOOD.format(2 + 2 * (j % 2)), [1], [2], [-0.1], "stop") for j in range(n)] for _ in prompts]

    result = evaluate(gym.make(ENV, split="valid"), Alternating(), n=2, samples_per_prompt=4)
    assert all(r["prediction"] == 3.0 and len(r["completions"]) == 4 for r in result.records)


def test_expected_rating_from_top_logprobs():
    scale = RatingScale(1, 5)
    pieces = ["<", "rate", ">", "4", "</", "rate", ">"]
    top = [{} for _ in pieces]
    top[3] = {"4": math.log(0.6), "5": math.log(0.2), "x": math.log(0.2)}
    c = Completion("<rate>4</rate>", [], [], [-0.1] * len(pieces), "stop", top_logprobs=top, tokens=pieces)
    assert expected_rating(c, scale) == pytest.approx((4 * 0.6 + 5 * 0.2) / 0.8)
    assert expected_rating(c, RatingScale(1, 10)) is None  # "10" is not one digit token
    no_tag = Completion("4", [], [], [-0.1], "stop", top_logprobs=[{"4": 0.0}], tokens=["4"])
    assert expected_rating(no_tag, scale) is None
    # with token ids, decoded by a real tokenizer
    tok = tiny_tokenizer()
    ids = tok.encode(" <rate>3</rate>", add_special_tokens=False)
    pos = [tok.decode([i]) for i in ids].index("3")
    top_ids = [{} for _ in ids]
    top_ids[pos] = {tok.convert_tokens_to_ids("3"): math.log(0.5), tok.convert_tokens_to_ids("2"): math.log(0.5)}
    c2 = Completion(" <rate>3</rate>", [], ids, [-0.1] * len(ids), "stop", top_logprobs=top_ids)
    assert expected_rating(c2, scale, tok.decode) == pytest.approx(2.5)


def test_evaluate_rating_from_probs_with_tiny_hf_policy(tmp_path):
    from recgym.agents.policies.hf import HFPolicy
    from recgym.agents.types import SamplingParams

    policy = HFPolicy(tiny_model(), tiny_tokenizer())
    result = evaluate(gym.make(ENV, split="valid"), policy, n=2, rating_from_probs=True,
                      sampling=SamplingParams(temperature=0, max_new_tokens=6))
    assert len(result.records) == 2 and all(r["prob_ratings"] == [None] for r in result.records)
    assert result.metrics.coverage == 0.0 and math.isfinite(result.metrics.mae)  # all fallback


def test_cli_eval_with_hf_policy(tmp_path, capsys, monkeypatch):
    from recgym.cli import main

    model = tiny_model()
    model.save_pretrained(tmp_path / "tiny")
    tiny_tokenizer().save_pretrained(tmp_path / "tiny")
    out = tmp_path / "r.jsonl"
    metrics = tmp_path / "m.json"
    code = main(["eval", ENV, "--model", str(tmp_path / "tiny"), "--policy", "hf", "--split", "valid", "-n", "3",
                 "--max-new-tokens", "4", "--out", str(out), "--metrics-json", str(metrics), "--quiet"])
    assert code == 0
    assert len(read_records(out)) == 3
    printed = capsys.readouterr().out
    assert "MAE" in printed and "coverage" in printed
    payload = json.loads(metrics.read_text())
    assert payload["metrics"]["n"] == 3 and payload["model"] == str(tmp_path / "tiny")


def test_cli_eval_missing_model_is_a_clear_error(tmp_path, capsys):
    from recgym.cli import main

    assert main(["eval", ENV, "--model", str(tmp_path / "nope.gguf"), "--policy", "hf", "-n", "1", "--quiet"]) == 2
    assert "does not exist" in " ".join(capsys.readouterr().err.split())


SCRIPTED = ["eval", ENV, "--policy", "scripted", "--model", "user_average", "--no-baselines", "--quiet"]


@pytest.mark.parametrize("changed, words", [
    (["--template", "rate_only"], "template='think', not 'rate_only'"),
    (["--env-kwargs", '{"max_user_history": 1}'], "env_kwargs={}, not {'max_user_history': 1}"),
    (["--temperature", "0.5"], "temperature=0.0, not 0.5"),
    (["--top-p", "0.9"], "top_p=1.0, not 0.9"),
    (["--max-new-tokens", "7"], "max_new_tokens=512, not 7"),
    (["--temperature", "0.5", "--seed", "1"], "temperature=0.0, not 0.5; seed=0, not 1"),
    (["--samples", "2"], "samples_per_prompt=1, not 2"),
    # checked before the model loads (this one does not exist)
    (["--policy", "hf", "--model", "nowhere/nope", "--rating-from-probs"], "rating_from_probs=False, not True"),
    (["--policy", "hf", "--model", "nowhere/nope", "--temperature", "0.5"], "policy='scripted', not 'hf'"),
], ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_cli_eval_refuses_to_resume_a_file_of_other_settings(changed, words, tmp_path, capsys):
    """A rerun with other settings silently took the first run's records into one table."""
    from recgym.cli import main

    out = tmp_path / "e.jsonl"
    assert main([*SCRIPTED, "-n", "3", "--out", str(out)]) == 0
    before = read_records(out)
    capsys.readouterr()
    assert main([*SCRIPTED, "-n", "5", "--out", str(out), *changed]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("recgym eval: error: ") and words in err[0], err
    assert "another --out" in err[0] and "delete" in err[0]
    assert read_records(out) == before


@pytest.mark.parametrize("changed, words", [
    (["--dtype", "bfloat16"], "dtype=None, not 'bfloat16'"),
    (["--max-model-len", "1024"], "max_model_len=None, not 1024"),
])
def test_cli_eval_refuses_to_resume_a_local_model_of_another_precision_or_context(changed, words, tmp_path, capsys):
    """The hf/vllm policies' dtype and max_model_len change the answers; checked before the model loads."""
    from recgym.cli import main

    out = tmp_path / "e.jsonl"
    assert main([*SCRIPTED, "-n", "2", "--out", str(out)]) == 0
    local = [{**r, "policy": "hf", "model": "nowhere/nope", "dtype": None, "max_model_len": None} for r in read_records(out)]
    out.write_text("".join(json.dumps(r) + "\n" for r in local))
    capsys.readouterr()
    hf = [a if a not in ("scripted", "user_average") else {"scripted": "hf", "user_average": "nowhere/nope"}[a] for a in SCRIPTED]
    assert main([*hf, "-n", "3", "--out", str(out), *changed]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0], err


HF_NOWHERE = ["eval", ENV, "--policy", "hf", "--model", "nowhere/nope", "--no-baselines", "--quiet", "-n", "2"]


def test_cli_eval_checks_its_output_paths_before_the_model_loads(tmp_path, capsys):
    """--metrics-json into a missing folder failed after the whole evaluation, naming a hidden temp file."""
    from recgym.cli import main

    (tmp_path / "afile").write_text("")
    for flag in ("--metrics-json", "--out"):
        assert main([*HF_NOWHERE, flag, str(tmp_path / "afile" / "m.json")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"{flag} " in err[0] and "is a file, not a folder" in err[0], err
    metrics = tmp_path / "new" / "sub" / "m.json"
    assert main([*SCRIPTED, "-n", "2", "--metrics-json", str(metrics)]) == 0
    assert json.loads(metrics.read_text())["metrics"]["n"] == 2


def test_cli_eval_no_resume_on_a_file_being_written_fails_before_the_model_loads(tmp_path, capsys):
    import fcntl

    from recgym.cli import main

    out = tmp_path / "e.jsonl"
    assert main([*SCRIPTED, "-n", "2", "--out", str(out)]) == 0
    before = out.read_text()
    capsys.readouterr()
    with out.open("a") as held:  # as a running eval holds it
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert main([*HF_NOWHERE, "--out", str(out), "--no-resume"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is being written by another eval now" in err[0], err
    assert out.read_text() == before


def test_cli_eval_help_shows_every_default():
    import subprocess
    import sys

    shown = subprocess.run([sys.executable, "-m", "recgym.cli", "eval", "--help"], capture_output=True, text=True,
                           check=True, env={"COLUMNS": "300", **__import__("os").environ}).stdout
    for default in ("(default: vllm)", "(default: test)", "(default: 1.0)", "(default: 512)", "(default: 0)"):
        assert default in shown, default
    assert "(default: all) (default: None)" not in shown


def test_cli_eval_refuses_a_file_scored_on_other_prompts_before_the_model_loads(tmp_path, capsys):
    """The prompt check ran only after the model had loaded (minutes for a large one)."""
    from recgym.cli import main

    out = tmp_path / "e.jsonl"
    assert main([*SCRIPTED, "-n", "2", "--out", str(out)]) == 0
    local = [{**r, "policy": "hf", "model": "nowhere/nope", "dtype": None} for r in read_records(out)]
    local[1]["prompt_sha1"] = "0" * 40  # as if the env had built another prompt for sample 1
    out.write_text("".join(json.dumps(r) + "\n" for r in local))
    capsys.readouterr()
    hf = [{"scripted": "hf", "user_average": "nowhere/nope"}.get(a, a) for a in SCRIPTED]
    assert main([*hf, "-n", "3", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "sample 1 was scored on another prompt" in err[0], err
    assert main([*hf, "-n", "1", "--out", str(out)]) == 2  # sample 1 is not resumed: the model's turn
    assert "cannot load 'nowhere/nope'" in capsys.readouterr().err


def test_cli_eval_resumes_more_samples_of_the_same_settings(tmp_path, capsys):
    from recgym.cli import main

    out = tmp_path / "e.jsonl"
    same = ["--temperature", "0.5", "--env-kwargs", '{"max_user_history": 2}', "--template", "rate_only"]
    assert main([*SCRIPTED, "-n", "3", "--out", str(out), *same]) == 0
    capsys.readouterr()
    assert main([*SCRIPTED, "-n", "5", "--out", str(out), *same]) == 0
    assert "resumed: 3 samples" in capsys.readouterr().err
    records = read_records(out)
    assert [r["index"] for r in records] == [0, 1, 2, 3, 4]
    assert all(r["template"] == "rate_only" and r["temperature"] == 0.5 for r in records)
    # the default template named or not is the same setting
    think = tmp_path / "think.jsonl"
    assert main([*SCRIPTED, "-n", "2", "--out", str(think)]) == 0
    assert main([*SCRIPTED, "-n", "3", "--out", str(think), "--template", "think"]) == 0


def test_evaluate_refuses_to_resume_other_sampling_or_an_unmarked_file(tmp_path):
    from recgym.agents.types import SamplingParams

    env = gym.make(ENV, split="test")
    out = tmp_path / "results.jsonl"
    sampled = SamplingParams(temperature=0.5, max_new_tokens=512)
    evaluate(env, ScriptedPolicy(), n=2, out=out, baselines=False, sampling=sampled)
    with pytest.raises(ValueError, match="max_new_tokens=512, not 8"):
        evaluate(env, ScriptedPolicy(), n=3, out=out, baselines=False,
                 sampling=SamplingParams(temperature=0.5, max_new_tokens=8))
    with pytest.raises(ValueError, match="samples_per_prompt=1, not 2"):
        evaluate(env, ScriptedPolicy(), n=3, out=out, baselines=False, sampling=sampled, samples_per_prompt=2)
    old = [{k: v for k, v in r.items() if k != "seed"} for r in read_records(out)]  # an older recgym's file
    out.write_text("".join(json.dumps(r) + "\n" for r in old))
    with pytest.raises(ValueError, match="no seed"):
        evaluate(env, ScriptedPolicy(), n=3, out=out, baselines=False, sampling=sampled)


@pytest.mark.parametrize("batch_size", [0, -2])
def test_evaluate_refuses_a_batch_size_below_1(batch_size):
    """0 scored nothing (a table of n=0); -2 scored samples twice."""
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        evaluate(gym.make(ENV, split="test"), ScriptedPolicy(), n=5, batch_size=batch_size, baselines=False)


def test_evaluate_refuses_to_resume_a_file_of_other_data(tmp_path):
    """The header named the dataset, not its data: another world's samples joined the file's."""
    out = tmp_path / "results.jsonl"
    evaluate(gym.make(ENV, split="test"), ScriptedPolicy(), n=2, out=out, baselines=False)
    with pytest.raises(ValueError, match=r"dataset_key='\w{20}', not '\w{20}'"):
        evaluate(gym.make(ENV, split="test", seed=1), ScriptedPolicy(), n=3, out=out, baselines=False)


def test_evaluate_refuses_to_resume_a_file_scored_on_other_prompts(tmp_path):
    """The header did not hold max_user_history: records of other prompts were resumed as this env's."""
    out = tmp_path / "results.jsonl"
    evaluate(gym.make(ENV, split="test"), ScriptedPolicy(), n=3, out=out, baselines=False)
    with pytest.raises(ValueError, match=r"results.jsonl: sample 0 was scored on another prompt than this "
                                         r"environment gives .*max_user_history.*\(resume=False\) to overwrite it"):
        evaluate(gym.make(ENV, split="test", max_user_history=2), ScriptedPolicy(), n=4, out=out, baselines=False)
    assert evaluate(gym.make(ENV, split="test"), ScriptedPolicy(), n=4, out=out, baselines=False).skipped == 3


def movielens(root, offset: int = 0, bad: bool = False):
    """MovieLens (ml-latest layout): 5 users rate 4 films each, so 5 valid and 5 test samples (``offset``
    shifts every rating); ``bad``: plus a rating off the scale."""
    films = (10, 20, 30, 40)
    start = 1_600_000_000  # epoch seconds in 2020: earlier ones are warned about as dates written as numbers
    rows = [f"{u},{m},{(u + m // 10 + offset) % 5 + 0.5},{start + 100 * u + m}" for u in range(1, 6) for m in films]
    fx.write_lines(root / "ratings.csv", ["userId,movieId,rating,timestamp", *rows,
                                          *([f"1,40,7.0,{start + 99}"] if bad else [])])
    fx.write_lines(root / "movies.csv", ["movieId,title,genres", *(f"{m},Film {m} (1995),Drama" for m in films)])
    return root


ML = ["eval", "RecRating-MovieLens-v0", "--policy", "scripted", "--model", "user_average", "--no-baselines", "--quiet"]


def test_cli_eval_refuses_to_resume_a_file_of_another_data_folder(tmp_path, capsys, monkeypatch):
    """RECGYM_DATA_DIR at another folder of the same dataset "resumed" the file with other users."""
    from recgym.cli import main
    from recgym.data import registry

    for name, offset in (("a", 0), ("b", 1)):
        movielens(tmp_path / name / "movielens", offset)
    out, cache = tmp_path / "e.jsonl", ["--cache-dir", str(tmp_path / "cache")]
    monkeypatch.setenv("RECGYM_DATA_DIR", str(tmp_path / "a"))
    assert main([*ML, "-n", "2", "--out", str(out), *cache]) == 0
    before = read_records(out)
    monkeypatch.setenv("RECGYM_DATA_DIR", str(tmp_path / "b"))
    monkeypatch.setattr(registry, "_LOADED", {})  # as a new process would
    capsys.readouterr()
    assert main([*ML, "-n", "4", "--out", str(out), *cache]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after the preparation's progress bars
    assert err.startswith("recgym eval: error: ") and "(dataset_key=" in err and "another --out" in err, err
    assert read_records(out) == before
    # the same data through --data-dir instead of $RECGYM_DATA_DIR is the same setting
    assert main([*ML, "-n", "4", "--out", str(out), *cache, "--data-dir", str(tmp_path / "a" / "movielens")]) == 0
    assert "resumed: 2 samples" in capsys.readouterr().err


def test_cli_eval_takes_the_data_dir_and_skip_bad_records(tmp_path, capsys, monkeypatch):
    """The bad-record error said to pass --skip-bad-records, which eval did not take, nor --data-dir."""
    from recgym.cli import main

    monkeypatch.delenv("RECGYM_DATA_DIR", raising=False)
    data = ["--data-dir", str(movielens(tmp_path / "ml", bad=True)), "--cache-dir", str(tmp_path / "cache")]
    assert main([*ML, "-n", "2", *data]) == 2
    assert "--skip-bad-records" in capsys.readouterr().err.strip().splitlines()[-1]
    out = tmp_path / "e.jsonl"
    assert main([*ML, "-n", "2", *data, "--skip-bad-records", "--out", str(out)]) == 0
    assert [r["env_kwargs"] for r in read_records(out)] == [{"skip_bad_records": True}] * 2
    capsys.readouterr()
    assert main([*ML, "-n", "2", *data, "--env-kwargs", '{"data_dir": "x"}']) == 2
    assert capsys.readouterr().err.strip() == "recgym eval: error: --env-kwargs and --data-dir both set data_dir: give each once"


def test_cli_eval_metrics_json_holds_the_split_and_settings(tmp_path):
    """A valid and a test run wrote the same fields: nothing told them apart."""
    from recgym.cli import main

    metrics = tmp_path / "m.json"
    assert main([*SCRIPTED, "-n", "2", "--split", "valid", "--temperature", "0.5", "--metrics-json", str(metrics)]) == 0
    payload = json.loads(metrics.read_text())
    assert payload["split"] == "valid" and payload["temperature"] == 0.5 and payload["metrics"]["n"] == 2
    assert {"dataset", "dataset_key", "scale", "template", "seed", "samples_per_prompt", "env_id", "model"} <= set(payload)


def test_cli_eval_metrics_json_is_strict_json(tmp_path):
    """One sample has no prediction spread (NaN): ``json.dump`` wrote ``NaN``, which strict parsers refuse."""
    from recgym.cli import main

    metrics = tmp_path / "m.json"
    assert main([*SCRIPTED, "-n", "1", "--split", "valid", "--metrics-json", str(metrics)]) == 0

    def refuse(constant):
        raise ValueError(f"not strict JSON: {constant}")

    payload = json.loads(metrics.read_text(), parse_constant=refuse)
    assert payload["metrics"]["prediction_std"] is None and payload["metrics"]["n"] == 1


@pytest.mark.parametrize("env_id, extra, words", [
    ("RecRating-MovieLens-v0", ["--policy", "hf", "--model", "nowhere/nope"], "scale 0.5-5 step 0.5 has values that are not"),
    ("RecRating-IMDb-v0", ["--policy", "hf", "--model", "nowhere/nope"], "scale 1-10 has values that are not single"),
    ("RecRank-Synthetic-v0", ["--policy", "hf", "--model", "nowhere/nope"], "a ranking environment has no rating"),
    (ENV, ["--policy", "scripted", "--model", "user_average"], "--policy scripted has no token probabilities"),
])
def test_cli_eval_refuses_rating_from_probs_where_it_cannot_apply(env_id, extra, words, tmp_path, capsys):
    """It was silently a no-op there: every prediction the parsed one, the file saying rating_from_probs."""
    from recgym.cli import main

    data = {"RecRating-MovieLens-v0": movielens(tmp_path / "ml"), "RecRating-IMDb-v0": fx.imdb(tmp_path / "imdb")}
    where = ["--env-kwargs", json.dumps({"data_dir": str(data[env_id]), "cache_dir": str(tmp_path / "cache")})] \
        if env_id in data else []
    assert main(["eval", env_id, *extra, "-n", "1", "--rating-from-probs", "--quiet", *where]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("recgym eval: error: --rating-from-probs cannot apply: ") and words in err, err
    assert err.endswith("; leave it out")


def test_evaluate_refuses_rating_from_probs_on_a_scale_of_more_than_digits(tmp_path):
    env = gym.make("RecRating-MovieLens-v0", split="test", data_dir=str(movielens(tmp_path / "ml")),
                   cache_dir=str(tmp_path / "cache"), progress=False)
    with pytest.raises(ValueError, match="rating_from_probs cannot apply: the movielens scale 0.5-5 step 0.5"):
        evaluate(env, ScriptedPolicy(), n=1, rating_from_probs=True)


def test_no_baselines_on_the_train_split_which_they_are_fit_on(capsys):
    """On train, the baselines scored their own training ratings (user_mean MAE 0.000 on one-rating
    users) beside the LLM: they are left out, with a note saying why."""
    from recgym.agents.evaluation import IN_SAMPLE_NOTE
    from recgym.cli import main

    result = evaluate(gym.make(ENV, split="train"), ScriptedPolicy(), n=4)
    assert result.baselines == {} and result.baselines_note == IN_SAMPLE_NOTE
    assert "fit on it" in IN_SAMPLE_NOTE and "--split valid or test" in IN_SAMPLE_NOTE
    assert main(["eval", ENV, "--policy", "scripted", "--model", "user_average", "--split", "train", "-n", "3",
                 "--quiet"]) == 0
    printed = " ".join(capsys.readouterr().out.split())
    assert "(baseline)" not in printed and "no baselines on the train split" in printed
    assert main(["eval", ENV, "--policy", "scripted", "--model", "user_average", "--split", "valid", "-n", "3",
                 "--quiet"]) == 0
    assert "user_mean (baseline)" in capsys.readouterr().out


# ---- resuming rewrites the file only to drop a torn line, and then atomically ----

def test_resume_leaves_a_whole_file_alone(tmp_path, monkeypatch):
    """Every resume rewrote --out in place: a kill during the rewrite of a big file left a fraction of it."""
    from pathlib import Path

    env = gym.make(ENV, split="test")
    out = tmp_path / "results.jsonl"
    evaluate(env, ScriptedPolicy(), n=3, out=out, baselines=False)
    rewrites = []
    real = Path.write_text
    monkeypatch.setattr(Path, "write_text", lambda self, *a, **k: (rewrites.append(self), real(self, *a, **k))[1])
    monkeypatch.setattr("os.replace", lambda *a: rewrites.append(a))
    result = evaluate(env, ScriptedPolicy(), n=5, out=out, baselines=False)
    assert result.skipped == 3 and rewrites == [] and len(read_records(out)) == 5


def test_resume_drops_a_torn_line_whole_or_not_at_all(tmp_path, monkeypatch):
    """A kill in the middle of the repair must leave the old file, not a fraction of its records."""
    from pathlib import Path

    env = gym.make(ENV, split="test")
    out = tmp_path / "results.jsonl"
    evaluate(env, ScriptedPolicy(), n=4, out=out, baselines=False)
    lines = out.read_text().splitlines(keepends=True)
    torn = "".join(lines[:3]) + lines[3][:25]
    out.write_text(torn)

    class Killed(Exception):
        pass

    real = Path.write_text

    def dies_half_way(self, text, *args, **kwargs):
        real(self, text[: len(text) // 2], *args, **kwargs)
        raise Killed

    monkeypatch.setattr(Path, "write_text", dies_half_way)
    with pytest.raises(Killed):
        evaluate(env, ScriptedPolicy(), n=4, out=out, baselines=False)
    assert out.read_text() == torn  # the repair went to a temporary file
    monkeypatch.setattr(Path, "write_text", real)
    again = evaluate(env, ScriptedPolicy(), n=4, out=out, baselines=False)
    assert again.skipped == 3 and [r["index"] for r in read_records(out)] == [0, 1, 2, 3]
    assert out.read_text().endswith("\n") and len(out.read_text().splitlines()) == 4
    assert not list(tmp_path.glob(".results.jsonl.*"))


def test_resume_repairs_a_last_line_without_its_newline(tmp_path):
    env = gym.make(ENV, split="test")
    out = tmp_path / "results.jsonl"
    evaluate(env, ScriptedPolicy(), n=2, out=out, baselines=False)
    out.write_text(out.read_text().rstrip("\n"))
    evaluate(env, ScriptedPolicy(), n=3, out=out, baselines=False)
    assert [r["index"] for r in read_records(out)] == [0, 1, 2]


# ---- non-finite sampling numbers ----

@pytest.mark.parametrize("field, value", [("temperature", float("nan")), ("temperature", float("inf")),
                                          ("top_p", float("nan")), ("max_new_tokens", float("nan")),
                                          ("max_new_tokens", float("inf")), ("seed", float("nan")),
                                          ("logprobs", float("nan"))])
def test_sampling_params_refuse_non_finite_numbers(field, value):
    """temperature=nan passed `< 0`: records held NaN and the identical rerun was refused ("nan, not nan")."""
    from recgym.agents.types import SamplingParams

    with pytest.raises(ValueError, match=f"{field} must be a (finite|whole) number, got {value}"):
        SamplingParams(**{field: value})


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_cli_eval_refuses_a_non_finite_temperature_in_one_line(value, tmp_path, capsys):
    """--policy openai --temperature inf was reported as `HTTP 200: not a chat completion` after 4 tries."""
    from recgym.cli import main

    out = tmp_path / "e.jsonl"
    assert main(["eval", ENV, "--policy", "openai", "--model", "m", "--base-url", "http://127.0.0.1:9/v1",
                 "--retries", "0", "-n", "1", "--quiet", "--temperature", value, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"recgym eval: error: temperature must be a finite number, got {value}"]
    assert not out.exists()


def test_openai_policy_reports_a_request_it_cannot_encode_as_its_own_error():
    """The client's local encoding error was taken for a server's bad body (HTTP 200) and retried."""
    from recgym.agents.policies.openai import EndpointError, OpenAIPolicy
    from recgym.agents.types import SamplingParams

    tools = [{"type": "function", "function": {"name": "f", "parameters": {"weight": float("nan")}}}]
    policy = OpenAIPolicy("m", base_url="http://127.0.0.1:9/v1", max_retries=2, backoff=0.01, tools=tools)
    with pytest.raises(ValueError, match=r"cannot send a request to http://127\.0\.0\.1:9/v1/chat/completions: "
                                         r"its body is not JSON") as err:
        policy.generate(["hi"], sampling=SamplingParams(temperature=0.0))
    assert not isinstance(err.value, EndpointError) and policy.stats["requests"] == 0


# ---- k completions: each unparsed one counts as the fallback; coverage per completion ----

class ParsesSome:
    """Completion j of every sample rates ``ratings[j]``, or is prose where that is None."""

    tokenizer = None

    def __init__(self, ratings):
        self.ratings = ratings

    def generate(self, prompts, n=1, sampling=None):
        assert n == len(self.ratings)
        return [[Completion("no idea" if r is None else GOOD.format(r), [1], [2], [-0.1], "stop") for r in self.ratings]
                for _ in prompts]


def test_mean_of_k_counts_each_unparsed_completion_as_the_fallback():
    """parsed_ratings [None, 3, 3] gave the prediction 3.0 and coverage 100%: the unparsed one vanished."""
    env = gym.make(ENV, split="valid")
    result = evaluate(env, ParsesSome([None, 3, 3]), n=4, samples_per_prompt=3, baselines=False)
    for r in result.records:
        assert r["parsed_ratings"] == [None, 3.0, 3.0] and r["parsed_share"] == pytest.approx(2 / 3)
        assert r["prediction"] == pytest.approx((r["fallback"] + 6) / 3) == r["prediction_or_fallback"]
        assert r["mean_of_k"] == "each unparsed completion counts as the fallback"
    m = result.metrics
    assert m.coverage == pytest.approx(2 / 3) and m.format_rate == pytest.approx(2 / 3)
    assert m.mae == pytest.approx(np.mean([abs(r["prediction_or_fallback"] - r["target"]) for r in result.records]))
    assert math.isnan(m.mae_parsed)  # no sample had every completion parsed
    none = evaluate(env, ParsesSome([None, None]), n=2, samples_per_prompt=2, baselines=False)
    assert all(r["prediction"] is None and r["prediction_or_fallback"] == r["fallback"] for r in none.records)
    assert none.metrics.coverage == 0


def test_one_completion_per_sample_is_the_rule_it_always_was():
    """k=1 with the declared fallback: the prediction is the parsed rating, or None (the fallback)."""
    result = evaluate(gym.make(ENV, split="test"), ScriptedPolicy(), n=4, baselines=False)
    assert [r["prediction"] for r in result.records] == [4.0, None, 4.0, None]
    assert [r["parsed_share"] for r in result.records] == [1.0, 0.0, 1.0, 0.0]
    assert "mean_of_k" not in result.records[0]
    assert result.metrics.coverage == 0.5
    assert result.metrics.mae_parsed == pytest.approx(np.mean([abs(4 - r["target"]) for r in result.records[::2]]))


def test_a_mean_of_k_file_of_an_older_recgym_is_not_resumed(tmp_path):
    """It averaged the parsed completions only: its records and new ones would not mean the same."""
    env = gym.make(ENV, split="valid")
    out = tmp_path / "k.jsonl"
    evaluate(env, ParsesSome([3, 4]), n=2, samples_per_prompt=2, out=out, baselines=False)
    old = [{k: v for k, v in r.items() if k not in ("mean_of_k", "parsed_share")} for r in read_records(out)]
    out.write_text("".join(json.dumps(r) + "\n" for r in old))
    with pytest.raises(ValueError, match="no mean_of_k, not 'each unparsed completion counts as the fallback'"):
        evaluate(env, ParsesSome([3, 4]), n=3, samples_per_prompt=2, out=out, baselines=False)


def test_records_of_an_older_recgym_with_one_completion_resume_with_their_coverage(tmp_path):
    env = gym.make(ENV, split="test")
    out = tmp_path / "r.jsonl"
    evaluate(env, ScriptedPolicy(), n=4, out=out, baselines=False)
    old = [{k: v for k, v in r.items() if k not in ("parsed_share", "seconds")} for r in read_records(out)]
    out.write_text("".join(json.dumps(r) + "\n" for r in old))
    result = evaluate(env, ScriptedPolicy(), n=4, out=out, baselines=False)
    assert result.skipped == 4 and result.metrics.coverage == 0.5 and result.seconds_total is None


# ---- --rating-from-probs: which tag, and how often it decoded ----

def _pieces_completion(pieces, digit_probs):
    """A completion of token ``pieces`` whose digit tokens carry ``digit_probs`` (token -> probability)."""
    top = [{p: math.log(q) for p, q in digit_probs[k].items()} if k in digit_probs else {} for k in range(len(pieces))]
    return Completion("".join(pieces), [], [], [-0.1] * len(pieces), "stop", top_logprobs=top, tokens=pieces)


def test_expected_rating_decodes_at_the_tag_the_reward_parses():
    """The reward reads the first <rate> holding a number; the probabilities were read at the last one."""
    from recgym.rewards import parse_completion

    pieces = ["<rate>", "5", "</rate>", " then ", "<rate>", "2", "</rate>"]
    c = _pieces_completion(pieces, {1: {"5": 0.5, "4": 0.5}, 5: {"2": 0.5, "1": 0.5}})
    assert parse_completion(c.text).rating == 5
    assert expected_rating(c, RatingScale(1, 5)) == pytest.approx(4.5)
    # a first tag holding no number is skipped by both
    words = _pieces_completion(["<rate>", "high", "</rate>", "<rate>", "3", "</rate>"], {4: {"3": 0.5, "2": 0.5}})
    assert parse_completion(words.text).rating == 3
    assert expected_rating(words, RatingScale(1, 5)) == pytest.approx(2.5)
    assert expected_rating(_pieces_completion(["<rate>", "4 stars", "</rate>"], {1: {"4": 1.0}}), RatingScale(1, 5)) is None


class WithLogprobs:
    """Rates 4 with digit probabilities on the even samples it is asked for, and none on the odd ones."""

    tokenizer = None

    def __init__(self, probs=True):
        self.calls, self.probs = 0, probs

    def generate(self, prompts, n=1, sampling=None):
        out = []
        for _ in prompts:
            pieces = [GOOD.format(4)[: GOOD.index("<rate>")], "<rate>", "4", "</rate>"]
            digits = {2: {"4": 0.5, "2": 0.5}} if self.probs and self.calls % 2 == 0 else {}
            self.calls += 1
            out.append([_pieces_completion(pieces, digits) for _ in range(n)])
        return out


def test_evaluate_counts_the_samples_rating_from_probs_decoded(recwarn):
    env = gym.make(ENV, split="valid")
    result = evaluate(env, WithLogprobs(), n=4, rating_from_probs=True, baselines=False)
    assert result.probs_decoded == 2 and [r["prediction"] for r in result.records] == [3.0, 4.0, 3.0, 4.0]
    assert not [w for w in recwarn if "rating_from_probs" in str(w.message)]
    with pytest.warns(UserWarning, match="rating_from_probs decoded no rating on any of the 3 samples"):
        none = evaluate(env, WithLogprobs(probs=False), n=3, rating_from_probs=True, baselines=False)
    assert none.probs_decoded == 0
    assert evaluate(env, WithLogprobs(), n=2, baselines=False).probs_decoded is None


def test_cli_eval_says_how_often_rating_from_probs_decoded(tmp_path, capsys, monkeypatch):
    """A server without top_logprobs: every prob_ratings [null], and nothing said so."""
    from recgym.agents import policies
    from recgym.cli import main

    monkeypatch.setattr(policies, "make_policy", lambda *a, **k: WithLogprobs(probs=False))
    metrics = tmp_path / "m.json"
    assert main(["eval", ENV, "--policy", "openai", "--model", "m", "-n", "3", "--rating-from-probs", "--quiet",
                 "--no-baselines", "--metrics-json", str(metrics)]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert "--rating-from-probs decoded the rating on 0 of 3 samples" in err
    assert "recgym: warning: rating_from_probs decoded no rating on any of the 3 samples" in err
    assert json.loads(metrics.read_text())["probs_decoded"] == 0


# ---- --max-model-len with --policy hf ----

def test_cli_eval_gives_max_model_len_to_the_hf_policy_as_its_context(tmp_path, capsys, monkeypatch):
    """It was dropped for hf (the model's own context was used) yet its default blocked a resume."""
    from recgym.agents import policies
    from recgym.cli import main

    made = []
    monkeypatch.setattr(policies, "make_policy", lambda name, model, **kw: made.append(kw) or ScriptedPolicy())
    hf = ["eval", ENV, "--policy", "hf", "--model", "m", "--no-baselines", "--quiet"]
    out = tmp_path / "e.jsonl"
    assert main([*hf, "-n", "2", "--out", str(out), "--max-model-len", "256"]) == 0
    assert made[-1]["max_context"] == 256 and read_records(out)[0]["max_model_len"] == 256
    assert main([*hf, "-n", "3", "--out", str(out), "--max-model-len", "256"]) == 0
    capsys.readouterr()
    assert main([*hf, "-n", "4", "--out", str(out), "--max-model-len", "512"]) == 2
    assert "max_model_len=256, not 512" in capsys.readouterr().err
    own = tmp_path / "own.jsonl"
    assert main([*hf, "-n", "2", "--out", str(own)]) == 0  # the model's own context
    assert "max_context" not in made[-1] and "max_model_len" not in read_records(own)[0]
    assert main([*hf, "-n", "3", "--out", str(own)]) == 0


# ---- a custom dataset's --path however it is spelled ----

def test_cli_eval_resumes_a_custom_dataset_named_by_another_spelling_of_its_path(tmp_path, capsys, monkeypatch):
    """`--path c.csv` and `--path /abs/c.csv` are one dataset (one dataset_key), but the resume was refused."""
    from recgym.cli import main

    rows = [f"{u},{i},{(u * 7 + i) % 5 + 1},{1000 * u + i}" for u in range(1, 9) for i in range(1, 7)]
    fx.write_lines(tmp_path / "c.csv", ["uid,iid,stars,ts", *rows])
    custom = ["eval", "RecRating-Custom-v0", "--policy", "scripted", "--model", "user_average", "--no-baselines",
              "--quiet", "--columns", "user=uid,item=iid,rating=stars,timestamp=ts", "--scale", "1", "5",
              "--cache-dir", str(tmp_path / "cache")]
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "e.jsonl"
    assert main([*custom, "--path", "c.csv", "-n", "2", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main([*custom, "--path", str(tmp_path / "c.csv"), "-n", "3", "--out", str(out)]) == 0
    assert "resumed: 2 samples" in capsys.readouterr().err
    assert read_records(out)[0]["env_kwargs"]["path"] == str((tmp_path / "c.csv").resolve())


# ---- smaller ----

def test_cli_eval_says_when_n_is_more_than_the_split_holds(capsys):
    from recgym.cli import main

    size = len(gym.make(ENV, split="valid").unwrapped)
    assert main([*SCRIPTED, "--split", "valid", "-n", str(size + 50)]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert f"-n {size + 50}: the valid split has {size} samples; evaluating all {size}" in err


def test_cli_eval_metrics_json_times_every_record_and_notes_missing_baselines(tmp_path, monkeypatch):
    """After a resume `seconds` was the last call's alone; on train `baselines: {}` came without its reason."""
    from recgym.agents import evaluation
    from recgym.cli import main

    out, metrics = tmp_path / "e.jsonl", tmp_path / "m.json"
    assert main([*SCRIPTED, "-n", "3", "--out", str(out)]) == 0
    first = sum(r["seconds"] for r in read_records(out))
    assert main([*SCRIPTED, "-n", "5", "--out", str(out), "--metrics-json", str(metrics)]) == 0
    payload = json.loads(metrics.read_text())
    assert payload["seconds"] == pytest.approx(sum(r["seconds"] for r in read_records(out)))
    assert payload["seconds"] >= first and payload["seconds_this_run"] <= payload["seconds"] + 1e-9
    assert payload["baselines_note"] == ""
    with_baselines = [a for a in SCRIPTED if a != "--no-baselines"]
    assert main([*with_baselines, "-n", "2", "--split", "train", "--metrics-json", str(metrics)]) == 0
    payload = json.loads(metrics.read_text())
    assert payload["baselines"] == {} and payload["baselines_note"] == evaluation.IN_SAMPLE_NOTE


def test_cli_eval_resumes_another_seed_under_greedy_decoding(tmp_path, capsys):
    """At temperature 0 the seed changes nothing, yet a rerun with another --seed was refused."""
    from recgym.cli import main

    out = tmp_path / "e.jsonl"
    assert main([*SCRIPTED, "-n", "2", "--out", str(out)]) == 0
    assert main([*SCRIPTED, "-n", "3", "--out", str(out), "--seed", "7"]) == 0
    assert "resumed: 2 samples" in capsys.readouterr().err
    sampled = tmp_path / "s.jsonl"
    assert main([*SCRIPTED, "-n", "2", "--out", str(sampled), "--temperature", "0.5"]) == 0
    capsys.readouterr()
    assert main([*SCRIPTED, "-n", "3", "--out", str(sampled), "--temperature", "0.5", "--seed", "7"]) == 2
    assert "seed=0, not 7" in capsys.readouterr().err


# ---- one sample once per file, one writer at a time ----

def test_resume_refuses_a_file_holding_a_sample_twice(tmp_path, capsys):
    """Two evals on one --out (or two files joined) resumed every record: n=376 on a 200-sample split."""
    from recgym.cli import main

    out = tmp_path / "e.jsonl"
    assert main([*SCRIPTED, "-n", "3", "--out", str(out)]) == 0
    out.write_text(out.read_text() * 2)
    capsys.readouterr()
    assert main([*SCRIPTED, "-n", "3", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{out} holds sample 0 twice" in err[0] and "--no-resume" in err[0], err
    with pytest.raises(ValueError, match="holds sample 0 twice.*another --out"):
        evaluate(gym.make(ENV, split="test"), ScriptedPolicy(), n=3, out=out, baselines=False,
                 header={"env_id": ENV, "model": "user_average", "policy": "scripted", "env_kwargs": {}})


def test_a_second_eval_on_an_out_being_written_fails_at_once_and_leaves_it_whole(tmp_path, capsys):
    """A second eval appended the same samples to the file the first was writing (and --no-resume emptied it)."""
    from recgym.cli import main

    env, out = gym.make(ENV, split="test"), tmp_path / "e.jsonl"
    refusals = []

    def second_eval(record, running):
        if running["done"] != 2:
            return
        for resume in (True, False):
            with pytest.raises(ValueError, match="is being written by another eval") as caught:
                evaluate(env, ScriptedPolicy(), n=4, out=out, resume=resume, baselines=False)
            refusals.append(str(caught.value))
        # the CLI says so before a model loads (this one does not exist)
        refusals.append(main([*SCRIPTED, "--policy", "hf", "--model", "nowhere/nope", "-n", "4", "--out", str(out)]))

    evaluate(env, ScriptedPolicy(), n=4, out=out, baselines=False, batch_size=1, on_record=second_eval)
    assert len(refusals) == 3 and refusals[2] == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is being written by another eval" in err[0], err
    assert [r["index"] for r in read_records(out)] == [0, 1, 2, 3]
    assert evaluate(env, ScriptedPolicy(), n=4, out=out, baselines=False).skipped == 4  # free again


# ---- a setting the file holds and this run leaves out ----

def test_cli_eval_refuses_to_resume_a_file_whose_max_model_len_is_left_out_now(tmp_path, capsys, monkeypatch):
    """--max-model-len 400 on the first run and none on the resume mixed truncated and full contexts."""
    from recgym.agents import policies
    from recgym.cli import main

    monkeypatch.setattr(policies, "make_policy", lambda name, model, **kw: ScriptedPolicy())
    hf = ["eval", ENV, "--policy", "hf", "--model", "m", "--no-baselines", "--quiet"]
    out = tmp_path / "e.jsonl"
    assert main([*hf, "-n", "1", "--out", str(out), "--max-model-len", "400"]) == 0
    capsys.readouterr()
    assert main([*hf, "-n", "2", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "max_model_len=400, not given" in err[0], err
    assert [r["index"] for r in read_records(out)] == [0]


def test_evaluate_refuses_to_resume_a_file_scored_by_another_policy(tmp_path, capsys):
    """evaluate(out=) recorded no policy: UserAveragePolicy resumed the reasoner's file and reported its MAE."""
    from recgym.agents.teachers.scripted import SyntheticReasonerPolicy, UserAveragePolicy
    from recgym.cli import main

    env, out = gym.make(ENV, split="test"), tmp_path / "py.jsonl"
    evaluate(env, SyntheticReasonerPolicy(), n=4, out=out, baselines=False)
    record = read_records(out)[0]
    assert record["policy"] == "SyntheticReasonerPolicy" and record["model"] == SyntheticReasonerPolicy.name
    with pytest.raises(ValueError, match="policy='SyntheticReasonerPolicy', not 'UserAveragePolicy'"):
        evaluate(env, UserAveragePolicy(), n=4, out=out, baselines=False)
    assert evaluate(env, SyntheticReasonerPolicy(), n=5, out=out, baselines=False).skipped == 4
    assert evaluate(env, None, n=5, out=out, baselines=False).skipped == 5  # a finished file read back
    # a CLI file names its policy and model: another policy from Python is refused, its header stands
    cli = tmp_path / "cli.jsonl"
    assert main([*SCRIPTED, "-n", "2", "--out", str(cli)]) == 0
    assert read_records(cli)[0]["policy"] == "scripted" and read_records(cli)[0]["model"] == "user_average"
    with pytest.raises(ValueError, match="env_id='RecRating-Synthetic-v0', not given"):
        evaluate(env, UserAveragePolicy(), n=2, out=cli, baselines=False)
    # ranking too
    rank_env, ranked = gym.make("RecRank-Synthetic-v0", split="valid"), tmp_path / "rank.jsonl"
    evaluate(rank_env, PromptOrder(), n=2, out=ranked, baselines=False)
    from recgym.agents.teachers.scripted import SyntheticRankerPolicy

    with pytest.raises(ValueError, match="policy='PromptOrder', not 'SyntheticRankerPolicy'"):
        evaluate(rank_env, SyntheticRankerPolicy(), n=2, out=ranked, baselines=False)


class PromptOrder:
    """A ranking policy that answers prose."""

    def generate(self, prompts, n=1, sampling=None):
        return [[Completion("no idea", [1], [2], [-0.1], "stop") for _ in range(n)] for _ in prompts]


# ---- --rating-from-probs on a rating of more than one digit token ----

def test_expected_rating_leaves_a_decimal_rating_to_the_parsed_one():
    """<rate>4.5</rate> with P(4)=0.99 at its first digit was scored 4.01, not the 4.5 the model wrote."""
    scale = RatingScale(1, 5)
    decimal = _pieces_completion(["<rate>", "4", ".", "5", "</rate>"], {1: {"4": 0.99, "5": 0.01}})
    assert expected_rating(decimal, scale) is None
    assert expected_rating(_pieces_completion(["<rate>", "4", ".0", "</rate>"], {1: {"4": 0.5, "2": 0.5}}), scale) is None
    one_digit = _pieces_completion(["<rate>", " 4", " ", "</rate>"], {1: {"4": 0.5, "2": 0.5}})
    assert expected_rating(one_digit, scale) == pytest.approx(3.0)


def test_evaluate_keeps_the_parsed_decimal_rating_as_not_decoded():
    class WritesDecimals:
        tokenizer = None

        def generate(self, prompts, n=1, sampling=None):
            pieces = [GOOD.format(4)[: GOOD.index("<rate>")], "<rate>", "4", ".", "5", "</rate>"]
            return [[_pieces_completion(pieces, {2: {"4": 0.99, "5": 0.01}}) for _ in range(n)] for _ in prompts]

    with pytest.warns(UserWarning, match="decoded no rating on any of the 2 samples"):
        result = evaluate(gym.make(ENV, split="valid"), WritesDecimals(), n=2, rating_from_probs=True, baselines=False)
    assert [r["prediction"] for r in result.records] == [4.5, 4.5] and result.probs_decoded == 0
    assert all(r["prob_ratings"] == [None] for r in result.records)
