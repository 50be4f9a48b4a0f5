import subprocess
import sys

from recgym.cli import main


def test_envs_lists_registered_ids_with_scale(capsys):
    assert main(["envs"]) == 0
    out = capsys.readouterr().out
    assert "RecRating-Synthetic-v0" in out and "1-5" in out


def test_console_script_runs_scripted_demo_quickly():
    result = subprocess.run(
        [sys.executable, "-m", "recgym.demo", "-n", "40"], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "user-avg, tagged" in result.stdout and "user-avg, untagged" in result.stdout
