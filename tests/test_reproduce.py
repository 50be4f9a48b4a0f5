"""``recgym reproduce``: the table's shape, coverage beside every LLM figure, the resume (finished arms
are never rerun), the paired comparisons, the shipped configs, and one-line errors for bad configs.
The runs use the tiny random model of ``tests/tiny_lm.py`` with the HF backend on the synthetic worlds."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from test_eval import movielens
from tiny_lm import SHORT_PROMPTS

from recgym.cli import main
from recgym.reproduce import ReproduceConfig, run_reproduce

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
DATASETS = [
    {"name": "Synthetic", "env_id": "RecRating-Synthetic-v0", "env_kwargs": SHORT_PROMPTS},
    {"name": "SyntheticLong", "env_id": "RecRating-SyntheticLong-v0", "env_kwargs": SHORT_PROMPTS},
]


def tiny_config(tmp_path: Path, model: str, **overrides) -> dict:
    return {"datasets": DATASETS, "arms": ["zero_shot", "reczero"], "model": model, "policy": "hf", "eval_size": 4,
            "max_new_tokens": 8, "grpo_steps": 1, "group_size": 2, "prompts_per_step": 2, "learning_rate": 1e-3,
            "dtype": "float32", "cold_start_samples": 12, "live_display": False, "output_dir": str(tmp_path / "out"),
            **overrides}


def write_config(tmp_path: Path, values: dict) -> str:
    path = tmp_path / "reproduce.yaml"
    path.write_text(yaml.safe_dump(values))
    return str(path)


def test_tiny_reproduction_prints_the_table_and_resumes_without_rerunning(tmp_path, tiny_path, capsys):
    values = tiny_config(tmp_path, tiny_path)
    assert main(["reproduce", "--config", write_config(tmp_path, values)]) == 0
    printed = capsys.readouterr().out
    assert "recgym reproduce" in printed and "RecZero (GRPO)" in printed

    out = tmp_path / "out"
    table = json.loads((out / "table.json").read_text())
    assert list(table["datasets"]) == ["Synthetic", "SyntheticLong"]
    for column in table["datasets"].values():
        assert column["n"] == 4 and column["scale"] == "1-5"
        assert set(column["rows"]) == {"zero_shot", "reczero"}
        for row in column["rows"].values():  # every LLM figure carries its coverage and format rate
            assert row["kind"] == "llm" and 0 <= row["coverage"] <= 1 and 0 <= row["format_rate"] <= 1
            assert row["n"] == 4 and row["mae"] >= 0
        paired = column["paired"]["reczero_vs_zero_shot"]
        assert paired["se"] >= 0 and abs(paired["gain"]) <= 4
        assert "recone_vs_sft" not in column["paired"]

    markdown = (out / "table.md").read_text().splitlines()
    header, _rule, *rows = [line for line in markdown if line.startswith("|")]
    assert header.count("|") - 1 == 1 + 3 * 2  # the arm, then MAE, RMSE, coverage/format per dataset
    assert [r.split("|")[1].strip() for r in rows] == [
        "zero-shot", "RecZero (GRPO)", "RecZero vs zero-shot: gain ± SE"]
    assert "coverage / format" in header
    for row in rows[:2]:  # coverage / format beside every LLM figure, in each dataset
        cells = [c.strip() for c in row.split("|")[2:-1]]
        assert re.fullmatch(r"\d+% / \d+%", cells[2]) and re.fullmatch(r"\d+% / \d+%", cells[5]), cells
    assert re.fullmatch(r"[+-]\d\.\d{3} ± \d\.\d{3}", rows[2].split("|")[2].strip())
    assert not list(out.glob("*/reczero-*/checkpoints"))  # keep_checkpoints: false
    assert list(out.glob("*/reczero-*/metrics.jsonl"))

    arm_files = sorted(out.glob("*/*.json"))
    assert [p.relative_to(out).as_posix() for p in arm_files] == [
        "Synthetic/reczero.json", "Synthetic/zero_shot.json", "SyntheticLong/reczero.json", "SyntheticLong/zero_shot.json"]
    stamps = {p: p.stat().st_mtime_ns for p in arm_files}

    config = ReproduceConfig.from_yaml(write_config(tmp_path, values))
    again = run_reproduce(config)
    assert again["ran"] == [] and len(again["reused"]) == 4
    assert {p: p.stat().st_mtime_ns for p in arm_files} == stamps
    assert again["datasets"] == table["datasets"]

    (out / "SyntheticLong" / "reczero.json").unlink()  # as if killed during that arm
    third = run_reproduce(config)
    assert third["ran"] == [("SyntheticLong", "reczero")]


def test_settings_changed_under_saved_results_are_refused_in_one_line(tmp_path, tiny_path, capsys):
    values = tiny_config(tmp_path, tiny_path, arms=["baselines"], datasets=DATASETS[:1])
    assert main(["reproduce", "--config", write_config(tmp_path, values)]) == 0
    table = json.loads((tmp_path / "out" / "table.json").read_text())
    rows = table["datasets"]["Synthetic"]["rows"]
    assert {"global_mean", "user_mean", "biased_mf"} <= set(rows)
    assert all(r["kind"] == "baseline" and r["mae"] > 0 and r["n"] == 4 for r in rows.values())
    capsys.readouterr()
    assert main(["reproduce", "--config", write_config(tmp_path, values), "--eval_size", "6"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "eval_size" in err and "other settings" in err
    saved = tmp_path / "out" / "Synthetic" / "baselines.json"  # saved before trainable_layers existed
    result = json.loads(saved.read_text())
    del result["protocol"]["trainable_layers"]
    saved.write_text(json.dumps(result))
    assert main(["reproduce", "--config", write_config(tmp_path, values)]) == 0
    assert main(["reproduce", "--config", write_config(tmp_path, values), "--trainable_layers", "2"]) == 2
    assert "trainable_layers" in capsys.readouterr().err


@pytest.mark.parametrize(("change", "expected"), [
    ({"datasets": [{"name": "X", "env_id": "RecRating-Nope-v0"}]}, "RecRating-Nope-v0"),
    ({"datasets": [{"name": "ML", "env_id": "RecRating-MovieLens-v0", "data_dir": "/nonexistent/movielens"}]},
     "data_dir /nonexistent/movielens is not a folder"),
    ({"datasets": [{"name": "ML", "env_id": "RecRating-MovieLens-v0"}]}, "ML"),  # no data_dir: the default place
    ({"datasets": [{"name": "X", "env_id": "RecRating-Synthetic-v0", "dir": "x"}]}, "unknown key(s) dir"),
    ({"datasets": []}, "datasets is empty"),
    ({"arms": ["zero_shot", "ppo"]}, "unknown arm(s) ppo"),
    ({"learning_rat": 1.0}, "unknown ReproduceConfig field(s): learning_rat"),
    ({"grpo_steps": 0}, "grpo_steps must be >= 1"),
    ({"grpo_kwargs": {"max_steps": 50, "lora_r": 8}, "arms": ["baselines"]},
     "grpo_kwargs cannot set max_steps: reproduce sets these for both GRPO arms (set grpo_steps instead)"),
    # a paired difference needs 2 samples: was a traceback once every arm had run
    ({"eval_size": 1, "arms": ["baselines"]}, "eval_size must be >= 2"),
    ({"datasets": [{"name": "One", "env_id": "RecRating-Synthetic-v0", "env_kwargs": {"num_users": 1}}],
      "arms": ["baselines"]}, "dataset One: its valid split has 1 sample(s)"),
])
def test_a_bad_config_is_one_line_on_stderr(tmp_path, capsys, monkeypatch, change, expected):
    monkeypatch.setenv("RECGYM_DATA_DIR", str(tmp_path / "no-data"))
    values = {**tiny_config(tmp_path, "smollm2-135m-instruct"), **change}
    assert main(["reproduce", "--config", write_config(tmp_path, values)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("recgym reproduce: error:") and expected in err, err


def test_grpo_kwargs_cannot_set_what_defines_the_table():
    """They overrode every column's env, split, budget and folder (all four GRPO arms in one, each deleting the last)."""
    with pytest.raises(ValueError) as refused:
        ReproduceConfig.from_yaml(ROOT / "examples/configs/reproduce_cpu.yaml", ["--grpo_kwargs", (
            "{env_id: RecRating-Synthetic-v0, eval_split: test, eval_size: 5, max_steps: 50, output_dir: /tmp/same, "
            "eval_batch_size: 5, policy_kwargs: {}}")])
    assert str(refused.value) == (
        "grpo_kwargs cannot set env_id, eval_batch_size, eval_size, eval_split, max_steps, output_dir, policy_kwargs: "
        "reproduce sets these for both GRPO arms (set datasets, eval_size, eval_split, grpo_steps, output_dir, "
        "max_model_len, kv_cache_gib instead)")


def test_results_of_other_data_in_the_same_folder_are_refused(tmp_path, tiny_path, capsys, monkeypatch):
    """The protocol named the data folder, not what was in it: a rerun on new files reused the old figures."""
    from recgym.data import registry

    data = movielens(tmp_path / "ml")
    values = tiny_config(tmp_path, tiny_path, arms=["baselines"], datasets=[{
        "name": "ML", "env_id": "RecRating-MovieLens-v0", "data_dir": str(data),
        "env_kwargs": {"cache_dir": str(tmp_path / "cache"), "progress": False}}])
    assert main(["reproduce", "--config", write_config(tmp_path, values)]) == 0
    saved = json.loads((tmp_path / "out" / "ML" / "baselines.json").read_text())
    assert len(saved["protocol"]["dataset_key"]) == 20
    assert main(["reproduce", "--config", write_config(tmp_path, values)]) == 0  # the same data: reused
    movielens(data, offset=1)
    monkeypatch.setattr(registry, "_LOADED", {})  # as a new process would
    capsys.readouterr()
    assert main(["reproduce", "--config", write_config(tmp_path, values)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "ML/baselines.json was measured under other settings (dataset_key); use another " \
        "output_dir" in err[0], err


def test_the_reasoner_teacher_is_refused_on_real_data():
    with pytest.raises(ValueError, match="synthetic world only"):
        ReproduceConfig(datasets=[{"name": "ML", "env_id": "RecRating-MovieLens-v0", "data_dir": "x"}],
                        teacher="reasoner")


def test_gpu_config_passes_estimate_memory(capsys):
    assert main(["reproduce", "--config", str(ROOT / "examples/configs/reproduce_gpu.yaml"), "--estimate-memory"]) == 0
    out = capsys.readouterr().out
    assert "Qwen/Qwen2.5-7B-Instruct" in out and "fits" in out
    config = ReproduceConfig.from_yaml(ROOT / "examples/configs/reproduce_gpu.yaml")
    assert [s.env_id for s in config.dataset_specs()] == [
        "RecRating-AmazonBook-v0", "RecRating-AmazonMusic-v0", "RecRating-Yelp-v0", "RecRating-IMDb-v0"]
    assert config.model == "Qwen/Qwen2.5-7B-Instruct" and config.arms == ["baselines", "zero_shot", "sft", "reczero", "recone"]


def test_cpu_config_names_the_shared_real_data():
    config = ReproduceConfig.from_yaml(ROOT / "examples/configs/reproduce_cpu.yaml")
    specs = config.dataset_specs()
    assert [s.env_id for s in specs] == ["RecRating-MovieLens-v0", "RecRating-AmazonMusic-v0"]
    assert config.teacher == "user_average" and config.arms == ["baselines", "zero_shot", "sft", "reczero", "recone"]
    for spec in specs:
        assert spec.data_dir.startswith("../shared/data/")
        if SHARED_DATA.is_dir():
            assert (ROOT / spec.data_dir).is_dir(), spec.data_dir


def test_recone_starts_from_the_sft_arms_checkpoint(tmp_path, tiny_path):
    values = tiny_config(tmp_path, tiny_path, arms=["sft", "recone"], datasets=DATASETS[:1], teacher="reasoner")
    result = run_reproduce(ReproduceConfig(**values))
    assert result["ran"] == [("Synthetic", "sft"), ("Synthetic", "recone")]
    column = result["datasets"]["Synthetic"]
    assert set(column["rows"]) == {"sft", "recone"} and "recone_vs_sft" in column["paired"]
    out = tmp_path / "out" / "Synthetic"
    sft, recone = (json.loads((out / f"{arm}.json").read_text()) for arm in ("sft", "recone"))
    grpo_config = yaml.safe_load((Path(recone["model"]) / "config.yaml").read_text())
    assert grpo_config["model"] == sft["model"] and Path(sft["model"]).name == "sft"
    assert sft["indices"] == recone["indices"] == [0, 1, 2, 3]


@pytest.mark.parametrize(("kwargs", "taken", "instead"), [
    ({"train_split": "valid"}, "train_split", ""),  # RecZero/RecOne trained on the reported samples
    ({"eval_max_new_tokens": 8}, "eval_max_new_tokens", " (set max_new_tokens instead)"),  # another budget than zero-shot's
    ({"eval_interval": 1, "eval_on_start": True}, "eval_interval, eval_on_start", ""),  # the guard chose on them
])
def test_grpo_kwargs_cannot_train_on_tune_on_or_decode_the_reported_samples_differently(kwargs, taken, instead):
    datasets = [{"name": "S", "env_id": "RecRating-Synthetic-v0"}]
    with pytest.raises(ValueError) as refused:
        ReproduceConfig(datasets=datasets, collapse_action="restore", grpo_kwargs=kwargs)
    assert str(refused.value) == f"grpo_kwargs cannot set {taken}: reproduce sets these for both GRPO arms{instead}"
    config = ReproduceConfig(datasets=datasets, collapse_action="restore")
    grpo = config.grpo_config(config.dataset_specs()[0])  # evaluated once, at the end: nothing to restore or stop on
    assert (grpo.train_split, grpo.eval_split, grpo.eval_interval, grpo.eval_on_start) == ("train", "valid", 0, False)
    assert grpo.eval_max_new_tokens is None and grpo.max_new_tokens == config.max_new_tokens


def test_a_resume_where_dtype_auto_resolves_otherwise_is_refused_naming_dtype(tmp_path, tiny_path, capsys, monkeypatch):
    """``auto`` was saved unresolved: a resume on a CPU with AVX512-BF16 mixed its bfloat16 arms with the float32
    ones. The other CPU is a mock (this machine's bfloat16 support answered by a lambda)."""
    import torch

    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    values = tiny_config(tmp_path, tiny_path, arms=["baselines"], datasets=DATASETS[:1], dtype="auto")
    assert main(["reproduce", "--config", write_config(tmp_path, values)]) == 0
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    capsys.readouterr()
    assert main(["reproduce", "--config", write_config(tmp_path, values)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "other settings (dtype)" in err, err
    assert main(["reproduce", "--config", write_config(tmp_path, {**values, "dtype": "float32"}), "--arms",
                 "[baselines]"]) == 0  # what auto resolved to: the same precision, reused
    saved = tmp_path / "out" / "Synthetic" / "baselines.json"
    result = json.loads(saved.read_text())
    assert result["protocol"]["dtype"] == "float32"
    result["protocol"]["dtype"] = "auto"  # saved by an earlier recgym: what it resolved to is unknown
    saved.write_text(json.dumps(result))
    capsys.readouterr()
    assert main(["reproduce", "--config", write_config(tmp_path, values)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "saved with dtype auto" in err and "cannot be known" in err, err


class Killed(Exception):
    """Stands in for a kill -9 during an evaluation."""


def test_a_killed_evaluation_keeps_its_finished_batches(tmp_path, tiny_path, monkeypatch):
    """The zero-shot and SFT evaluations ran as one batch, so a kill left an empty JSONL. The resumed records
    equal those of a run in batches of 5 (greedy decoding does not depend on the batch)."""
    from recgym import reproduce
    from recgym.agents.policies.hf import HFPolicy

    generate, calls = HFPolicy.generate, []

    def generate_then_killed(self, prompts, *args, **kwargs):
        calls.append(len(prompts))
        if len(calls) == 2 and kill:
            raise Killed
        return generate(self, prompts, *args, **kwargs)

    monkeypatch.setattr(HFPolicy, "generate", generate_then_killed)
    values = tiny_config(tmp_path, tiny_path, arms=["zero_shot"], datasets=DATASETS[:1], eval_size=20)
    kill = True
    with pytest.raises(Killed):
        run_reproduce(ReproduceConfig(**values))
    (jsonl,) = (tmp_path / "out" / "Synthetic").glob("zero_shot_eval-*.jsonl")
    assert calls[0] == 16 and len(jsonl.read_text().splitlines()) == 16
    kill, calls[:] = False, []
    resumed = run_reproduce(ReproduceConfig(**values))
    assert resumed["ran"] == [("Synthetic", "zero_shot")] and calls == [4]

    monkeypatch.setitem(reproduce.EVAL_BATCH_SIZE, "hf", 5)
    run_reproduce(ReproduceConfig(**{**values, "output_dir": str(tmp_path / "by5")}))
    (by5,) = (tmp_path / "by5" / "Synthetic").glob("zero_shot_eval-*.jsonl")
    lines = [[{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in f.read_text().splitlines()]
             for f in (jsonl, by5)]
    assert lines[0] == lines[1]


def test_baselines_json_holds_per_sample_figures_on_the_llm_arms_samples(tmp_path, tiny_path):
    """It held MAE, RMSE and n only: neither the samples could be checked nor a paired SE against a baseline made."""
    from recgym.metrics import paired_difference

    values = tiny_config(tmp_path, tiny_path, arms=["baselines", "zero_shot"], datasets=DATASETS[:1])
    run_reproduce(ReproduceConfig(**values))
    out = tmp_path / "out" / "Synthetic"
    zero_shot, baselines = (json.loads((out / f"{arm}.json").read_text()) for arm in ("zero_shot", "baselines"))
    assert baselines["indices"] == zero_shot["indices"] == [0, 1, 2, 3]
    assert baselines["targets"] == zero_shot["targets"]
    assert {"global_mean", "user_mean", "biased_mf"} <= set(baselines["predictions"]) == set(baselines["baselines"])
    for name, scores in baselines["baselines"].items():
        errors = [abs(p - t) for p, t in zip(baselines["predictions"][name], baselines["targets"], strict=True)]
        assert scores["n"] == 4 and scores["mae"] == pytest.approx(sum(errors) / 4)
    arm_errors = [p - t for p, t in zip(zero_shot["predictions"], zero_shot["targets"], strict=True)]
    mean_errors = [p - t for p, t in zip(baselines["predictions"]["user_mean"], baselines["targets"], strict=True)]
    gain, se = paired_difference(mean_errors, arm_errors)
    assert abs(gain) <= 4 and se >= 0
