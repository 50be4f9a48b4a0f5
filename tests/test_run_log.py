"""What a training run shows and keeps (``recgym.agents.run_log``): one line per record where stdout
is not a terminal, the live table's rows, strict JSON, a resumable log after a crash, the curves."""

from __future__ import annotations

import io
import json
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from recgym.agents import run_log
from recgym.agents.config import GRPOConfig
from recgym.agents.run_log import RunLogger, plot_curves


def strict(text: str):
    """``json.loads`` that refuses ``NaN`` / ``Infinity`` as strict parsers do."""
    def refuse(name):
        raise ValueError(f"not strict JSON: {name}")

    return json.loads(text, parse_constant=refuse)


def die_mid_write(monkeypatch) -> None:
    """Every ``Path`` opened for writing dies halfway through its first write (a run killed there)."""
    real_open = Path.open

    class Dying:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, text):
            self.f.write(text[: len(text) // 2])
            self.f.close()
            raise KeyboardInterrupt

    def opener(self, mode="r", *args, **kwargs):
        f = real_open(self, mode, *args, **kwargs)
        return Dying(f) if "w" in mode else f

    monkeypatch.setattr(Path, "open", opener)


def logger(tmp_path, **overrides) -> RunLogger:
    return RunLogger(GRPOConfig(**{"output_dir": str(tmp_path), "plot": False, **overrides}))


TRAIN = {"reward": 0.5, "reward/format": 0.5, "reward/accuracy": 0.1, "format_rate": 1.0}


def test_without_a_terminal_each_record_prints_its_line_at_once(tmp_path, capsys):
    """With stdout piped, the live table printed nothing until the end, then only its last 12 rows."""
    log = logger(tmp_path, live_display=True)
    log.log({"step": 1, **TRAIN})
    assert capsys.readouterr().out == "step=1 reward=0.5 format_rate=1\n"
    for step in range(2, 15):
        log.log({"step": step, **TRAIN})
    log.close()
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == [f"step={s}" for s in range(2, 15)]


def test_in_a_terminal_the_live_table_uses_the_run_console_and_ends_its_line(tmp_path, monkeypatch):
    screen = io.StringIO()
    monkeypatch.setattr(run_log, "make_console",
                        lambda: Console(file=screen, force_terminal=True, width=120, color_system=None))
    log = logger(tmp_path, live_display=True)
    log.log({"step": 1, **TRAIN})
    log.close()
    out = screen.getvalue().replace("\x1b[?25h", "")  # the cursor shown again
    assert "recgym GRPO training" in out and "│    1 │  0.500 │" in out and out.endswith("┘\n")


def table_rows(log: RunLogger) -> dict[str, list[str]]:
    screen = io.StringIO()
    Console(file=screen, width=200, color_system=None).print(log._table())
    rows = [[c.strip() for c in line.split("│")[1:-1]] for line in screen.getvalue().splitlines() if line.startswith("│")]
    return {row[0]: row for row in rows}


def test_the_table_shows_an_evaluation_on_its_own_steps_row(tmp_path):
    """The trainer logs a step's training line before that step's evaluation: the table showed each
    evaluation one row late, and never the last."""
    log = logger(tmp_path, live_display=False)
    for record in ({"step": 0, "eval/mae": 1.0, "eval/coverage": 0.5}, {"step": 1, **TRAIN}, {"step": 2, **TRAIN},
                   {"step": 2, "eval/mae": 0.7, "eval/coverage": 0.9}, {"step": 3, **TRAIN}):
        log.log(record)
    log.close()
    rows = table_rows(log)
    assert [rows[s][5:7] for s in "123"] == [["1.000", "50%"], ["0.700", "90%"], ["0.700", "90%"]]


def test_every_json_line_is_strict_json_with_null_for_nan_and_inf(tmp_path):
    """numpy NaN (an algorithm's own statistic) was written as ``NaN``, and nested numpy values not at all."""
    log = logger(tmp_path, live_display=False)
    log.log({"step": 1, **TRAIN, "algo/x": np.float64("nan"), "algo/list": [np.float64(1.5), float("inf")],
             "algo/by_group": {"a": np.float32("-inf"), "b": np.int64(3)}, "algo/array": np.array([0.5, np.nan])})
    log.log_completions(1, [{"index": 0, "target": np.float64("nan"), "completions": ["<rate>4</rate>"]}])
    log.close()
    record = strict((tmp_path / "metrics.jsonl").read_text())
    assert (record["algo/x"], record["algo/list"], record["algo/by_group"], record["algo/array"]) == (
        None, [1.5, None], {"a": None, "b": 3}, [0.5, None])
    assert strict((tmp_path / "completions.jsonl").read_text())["target"] is None


def test_a_resume_leaves_out_a_last_line_cut_short_with_one_warning(tmp_path):
    """A run killed while writing a line crashed its resume with JSONDecodeError, after the model loaded."""
    lines = [json.dumps({"step": 1, **TRAIN}), json.dumps({"step": 2, "eval/mae": 0.9}), json.dumps({"step": 3, **TRAIN})]
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines) + '\n{"step": 4, "rew')
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        log = RunLogger(GRPOConfig(output_dir=str(tmp_path), live_display=False), resume_step=3)
    log.close()
    assert [json.loads(line) for line in lines] == log.records
    assert (tmp_path / "metrics.jsonl").read_text().splitlines() == lines
    assert [str(w.message) for w in caught] == [
        f"{tmp_path / 'metrics.jsonl'}: its last line was cut short (the run stopped while writing it): left out"]


def test_a_line_cut_short_before_the_end_is_a_one_line_error_naming_it(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"step": 1\n{"step": 2}\n')
    with pytest.raises(ValueError, match=r"metrics.jsonl line 1 is not JSON .*: remove that line to resume$"):
        RunLogger(GRPOConfig(output_dir=str(tmp_path), live_display=False), resume_step=2)


def test_a_resume_killed_while_rewriting_the_log_loses_none_of_it(tmp_path, monkeypatch):
    text = "".join(json.dumps({"step": s, **TRAIN}) + "\n" for s in (1, 2, 3))
    (tmp_path / "metrics.jsonl").write_text(text)
    die_mid_write(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        RunLogger(GRPOConfig(output_dir=str(tmp_path), live_display=False), resume_step=2)
    monkeypatch.undo()
    assert (tmp_path / "metrics.jsonl").read_text() == text


def rating_records() -> list[dict]:
    return [{"step": 0, "eval/mae": 1.0, "eval/coverage": 0.9, "eval/format_rate": 0.9},
            *({"step": s, **TRAIN, "zero_std_group_frac": 0.2, "entropy": 0.4} for s in (1, 2)),
            {"step": 2, "eval/mae": 0.8, "eval/coverage": 1.0, "eval/format_rate": 1.0}]


def drawn_figure(monkeypatch, records, tmp_path):
    """The figure ``plot_curves`` saved, and the renderer that drew it."""
    import matplotlib.pyplot as plt

    figures, close = [], plt.close
    monkeypatch.setattr(plt, "close", lambda fig: (figures.append((fig, fig.canvas.get_renderer())), close(fig)))
    assert plot_curves(records, tmp_path / "curves.png", baseline_mae=0.9) == tmp_path / "curves.png"
    assert (tmp_path / "curves.png").stat().st_size > 0
    return figures[0]


def test_curves_show_only_the_parts_a_run_logged_and_no_title_is_cut(tmp_path, monkeypatch):
    """A rating run's reward legend had an empty ``ndcg`` entry, and two titles ran off the figure."""
    fig, renderer = drawn_figure(monkeypatch, rating_records(), tmp_path)
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["total", "format", "accuracy"]
    for ax in fig.axes:
        title, box = ax.title.get_window_extent(renderer), ax.get_window_extent(renderer)
        assert box.x0 - 5 <= title.x0 and title.x1 <= box.x1 + 5, ax.get_title()


def test_a_ranking_runs_curves_have_no_accuracy_entry(tmp_path, monkeypatch):
    records = [{"step": 1, "reward": 0.5, "reward/format": 0.5, "reward/ndcg": 0.3}, {"step": 1, "eval/ndcg@10": 0.4}]
    fig, _ = drawn_figure(monkeypatch, records, tmp_path)
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["total", "format", "ndcg"]
    assert fig.axes[3].get_title() == "validation NDCG@10"


def test_without_matplotlib_no_curves_and_one_warning(tmp_path, monkeypatch):
    monkeypatch.setattr(run_log, "_warned", set())
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert plot_curves(rating_records(), tmp_path / "a.png") is None
        assert plot_curves(rating_records(), tmp_path / "b.png") is None
    assert [str(w.message) for w in caught] == ["curves.png not written: it needs matplotlib (pip install matplotlib)"]
    assert not list(tmp_path.iterdir())


def test_current_plot_is_only_the_one_written_after_the_runs_last_line(tmp_path):
    metrics, curves = tmp_path / "metrics.jsonl", tmp_path / "curves.png"
    metrics.write_text("{}\n")
    assert run_log.current_plot(tmp_path) is None
    curves.write_bytes(b"png")
    assert run_log.current_plot(tmp_path) == curves
    os.utime(curves, ns=(metrics.stat().st_mtime_ns - 10**9,) * 2)  # an earlier run's
    assert run_log.current_plot(tmp_path) is None


def killed_and_resumed(tmp_path, report_to: list[str], **resumed_overrides) -> None:
    """A run logs steps 1-3 and is killed (its last checkpoint: step 1); ``--resume`` redoes 2 and 3."""
    cfg = GRPOConfig(output_dir=str(tmp_path), report_to=report_to, live_display=False, plot=False)
    first = RunLogger(cfg)
    for step in (1, 2, 3):
        first.log({"step": step, "reward": float(step)})
    first.close()
    resumed = RunLogger(cfg.with_overrides([f"--{k}={v}" for k, v in resumed_overrides.items()]), resume_step=1)
    for step in (2, 3):
        resumed.log({"step": step, "reward": 10.0 * step})
    resumed.close()


def test_tensorboard_after_a_resume_has_the_steps_of_metrics_jsonl(tmp_path):
    """TensorBoard kept the killed run's steps 2 and 3 beside the redone ones."""
    pytest.importorskip("tensorboard", reason="tensorboard is not installed")
    import time

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = GRPOConfig(output_dir=str(tmp_path), report_to=["tensorboard"], live_display=False, plot=False)
    earlier = RunLogger(cfg)  # an earlier run in the same output_dir, which a fresh run replaces
    earlier.log({"step": 4, "reward": -1.0})
    earlier.close()
    time.sleep(1.1)  # event files are named by the second they open
    killed_and_resumed(tmp_path, ["tensorboard"])
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("reward")] == [(1, 1.0), (2, 20.0), (3, 30.0)]
    assert [(r["step"], r["reward"]) for r in map(json.loads, (tmp_path / "metrics.jsonl").read_text().splitlines())] \
        == [(1, 1.0), (2, 20.0), (3, 30.0)]


def test_tensorboard_shows_the_steps_of_metrics_jsonl_after_a_resume_mock_summary_writer(tmp_path, monkeypatch):
    """tensorboard is not installed in this venv (the real test above skips): a stand-in SummaryWriter
    records each writer's scalars and ``purge_step``, and the test applies TensorBoard's rule (a
    writer's ``purge_step`` hides the steps >= it that earlier writers logged)."""
    import types

    writers = []

    class SummaryWriter:
        def __init__(self, log_dir, purge_step=None):
            self.purge_step, self.scalars = purge_step, []
            writers.append(self)

        def add_scalar(self, tag, value, step):
            self.scalars.append((tag, step, value))

        def close(self):
            pass

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=SummaryWriter))
    earlier = RunLogger(GRPOConfig(output_dir=str(tmp_path), report_to=["tensorboard"], live_display=False))
    earlier.log({"step": 4, "reward": -1.0})
    earlier.close()
    killed_and_resumed(tmp_path, ["tensorboard"])
    shown: list[tuple] = []
    for writer in writers:
        if writer.purge_step is not None:
            shown = [s for s in shown if s[1] < writer.purge_step]
        shown += writer.scalars
    assert sorted(shown) == [("reward", 1, 1.0), ("reward", 2, 20.0), ("reward", 3, 30.0)]


def test_wandb_resume_reopens_the_killed_runs_wandb_run(tmp_path, monkeypatch):
    """``--resume`` started a second W&B run; a fresh run in the folder still starts its own."""
    wandb = pytest.importorskip("wandb", reason="wandb is not installed")
    for name, value in (("WANDB_MODE", "offline"), ("WANDB_DIR", str(tmp_path)), ("WANDB_SILENT", "true")):
        monkeypatch.setenv(name, value)
    calls, ids, init = [], [], wandb.init

    def recording_init(**kwargs):
        calls.append(kwargs)
        run = init(**kwargs)
        ids.append(run.id)
        return run

    monkeypatch.setattr(wandb, "init", recording_init)
    out = tmp_path / "run"
    killed_and_resumed(out, ["wandb"], max_steps=9)  # max_steps may change on resume
    RunLogger(GRPOConfig(output_dir=str(out), report_to=["wandb"], live_display=False)).close()  # a fresh run
    assert len(ids) == 3 and ids[0] == ids[1] != ids[2]
    # W&B's offline folders (named by second, then id): the resumed run wrote into the killed run's id
    assert {p.name.rsplit("-", 1)[1] for p in (tmp_path / "wandb").glob("offline-run-*")} == {ids[0], ids[2]}
    assert "id" not in calls[0] and "id" not in calls[2]
    assert calls[1]["id"] == ids[0] and calls[1]["resume"] == "allow"
    assert calls[1]["config"]["max_steps"] == 9


def test_trackio_resume_reopens_the_killed_runs_trackio_run_mock_trackio(tmp_path, monkeypatch):
    """trackio is not installed in this venv: a stand-in module records what the run asks of it."""
    import types

    calls = []

    def init(project, name=None, config=None, resume="never"):
        calls.append({"name": name, "resume": resume})
        return types.SimpleNamespace(name=name or f"run-{len(calls)}", finish=lambda: None)

    monkeypatch.setitem(sys.modules, "trackio", types.SimpleNamespace(init=init, log=lambda metrics, step: None))
    killed_and_resumed(tmp_path, ["trackio"])
    RunLogger(GRPOConfig(output_dir=str(tmp_path), report_to=["trackio"], live_display=False)).close()  # a fresh run
    assert calls == [{"name": None, "resume": "never"}, {"name": "run-1", "resume": "allow"},
                     {"name": None, "resume": "never"}]
