"""Every ``recgym`` sub-command ends an expected failure with one line on stderr and exit status 2
(a usage error: argparse's usage and error lines); ``--debug`` / ``RECGYM_DEBUG=1`` show the traceback."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import raw_fixtures as fx

from recgym.cli import main
from recgym.commands import CommandError

REPO = Path(__file__).resolve().parents[1]
RECONE = str(REPO / "examples/configs/recone_synthetic.yaml")
SYNTH = "RecRating-Synthetic-v0"
SFT_ROW = json.dumps({"prompt": [{"role": "user", "content": "rate"}],
                      "completion": [{"role": "assistant", "content": "<rate>4</rate>"}]}) + "\n"

#: A record of ``recgym eval SYNTH --policy scripted --model user_average --temperature 0.7``.
SYNTH_RECORD = {"split": "test", "dataset": "synthetic", "scale": "1-5", "template": "think", "rating_from_probs": False,
                "temperature": 0.7, "top_p": 1.0, "max_new_tokens": 512, "seed": 0, "stop": [], "samples_per_prompt": 1,
                "env_id": SYNTH, "model": "user_average", "policy": "scripted", "env_kwargs": {}, "index": 0}


def closed_port() -> int:
    """A local port with nothing listening on it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write(path: Path, text: str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path)


def synthetic_only(tmp: Path) -> list[str]:
    """``recgym reproduce``'s options for the synthetic column alone."""
    return ["--config", write(tmp / "r.yaml", f"datasets: [{{name: synthetic, env_id: {SYNTH}}}]\n"),
            "--output_dir", str(tmp / "r")]


def bad_yelp(tmp: Path) -> str:
    root = fx.yelp(tmp / "yelp")
    with open(root / "yelp_academic_dataset_review.json", "a") as f:
        f.write("{not json\n")
    return str(root)


def two_process_checkpoint(tmp: Path) -> str:
    """An output_dir whose checkpoint a two-process run wrote."""
    write(tmp / "run/checkpoints/step-000002/trainer_state.json", json.dumps({"step": 2, "num_processes": 2, "config": {}}))
    return str(tmp / "run")


#: name -> (argv built from tmp_path, the words the message must hold)
CASES: dict[str, tuple[Callable[[Path], list[str]], str]] = {
    # data
    "data-missing-dir": (lambda t: ["data", "prepare", "imdb", "--data-dir", str(t / "nowhere")], "IMDB_reviews.json"),
    "data-empty-dir": (lambda t: ["data", "prepare", "yelp", "--data-dir", str(fx.write_lines(t / "e" / "x", []).parent)],
                       "raw files not found"),
    "data-bad-record": (lambda t: ["data", "prepare", "yelp", "--data-dir", bad_yelp(t)], ":6: malformed_record"),
    "data-bad-columns": (lambda t: ["data", "prepare", "custom", "--path", write(t / "r.csv", "a,b\n"), "--columns", "user"],
                         "--columns"),
    "data-unmapped-columns": (lambda t: ["data", "prepare", "custom", "--path", write(t / "r.csv", "a,b\n"),
                                         "--columns", "user=a"], "columns must map"),
    "data-missing-file": (lambda t: ["data", "prepare", "custom", "--path", str(t / "none.csv"), "--columns",
                                     "user=a,item=b,rating=c,timestamp=d"], "does not exist"),
    "data-info-not-prepared": (lambda t: ["data", "info", "imdb", "--cache-dir", str(t / "c")], "not prepared yet"),
    "data-cache-dir-is-a-file": (lambda t: ["data", "prepare", "yelp", "--data-dir", str(fx.yelp(t / "yelp")),
                                            "--cache-dir", write(t / "f", "x")], "Not a directory"),
    "train-resume-nothing": (lambda t: ["train", "grpo", "--resume", "--output_dir", str(t / "empty")],
                             "nothing to resume"),
    "train-resume-other-process-count": (lambda t: ["train", "grpo", "--resume", "--output_dir", two_process_checkpoint(t)],
                                         "written by 2 process(es) and this run has 1; resume with 2"),
    "train-output-dir-is-a-file": (lambda t: ["train", "grpo", "--output_dir", write(t / "f", "x")],
                                   "is a file, not a folder"),
    "train-algorithm-file-missing": (lambda t: ["train", "grpo", "--algorithm", f"{t}/none.py:X"], "does not exist"),
    "data-ambiguous-amazon": (lambda t: ["data", "prepare", "amazon", "--data-dir", str(fx.yelp(t / "yelp"))],
                              "2 candidate files"),
    # baseline
    "baseline-empty-split": (lambda t: ["baseline", "RecRating-Custom-v0", "--path", write(
        t / "r.csv", "u,i,r,t\na,x,4,1\na,y,3,2\nb,x,5,3\nb,y,2,4\n"), "--columns", "user=u,item=i,rating=r,timestamp=t"],
        "split 'valid' of dataset 'custom' has no samples"),
    "baseline-unknown-env": (lambda t: ["baseline", "RecRating-Nope-v0"], "unknown environment"),
    "baseline-missing-dir": (lambda t: ["baseline", "RecRating-Yelp-v0", "--data-dir", str(t / "nowhere")],
                             "raw files not found"),
    "baseline-bad-scale": (lambda t: ["baseline", "RecRating-Custom-v0", "--path", write(t / "r.csv", "a,b,c,d\n"),
                                      "--columns", "user=a,item=b,rating=c,timestamp=d", "--scale", "5", "1"],
                           "high > low"),
    # eval
    "eval-unknown-env": (lambda t: ["eval", "RecRating-Nope-v0", "--quiet"], "see `recgym envs`"),
    "eval-missing-model": (lambda t: ["eval", SYNTH, "--model", str(t / "nope.gguf"), "--policy", "hf", "--quiet"],
                           "does not exist"),
    "eval-bad-env-kwargs": (lambda t: ["eval", SYNTH, "--env-kwargs", "{num_users: 3", "--quiet"], "--env-kwargs"),
    "eval-missing-data": (lambda t: ["eval", "RecRating-Yelp-v0", "--env-kwargs", json.dumps({"data_dir": str(t)}),
                                     "--quiet"], "raw files not found"),
    "eval-unreachable-endpoint": (lambda t: ["eval", SYNTH, "--policy", "openai", "-n", "1", "--retries", "0",
                                             "--base-url", f"http://127.0.0.1:{closed_port()}/v1", "--quiet",
                                             "--out", str(t / "out.jsonl")], "no response"),
    "eval-negative-temperature": (lambda t: ["eval", SYNTH, "--temperature", "-1", "--quiet"],
                                  "temperature must be >= 0, got -1.0"),
    "eval-zero-max-new-tokens": (lambda t: ["eval", SYNTH, "--max-new-tokens", "0", "--quiet"],
                                 "max_new_tokens must be >= 1, got 0"),
    "eval-zero-batch-size": (lambda t: ["eval", SYNTH, "--batch-size", "0", "--quiet"], "--batch-size must be >= 1, got 0"),
    "eval-negative-batch-size": (lambda t: ["eval", SYNTH, "--batch-size", "-2", "--quiet"],
                                 "--batch-size must be >= 1, got -2"),
    "eval-zero-samples": (lambda t: ["eval", SYNTH, "--samples", "0", "--quiet"], "--samples must be >= 1, got 0"),
    "eval-zero-n": (lambda t: ["eval", SYNTH, "-n", "0", "--quiet"], "-n must be >= 1, got 0"),
    "eval-resume-other-settings": (lambda t: ["eval", SYNTH, "--policy", "scripted", "--model", "user_average", "--out",
                                              write(t / "e.jsonl", json.dumps(SYNTH_RECORD) + "\n"), "--quiet"],
                                   "temperature=0.7, not 0.0"),
    # train
    "train-missing-sft-checkpoint": (lambda t: ["train", "grpo", "--config", RECONE], "recgym sft train"),
    "train-missing-config": (lambda t: ["train", "grpo", "--config", str(t / "none.yaml")], "cannot read config file"),
    "train-unparseable-config": (lambda t: ["train", "grpo", "--config", write(t / "c.yaml", "model: [1\n")],
                                 "not valid YAML"),
    "train-config-not-a-mapping": (lambda t: ["train", "grpo", "--config", write(t / "c.yaml", "- 1\n")],
                                   "expected a mapping"),
    "train-unknown-field": (lambda t: ["train", "grpo", "--config", write(t / "c.yaml", "nope: 1\n")], "unknown"),
    "train-bad-value": (lambda t: ["train", "grpo", "--group_size", "0"], "group_size must be >= 1"),
    "train-bad-type": (lambda t: ["train", "grpo", "--max_steps", "many"], "max_steps"),
    "train-bad-float": (lambda t: ["train", "grpo", "--learning_rate", "abc"], "learning_rate: expected float, got 'abc'"),
    "train-unknown-algorithm": (lambda t: ["train", "grpo", "--algorithm", "nope"], "unknown algorithm 'nope'"),
    "train-unknown-env": (lambda t: ["train", "grpo", "--env_id", "RecRating-Nope-v0"], "see `recgym envs`"),
    "train-bad-algorithm-kwargs": (lambda t: ["train", "grpo", "--algorithm_kwargs", "{bogus: 1}"],
                                   "algorithm_kwargs: "),
    "train-unknown-schedule": (lambda t: ["train", "grpo", "--lr_scheduler_type", "bogus"],
                               "lr_scheduler_type 'bogus' is not a schedule"),
    "train-bad-env-kwargs": (lambda t: ["train", "grpo", "--env_kwargs", "{nope: 1}"], "env_kwargs"),
    "train-env-kwargs-split": (lambda t: ["train", "grpo", "--env_kwargs", "{split: valid}"],
                               "env_kwargs cannot set split ('valid'): the run chooses each split (train, valid)"),
    "eval-env-kwargs-split": (lambda t: ["eval", SYNTH, "--policy", "scripted", "--model", "user_average",
                                         "--env-kwargs", '{"split": "valid"}'], "--env-kwargs cannot set split: use --split"),
    "train-unknown-split": (lambda t: ["train", "grpo", "--eval_split", "nope"], "split must be one of"),
    "reproduce-unknown-schedule": (lambda t: ["reproduce", *synthetic_only(t), "--sft_lr_scheduler_type", "bogus"],
                                   "sft_lr_scheduler_type 'bogus'"),
    "reproduce-bad-algorithm-kwargs": (lambda t: ["reproduce", *synthetic_only(t), "--algorithm_kwargs", "{bogus: 1}"],
                                       "algorithm_kwargs: "),
    # sft
    "sft-make-data-missing-config": (lambda t: ["sft", "make-data", "--config", str(t / "none.yaml")],
                                     "cannot read config file"),
    "sft-make-data-unknown-env": (lambda t: ["sft", "make-data", "--env_id", "RecRating-Nope-v0", "--output",
                                             str(t / "o.jsonl")], "RecRating-Nope"),
    "sft-make-data-unreachable-teacher": (
        lambda t: ["sft", "make-data", "--teacher_policy", "openai", "--num_samples", "1", "--samples_per_prompt", "1",
                   "--teacher_kwargs", f"{{base_url: 'http://127.0.0.1:{closed_port()}/v1', max_retries: 0}}",
                   "--output", str(t / "o.jsonl")], "no response"),
    "sft-make-data-unknown-policy": (lambda t: ["sft", "make-data", "--teacher_policy", "nope", "--output",
                                                str(t / "o.jsonl")], "unknown policy"),
    "sft-make-data-bad-split": (lambda t: ["sft", "make-data", "--teacher_policy", "scripted", "--teacher", "reasoner",
                                           "--split", "bogus", "--output", str(t / "o.jsonl")],
                                "split must be one of train, valid, test, got 'bogus'"),
    "sft-make-data-bad-env-kwargs": (lambda t: ["sft", "make-data", "--teacher_policy", "scripted", "--teacher",
                                                "reasoner", "--env_kwargs", "{bogus_kw: 1}", "--output",
                                                str(t / "o.jsonl")], "env_kwargs {'bogus_kw': 1}: "),
    "sft-make-data-negative-samples": (lambda t: ["sft", "make-data", "--teacher_policy", "scripted", "--teacher",
                                                  "reasoner", "--num_samples", "-5", "--output", str(t / "o.jsonl")],
                                       "num_samples must be >= 1, got -5"),
    "sft-make-data-zero-samples": (lambda t: ["sft", "make-data", "--teacher_policy", "scripted", "--teacher", "reasoner",
                                              "--num_samples", "0", "--output", str(t / "o.jsonl")],
                                   "num_samples must be >= 1, got 0"),
    "sft-make-data-zero-samples-per-prompt": (lambda t: ["sft", "make-data", "--teacher_policy", "scripted", "--teacher",
                                                         "reasoner", "--num_samples", "2", "--samples_per_prompt", "0",
                                                         "--output", str(t / "o.jsonl")],
                                              "samples_per_prompt must be >= 1, got 0"),
    "sft-make-data-zero-max-new-tokens": (lambda t: ["sft", "make-data", "--teacher_policy", "scripted", "--teacher",
                                                     "reasoner", "--num_samples", "2", "--max_new_tokens", "0",
                                                     "--output", str(t / "o.jsonl")], "max_new_tokens must be >= 1, got 0"),
    "sft-make-data-negative-tolerance": (lambda t: ["sft", "make-data", "--teacher_policy", "scripted", "--teacher",
                                                    "reasoner", "--num_samples", "2", "--tolerance", "-1", "--output",
                                                    str(t / "o.jsonl")], "tolerance must be >= 0, got -1"),
    "sft-make-data-negative-temperature": (lambda t: ["sft", "make-data", "--teacher_policy", "scripted", "--teacher",
                                                      "reasoner", "--num_samples", "2", "--temperature", "-1", "--output",
                                                      str(t / "o.jsonl")], "temperature must be >= 0, got -1"),
    "sft-make-data-output-under-a-file": (lambda t: ["sft", "make-data", "--teacher_policy", "scripted", "--teacher",
                                                     "reasoner", "--num_samples", "2", "--output",
                                                     str(Path(write(t / "f", "x")) / "o.jsonl")], "is a file, not a folder"),
    "sft-make-data-output-is-a-folder": (lambda t: ["sft", "make-data", "--teacher_policy", "scripted", "--teacher",
                                                    "reasoner", "--num_samples", "2", "--output", str(t)],
                                         "is a folder, not a file"),
    "sft-train-missing-data": (lambda t: ["sft", "train", "--data", str(t / "none.jsonl")], "recgym sft make-data"),
    "sft-train-empty-data": (lambda t: ["sft", "train", "--data", write(t / "d.jsonl", "\n")], "no training rows"),
    "sft-train-unknown-schedule": (lambda t: ["sft", "train", "--data", write(t / "d.jsonl", SFT_ROW),
                                              "--lr_scheduler_type", "bogus"], "lr_scheduler_type 'bogus'"),
    "sft-train-missing-model": (lambda t: ["sft", "train", "--data", write(t / "d.jsonl", SFT_ROW), "--model",
                                           str(t / "none")], "not found"),
    "sft-train-float16": (lambda t: ["sft", "train", "--data", write(t / "d.jsonl", SFT_ROW), "--max_steps", "1",
                                     "--dtype", "float16"], "float16 needs loss scaling"),
    "sft-train-unknown-dtype": (lambda t: ["sft", "train", "--data", write(t / "d.jsonl", SFT_ROW), "--max_steps", "1",
                                           "--dtype", "foo"], "dtype must be float32 or bfloat16"),
    "sft-train-zero-batch-size": (lambda t: ["sft", "train", "--data", write(t / "d.jsonl", SFT_ROW), "--max_steps",
                                             "1", "--per_device_train_batch_size", "0"],
                                  "per_device_train_batch_size must be >= 1, got 0"),
    "sft-train-zero-max-length": (lambda t: ["sft", "train", "--data", write(t / "d.jsonl", SFT_ROW), "--max_steps",
                                             "1", "--max_length", "0"], "max_length must be >= 1, got 0"),
    "sft-train-negative-learning-rate": (lambda t: ["sft", "train", "--data", write(t / "d.jsonl", SFT_ROW),
                                                    "--max_steps", "1", "--learning_rate", "-1"],
                                         "learning_rate must be > 0, got -1"),
    "sft-train-output-dir-is-a-file": (lambda t: ["sft", "train", "--data", write(t / "d.jsonl", SFT_ROW), "--max_steps",
                                                  "1", "--output_dir", write(t / "f", "x")], "is a file, not a folder"),
    "sft-train-plain-text-row": (lambda t: ["sft", "train", "--data", write(t / "d.jsonl", SFT_ROW + json.dumps(
        {"prompt": "rate", "completion": "<rate>4</rate>"}) + "\n"), "--max_steps", "1"],
        "d.jsonl:2: prompt is a JSON string: prompt and completion must be lists of {role, content} messages"),
    "sft-train-bad-json-line": (lambda t: ["sft", "train", "--data", write(t / "d.jsonl", SFT_ROW + "\n" + SFT_ROW[:-2]
                                                                          + ",}\n"), "--max_steps", "1"],
                                "d.jsonl:3: not JSON ("),
    "sft-train-valid-split-rows": (lambda t: ["sft", "train", "--data", write(t / "d.jsonl", json.dumps(
        {**json.loads(SFT_ROW), "split": "valid"}) + "\n"), "--max_steps", "1"],
        "1 of 1 rows come from other splits than train (1 from valid)"),
    "sft-train-over-a-finished-sft": (lambda t: ["sft", "train", "--data", write(t / "d.jsonl", SFT_ROW), "--max_steps",
                                                 "1", "--output_dir", str(Path(write(t / "o/sft_log.json", "[]")).parent)],
                                      "holds a finished SFT checkpoint: choose another output_dir, or give --overwrite"),
    "sft-train-into-a-grpo-run": (lambda t: ["sft", "train", "--data", write(t / "d.jsonl", SFT_ROW), "--max_steps", "1",
                                             "--output_dir", str(Path(write(t / "o/metrics.jsonl", "{}\n")).parent)],
                                  "holds a GRPO run"),
    "sft-train-into-a-model": (lambda t: ["sft", "train", "--data", write(t / "d.jsonl", SFT_ROW), "--max_steps", "1",
                                          "--output_dir", str(Path(write(t / "o/config.json", "{}")).parent)],
                               "holds a model that `recgym sft train` did not finish"),
    "sft-train-into-another-folder": (lambda t: ["sft", "train", "--data", write(t / "d.jsonl", SFT_ROW), "--max_steps",
                                                 "1", "--output_dir", str(Path(write(t / "o/notes.txt", "x")).parent)],
                                      "is not empty and holds no SFT run"),
    "sft-train-resume-nothing": (lambda t: ["sft", "train", "--data", write(t / "d.jsonl", SFT_ROW), "--resume",
                                            "--output_dir", str(t / "o")], "nothing to resume"),
    "sft-train-unknown-tracker": (lambda t: ["sft", "train", "--data", write(t / "d.jsonl", SFT_ROW), "--report_to",
                                             "[bogus]", "--output_dir", str(t / "o")],
                                  "report_to 'bogus' is not a tracker the HF Trainer knows"),
}


@pytest.mark.parametrize("case", CASES)
def test_expected_failure_is_one_line(case, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RECGYM_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("RECGYM_DEBUG", raising=False)
    monkeypatch.chdir(tmp_path)  # the recone config's relative checkpoint path must not exist
    argv, words = CASES[case]
    assert main(argv(tmp_path)) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if ": error: " in line]  # progress bars may precede it
    assert len(errors) == 1 and err.rstrip().endswith(errors[0]), err
    assert errors[0].startswith(f"recgym {argv(tmp_path)[0]}: error: ") and words in errors[0]
    assert "Traceback" not in err


@pytest.mark.parametrize("command", ["train grpo", "sft train"])
def test_more_trainable_layers_than_the_model_has_fail_before_it_loads(command, tiny_path, tmp_path, capsys):
    """Both learners refused them only after loading the weights, with a traceback."""
    data = ["--data", write(tmp_path / "d.jsonl", SFT_ROW)] if command == "sft train" else []
    argv = [*command.split(), "--model", tiny_path, "--trainable_layers", "3", "--output_dir", str(tmp_path / "o"), *data]
    assert main(argv) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        (f"recgym {command.split()[0]}: error: --model {tiny_path}: trainable_layers 3 is more than the model's 2 "
         "blocks: give at most 2, or 0 to train every weight")]


@pytest.mark.parametrize("argv", [[], ["envs", "--bogus"], ["algorithms", "extra"], ["data", "prepare", "nope"],
                                  ["baseline"], ["eval", SYNTH, "--policy", "nope"], ["train"],
                                  ["train", "grpo", "--bogus"], ["sft", "bake"]], ids=" ".join)
def test_usage_error_exits_2_with_usage(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: recgym") and "error:" in err and "Traceback" not in err


def test_debug_shows_the_exception(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CommandError, match="recgym sft train"):
        main(["--debug", "train", "grpo", "--config", RECONE])
    monkeypatch.setenv("RECGYM_DEBUG", "1")
    with pytest.raises(FileNotFoundError, match="IMDB_reviews.json"):
        main(["data", "prepare", "imdb", "--data-dir", str(tmp_path / "nowhere")])


def test_console_script_prints_one_line_or_with_debug_the_traceback(tmp_path):
    argv = [sys.executable, "-m", "recgym.cli", "data", "prepare", "imdb", "--data-dir", str(tmp_path / "nowhere")]
    env = {k: v for k, v in os.environ.items() if k != "RECGYM_DEBUG"}
    quiet = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env, check=False)
    assert quiet.returncode == 2 and len(quiet.stderr.strip().splitlines()) == 1, quiet.stderr
    assert "Traceback" not in quiet.stderr and "IMDB_reviews.json" in quiet.stderr
    loud = subprocess.run(argv, capture_output=True, text=True, timeout=120, env={**env, "RECGYM_DEBUG": "1"},
                          check=False)
    assert loud.returncode == 1 and "Traceback" in loud.stderr and "MissingDataError" in loud.stderr


def test_unexpected_exception_keeps_its_traceback(monkeypatch):
    """A bug is not an expected failure: it propagates."""
    from recgym.commands import envs

    def broken(args):
        raise KeyError("a bug")

    monkeypatch.setattr(envs, "run", broken)
    with pytest.raises(KeyError, match="a bug"):
        main(["envs"])


def test_warnings_print_as_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RECGYM_CACHE", str(tmp_path / "cache"))
    root = fx.amazon_2023(tmp_path / "amazon")
    (root / "Books.jsonl.gz").rename(root / "All_Beauty.jsonl.gz")
    (root / "meta_Books.jsonl.gz").rename(root / "meta_All_Beauty.jsonl.gz")
    assert main(["data", "prepare", "amazon_book", "--data-dir", str(root), "--keep-cold-samples"]) == 0
    err = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(err) == 2 and all(line.startswith("recgym: warning: ") and "All_Beauty" in line for line in err)


@pytest.mark.parametrize("target", ["tensorboard", "wandb", "trackio"])
def test_a_tracker_without_its_package_is_one_line_before_the_model_loads(target, tmp_path, monkeypatch, capsys):
    """``report_to`` ended in an ImportError traceback, and only once the model had loaded."""
    import importlib.util

    from recgym.agents import trainer

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == target else find_spec(name, *a))
    monkeypatch.setattr(trainer, "train", lambda *a, **k: pytest.fail("training started"))
    assert main(["train", "grpo", "--report_to", f"[{target}]", "--output_dir", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        (f"recgym train: error: report_to {target} needs the {target} package, which is not installed: "
         f"pip install {target} (or leave {target} out of report_to)")]


def test_estimate_memory_refuses_a_badly_typed_knob_in_one_line(capsys):
    """A knob of the wrong type is a TypeError, which --estimate-memory let through as a traceback."""
    assert main(["train", "grpo", "--estimate-memory", "--gpu_memory_gib", "79", "--algorithm", "dapo",
                 "--algorithm_kwargs", "{max_refills: many}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["recgym train grpo --estimate-memory: DAPO's max_refills must be an integer, got 'many'"]


def test_sft_over_a_finished_run_loads_and_writes_nothing(tmp_path, monkeypatch, capsys):
    """`sft train` wrote a new model over an earlier finished checkpoint without a word."""
    from recgym.agents import sft

    monkeypatch.setattr(sft, "train_sft", lambda *a, **k: pytest.fail("training started"))
    out = tmp_path / "o"
    write(out / "sft_log.json", "[]")
    argv = ["sft", "train", "--data", write(tmp_path / "d.jsonl", SFT_ROW), "--output_dir", str(out)]
    assert main(argv) == 2 and (out / "sft_log.json").read_text() == "[]"
    assert "give --overwrite to replace it" in capsys.readouterr().err
    with pytest.raises(pytest.fail.Exception, match="training started"):
        main([*argv, "--overwrite"])


def test_sft_rows_all_over_max_length_are_one_line_before_the_model_loads(tiny_path, tmp_path, monkeypatch, capsys):
    """A traceback once the model had loaded; the docs promised one line and status 2."""
    from recgym.agents import models

    monkeypatch.delenv("RECGYM_DEBUG", raising=False)
    monkeypatch.setattr(models, "load_model", lambda *a, **k: pytest.fail("the model loaded"))
    data = write(tmp_path / "d.jsonl", SFT_ROW)
    assert main(["sft", "train", "--data", data, "--model", tiny_path, "--output_dir", str(tmp_path / "o"),
                 "--max_steps", "1", "--max_length", "5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"recgym sft: error: {data}: all 1 rows are longer than max_length=5")
    assert not (tmp_path / "o").exists()


def test_sft_tracker_without_its_package_is_one_line_before_the_model_loads(tmp_path, monkeypatch, capsys):
    """`sft train --report_to '[tensorboard]'` without tensorboard: an ImportError traceback after the model loaded."""
    import importlib.util

    from recgym.agents import sft

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("tensorboard", "tensorboardX") else find_spec(name, *a))
    monkeypatch.setattr(sft, "train_sft", lambda *a, **k: pytest.fail("training started"))
    assert main(["sft", "train", "--data", write(tmp_path / "d.jsonl", SFT_ROW), "--report_to", "[tensorboard]",
                 "--output_dir", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        ("recgym sft: error: report_to tensorboard needs the tensorboard package, which is not installed: "
         "pip install tensorboard (or leave tensorboard out of report_to)")]


@pytest.mark.parametrize("command", ["train grpo", "sft train"])
def test_a_model_without_a_chat_template_is_one_line_before_it_loads(command, tmp_path, monkeypatch, capsys):
    """Both trainers ended in a traceback after loading the model (apply_chat_template)."""
    from tiny_lm import tiny_model, tiny_tokenizer

    from recgym.agents import sft, trainer

    model = tmp_path / "nochat"
    tiny_model().save_pretrained(model)
    tiny_tokenizer().save_pretrained(model)
    (model / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((model / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (model / "tokenizer_config.json").write_text(json.dumps(config))
    monkeypatch.setattr(trainer, "train", lambda *a, **k: pytest.fail("training started"))
    monkeypatch.setattr(sft, "train_sft", lambda *a, **k: pytest.fail("training started"))
    data = ["--data", write(tmp_path / "d.jsonl", SFT_ROW)] if command == "sft train" else []
    capsys.readouterr()  # the save's progress bar
    assert main([*command.split(), "--model", str(model), "--output_dir", str(tmp_path / "o"), *data]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"recgym {command.split()[0]}: error: model '{model}' has no chat template: ")


def test_end_process_group_leaves_an_in_process_vllm_engines_groups_to_it_mock_vllm(tmp_path, monkeypatch):
    """`train grpo --policy vllm` ended a finished run with a traceback at exit: end_process_group
    destroyed the default group the in-process engine had made, and the engine's own shutdown then
    destroyed it again ("Invalid process group specified"). A stand-in for vLLM's parallel_state
    (its _WORLD set while an engine holds groups) keeps this on CPU without starting vLLM."""
    import types

    import torch.distributed as dist

    from recgym.agents.learner.data_parallel import end_process_group

    state = types.ModuleType("vllm.distributed.parallel_state")
    state._WORLD = object()
    monkeypatch.setitem(sys.modules, "vllm.distributed.parallel_state", state)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        end_process_group()
        assert dist.is_initialized()  # left to the engine's shutdown
        state._WORLD = None  # the engine has shut down (or none ran): recgym's group is recgym's to end
        end_process_group()
        assert not dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def train_not_reached(*args, **kwargs):
    """Stands in for ``recgym.agents.trainer.train``: reaching it means the model would load."""
    raise AssertionError("train() was called: the model would load before the output_dir was checked")


@pytest.mark.parametrize(("output_dir", "words"), [
    ("afile/sub", "output_dir afile/sub: afile is a file, not a folder: choose another output_dir"),
    pytest.param("/proc/recgym-run", "output_dir /proc/recgym-run: /proc is not writable",
                 marks=pytest.mark.skipif(not Path("/proc").is_dir(), reason="Linux's /proc: no file can be made there")),
], ids=["under-a-file", "proc"])
def test_train_refuses_an_unusable_output_dir_before_loading_anything(output_dir, words, tiny_path, tmp_path,
                                                                      monkeypatch, capsys):
    """``train grpo`` loaded the model (and for vLLM configs started the engine), then failed on mkdir."""
    from recgym.agents import trainer
    from recgym.agents.config import GRPOConfig
    from recgym.commands.train import check_config

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RECGYM_DEBUG", raising=False)
    write(tmp_path / "afile", "x")
    monkeypatch.setattr(trainer, "train", train_not_reached)
    assert main(["train", "grpo", "--model", tiny_path, "--output_dir", output_dir, "--max_steps", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"recgym train: error: {words}") and "\n" not in err, err
    with pytest.raises(CommandError, match=words):  # the demo and `recgym reproduce` check their GRPO configs with it
        check_config(GRPOConfig(model=tiny_path, output_dir=output_dir))
