"""Several processes are data parallel: launched by ``torchrun`` on CPU (gloo), each rank draws its
own prompts, only the main process writes, the learning-rate schedule is a one-process run's, and
a killed run resumes to the uninterrupted one's metrics and weights."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from test_trainer import RUN_SCRIPT, assert_same_run, read_metrics
from tiny_lm import tiny_model, tiny_tokenizer

from recgym.agents.checkpoints import list_checkpoints

TESTS = Path(__file__).parent
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # identical float reductions in every run


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=ENV, check=False, **kwargs)


def test_average_gradients_writes_the_mean_into_each_grad_in_place(monkeypatch):
    """The same values as the flat all-reduce copied out into new tensors, but each ``.grad`` is the
    tensor it was (written in place: no third copy of the gradients), and a parameter without a
    gradient gets one of its own (not a view holding the whole flat buffer)."""
    import torch

    from recgym.agents.learner.data_parallel import average_gradients

    other_rank = lambda flat: torch.arange(flat.numel(), dtype=flat.dtype).sin()
    monkeypatch.setattr(torch.distributed, "all_reduce", lambda flat, *a, **k: flat.add_(other_rank(flat)))
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(shape)) for shape in ((3, 4), (5,), (2, 2), (6,))]
    for p in params[1:3]:
        p.grad = torch.randn_like(p)
    params[0].grad = torch.randn(4, 3).t()  # not contiguous
    flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params])
    mean = (flat + other_rank(flat)) / 2  # the old computation
    expected = list(mean.split([p.numel() for p in params]))
    grads = [p.grad for p in params]
    average_gradients(params, 2)
    for p, grad, want in zip(params, grads, expected, strict=True):
        assert torch.equal(p.grad.reshape(-1), want)
        if grad is not None:
            assert p.grad is grad
    assert params[3].grad.untyped_storage().nbytes() == 6 * 4


@pytest.mark.slow
def test_two_process_cli_run_shards_prompts_and_writes_once(tmp_path):
    model = tmp_path / "model"
    tiny_model().save_pretrained(model)
    tiny_tokenizer().save_pretrained(model)
    args = ["-m", "recgym.cli", "train", "grpo", "--model", str(model), "--max_steps", "2", "--group_size", "2",
            "--prompts_per_step", "2", "--max_new_tokens", "6", "--eval_size", "2", "--eval_max_new_tokens", "2",
            "--live_display", "false", "--plot", "false", "--lr_scheduler_type", "linear",
            "--env_kwargs", "{max_user_history: 2, max_item_history: 1}"]
    two = run([*TORCHRUN, *args, "--output_dir", str(tmp_path / "two")])
    assert two.returncode == 0, two.stderr[-3000:]
    one = run([sys.executable, *args, "--output_dir", str(tmp_path / "one")])
    assert one.returncode == 0, one.stderr[-3000:]

    rows = [r for r in read_metrics(tmp_path / "two" / "metrics.jsonl") if "reward" in r]
    assert [r["step"] for r in rows] == [1, 2]  # one line per step, not one per process
    for r in rows:
        assert r["prompts"] == 4 and len(r["sample_indices"]) == 4
        rank0, rank1 = r["sample_indices"][:2], r["sample_indices"][2:]
        assert not set(rank0) & set(rank1), r["sample_indices"]
    assert rows[1]["data_position"] == 8
    single = [r for r in read_metrics(tmp_path / "one" / "metrics.jsonl") if "reward" in r]
    assert [r["learning_rate"] for r in rows] == [r["learning_rate"] for r in single]
    assert [p.name for p in list_checkpoints(tmp_path / "two")] == ["step-000002"]
    saved = sorted(p.name for p in (list_checkpoints(tmp_path / "two")[0]).iterdir())
    assert "rng_state_0.pt" in saved and "rng_state_1.pt" in saved
    assert len([r for r in read_metrics(tmp_path / "two" / "metrics.jsonl") if "eval/mae" in r]) == 2


@pytest.mark.slow
def test_killed_two_process_run_resumes_to_the_uninterrupted_state(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(RUN_SCRIPT.format(tests=str(TESTS))))
    full, killed = tmp_path / "full", tmp_path / "killed"
    done = run([*TORCHRUN, str(script), str(full), "0", "fresh"])
    assert done.returncode == 0, done.stderr[-3000:]
    first = run([*TORCHRUN, str(script), str(killed), "3", "fresh"])
    assert first.returncode != 0  # SIGKILLed during step 3
    assert [p.name for p in list_checkpoints(killed)] == ["step-000002"]
    second = run([*TORCHRUN, str(script), str(killed), "0", "resume"])
    assert second.returncode == 0, second.stderr[-3000:]
    assert_same_run(full, killed)
    rows = [r for r in read_metrics(full / "metrics.jsonl") if "reward" in r]
    assert all(len(set(r["sample_indices"])) == 4 for r in rows)


ENDS_ITS_GROUP = """
import sys
import torch.distributed as dist
from recgym.cli import main

dist.init_process_group("gloo", init_method="file://" + sys.argv[1], rank=0, world_size=1)
code = main(["train", "grpo", "--model", sys.argv[2], "--output_dir", sys.argv[3], "--max_steps", "1",
             "--group_size", "2", "--prompts_per_step", "1", "--max_new_tokens", "4", "--eval_size", "1",
             "--eval_max_new_tokens", "2", "--live_display", "false", "--plot", "false", "--save_interval", "0",
             "--env_kwargs", "{max_user_history: 2, max_item_history: 1}"])
print("exit", code, "group left:", dist.is_initialized())
"""


@pytest.mark.slow
def test_a_finished_cli_run_destroys_its_process_group(tmp_path, tiny_path):
    """Left to the interpreter's exit, gloo's threads can abort a rank of a finished run (SIGABRT)."""
    script = tmp_path / "run.py"
    script.write_text(ENDS_ITS_GROUP)
    done = run([sys.executable, str(script), str(tmp_path / "store"), tiny_path, str(tmp_path / "out")])
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "exit 0 group left: False"
