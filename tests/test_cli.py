import subprocess
import sys

from recgym.cli import main


def test_envs_lists_registered_ids_with_scale(capsys):
    assert main(["envs"]) == 0
    out = capsys.readouterr().out
    assert "RecRating-Synthetic-v0" in out and "1-5" in out


def test_console_script_runs_scripted_demo_quickly():
    result = subprocess.run(
        [sys.executable, "-m", "recgym.demo", "--scripted", "-n", "40"], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "user-avg, tagged" in result.stdout and "user-avg, untagged" in result.stdout


def test_machine_description_names_the_gpu_or_the_cpu_cores(monkeypatch):
    import os

    import torch

    from recgym.console import machine_description

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert machine_description().startswith(f"{os.cpu_count()}-core ") and machine_description().endswith("no GPU")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=0: "NVIDIA H200")
    assert machine_description() == "NVIDIA H200"


def test_config_override_help_shows_each_fields_default_once(capsys):
    """The override options' default is None (unset); their help names the field's own default."""
    import pytest

    for command in (["train", "grpo"], ["sft", "train"]):
        with pytest.raises(SystemExit):
            main([*command, "--help"])
        out = " ".join(capsys.readouterr().out.split())
        assert "--max_steps V int, default" in out
        assert "default 20 (default: None)" not in out and "(default: None)" not in out.split("config overrides")[1]


def test_config_override_help_shows_each_fields_docstring(capsys):
    """The help showed only each field's type and default, though the fields are documented."""
    import pytest

    with pytest.raises(SystemExit):
        main(["train", "grpo", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert ("--model V str, default 'smollm2-135m-instruct': A recgym model name, a Hugging Face id, or a local "
            "checkpoint path (e.g. an SFT output).") in out
    assert "--log_completions V int, default 2: Completions written per evaluation to `completions.jsonl`" in out
    assert "--train_split V str, default 'train' --eval_split" in out  # no docstring: type and default alone


def test_train_names_the_plot_only_where_this_run_wrote_it(tiny_path, tmp_path, monkeypatch, capsys):
    """``plot: .../curves.png`` printed with ``--plot false`` too, and where matplotlib was missing."""
    import os
    from pathlib import Path

    from recgym.agents import trainer

    def fake_train(config, resume=False):
        out = Path(config.output_dir)
        (out / "metrics.jsonl").write_text("{}\n")
        if config.plot:
            (out / "curves.png").write_bytes(b"png")
        return trainer.TrainResult(steps=1, evals=[{"step": 0, "eval/mae": 1.0, "eval/n": 2}], output_dir=str(out))

    monkeypatch.setattr(trainer, "train", fake_train)
    out = tmp_path / "run"
    out.mkdir()
    (out / "curves.png").write_bytes(b"an earlier run's")
    os.utime(out / "curves.png", (1, 1))
    for plot, tail in (("false", f"metrics: {out}/metrics.jsonl"), ("true", f", plot: {out / 'curves.png'}")):
        assert main(["train", "grpo", "--model", tiny_path, "--output_dir", str(out), "--plot", plot]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert lines[-1].endswith(tail) and lines[-1].startswith("metrics: "), lines[-1]


def test_the_build_requirement_reads_the_spdx_license_string():
    """``license = "Apache-2.0"`` (an SPDX string) needs setuptools 77; the build asked for 68."""
    import re
    import tomllib
    from pathlib import Path

    pyproject = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    assert isinstance(pyproject["project"]["license"], str)
    (requirement,) = [r for r in pyproject["build-system"]["requires"] if r.startswith("setuptools")]
    assert int(re.fullmatch(r"setuptools>=(\d+)(\.\d+)*", requirement).group(1)) >= 77
    # the declared license ships its text
    (text,) = pyproject["project"]["license-files"]
    assert "Apache License" in (Path(__file__).resolve().parents[1] / text).read_text()[:200]
