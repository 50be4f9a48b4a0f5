"""``recgym sft make-data``'s output: an existing file is refused unless ``--overwrite``, rows are
appended as they are made, ``--resume`` keeps them and asks only the samples not done yet (with the
same settings), and a run that keeps no trace is a one-line error that leaves no file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from recgym.agents.teachers import cold_start
from recgym.cli import main

MAKE_DATA = ["sft", "make-data", "--teacher_policy", "scripted", "--teacher", "reasoner", "--samples_per_prompt", "1"]


def make_data(out: Path, *extra: str) -> int:
    return main([*MAKE_DATA, "--num_samples", "24", "--output", str(out), *extra])


def indices(path: Path) -> list[int]:
    return sorted(json.loads(line)["index"] for line in path.read_text().splitlines())


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    assert err.startswith("recgym sft: error: "), err
    return err


class CountingTeacher:
    """The scripted reasoner, counting the prompts it is asked; ``kill_at``: its generate call that
    raises KeyboardInterrupt instead, as a run killed part way stops (no real process is killed)."""

    def __init__(self, kill_at: int | None = None):
        self.teacher = cold_start.scripted_teacher("reasoner")
        self.kill_at, self.calls, self.asked = kill_at, 0, []

    def generate(self, prompts, n=1, sampling=None):
        self.calls += 1
        if self.calls == self.kill_at:
            raise KeyboardInterrupt
        self.asked += [p[-1]["content"] for p in prompts]
        return self.teacher.generate(prompts, n=n, sampling=sampling)


def use_teacher(monkeypatch, teacher: CountingTeacher) -> CountingTeacher:
    monkeypatch.setattr(cold_start, "scripted_teacher", lambda name, template=None: teacher)
    return teacher


@pytest.fixture(autouse=True)
def one_line_errors(monkeypatch):
    monkeypatch.delenv("RECGYM_DEBUG", raising=False)


def test_an_existing_output_is_refused_unless_overwrite(tmp_path, capsys):
    """A second make-data replaced the first's traces (paid for from a large teacher) without a word."""
    out = tmp_path / "traces.jsonl"
    assert make_data(out) == 0
    first = out.read_text()
    capsys.readouterr()
    assert make_data(out, "--seed", "3") == 2
    err = one_error_line(capsys)
    assert f"output {out} holds 14 traces" in err and "--resume" in err and "--overwrite" in err
    assert out.read_text() == first
    assert make_data(out, "--seed", "3", "--num_samples", "4", "--overwrite") == 0
    assert out.read_text() != first and len(indices(out)) < 4


def test_a_killed_run_keeps_its_rows_and_resume_asks_only_the_rest(tmp_path, monkeypatch, capsys):
    """The rows went to ``<output>.tmp``, renamed at the end: a run killed near its end kept nothing."""
    whole = tmp_path / "whole.jsonl"
    assert make_data(whole) == 0
    uninterrupted = capsys.readouterr().out.strip()
    out = tmp_path / "traces.jsonl"
    use_teacher(monkeypatch, CountingTeacher(kill_at=3))  # batches of 8: each asked, then hinted
    assert make_data(out) == 130
    done = indices(out)
    assert (f"make-data interrupted: {out} holds {len(done)} traces; continue it with the same settings plus --resume"
            in capsys.readouterr().err)
    assert done and set(done) < set(indices(whole))
    teacher = use_teacher(monkeypatch, CountingTeacher())
    assert make_data(out, "--resume") == 0
    assert indices(out) == indices(whole)
    assert sum("Hint for writing" not in prompt for prompt in teacher.asked) == 16  # the 8 done are not asked
    summary = capsys.readouterr().out.strip()
    assert summary.split(" -> ")[0].replace(" (8 from the run resumed)", "") == uninterrupted.split(" -> ")[0]
    assert "8 from the run resumed" in summary


def test_resume_drops_a_last_line_cut_short_and_asks_its_sample_again(tmp_path, monkeypatch, capsys):
    whole = tmp_path / "whole.jsonl"
    assert make_data(whole) == 0
    out = tmp_path / "traces.jsonl"
    use_teacher(monkeypatch, CountingTeacher(kill_at=3))
    assert make_data(out) == 130
    cut = json.dumps({"prompt": [{"role": "user", "content": "a row the kill cut"}]})[:30]
    out.write_text(out.read_text() + cut)
    use_teacher(monkeypatch, CountingTeacher())
    capsys.readouterr()
    assert make_data(out, "--resume") == 0
    assert f"recgym: warning: {out}: its last line was cut short" in capsys.readouterr().err
    assert indices(out) == indices(whole)


@pytest.mark.parametrize(("extra", "words"), [
    (["--tolerance", "1.0"], "was made with other settings (tolerance: 0.5 -> 1.0)"),
    (["--teacher", "user_average"], "teacher: 'reasoner' -> 'user_average'"),
    (["--seed", "3"], "seed: 0 -> 3"),
    (["--num_samples", "30"], "num_samples: 24 -> 30"),
    (["--env_kwargs", "{template: rate_only}"], "env_kwargs: {} -> {'template': 'rate_only'}"),
    (["--overwrite"], "--resume continues the traces in output and --overwrite replaces them: give one of them"),
], ids=["tolerance", "teacher", "seed", "num_samples", "template", "overwrite"])
def test_resume_refuses_other_settings_in_one_line_and_leaves_the_file(extra, words, tmp_path, capsys):
    out = tmp_path / "traces.jsonl"
    assert make_data(out) == 0
    before = out.read_text()
    capsys.readouterr()
    assert make_data(out, "--resume", *extra) == 2
    assert words in one_error_line(capsys)
    assert out.read_text() == before


def test_resume_without_an_output_or_its_settings_is_refused(tmp_path, capsys):
    out = tmp_path / "traces.jsonl"
    assert make_data(out, "--resume") == 2
    assert f"nothing to resume: output {out} does not exist; start without --resume" in one_error_line(capsys)
    assert not out.exists()
    out.write_text(json.dumps({"prompt": [], "completion": [], "index": 0, "provenance": "kept"}) + "\n")
    assert make_data(out, "--resume") == 2
    assert f"{out.name}.json" in one_error_line(capsys)


def test_a_run_that_keeps_no_trace_is_one_error_line_and_leaves_no_file(tmp_path, capsys):
    """It exited 1 with no line on stderr and left an empty file."""
    out = tmp_path / "traces.jsonl"
    assert main([*MAKE_DATA, "--num_samples", "3", "--output", str(out)]) == 2
    err = one_error_line(capsys)
    assert "no trace kept of 3 samples" in err and "--tolerance" in err and "--num_samples" in err and "teacher" in err
    assert not out.exists() and not cold_start.progress_path(out).exists()
