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
