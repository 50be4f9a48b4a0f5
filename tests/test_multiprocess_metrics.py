"""A 2-process run (torchrun, gloo) logs the step metrics one process logs on the union of their
batches, and its process group has the configured timeout."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from test_data_parallel import TORCHRUN, run
from test_trainer import read_metrics

TESTS = Path(__file__).parent

#: A fixed fake policy, so that 2 processes and 1 process with twice the prompts see the same
#: completions: whether a prompt's completions give a rating, how many tokens they have and their
#: logprobs follow from its place in the global batch. Step 1: only the first process's prompts
#: give ratings (the second parses none); step 2: 1 completion on the first, 8 on the second.
UNION_SCRIPT = """
import hashlib, json, sys
from pathlib import Path
sys.path.insert(0, {tests!r})
import torch.distributed as dist
from tiny_lm import SHORT_PROMPTS, tiny_model, tiny_tokenizer
from recgym.agents.config import GRPOConfig
from recgym.agents.learner.data_parallel import end_process_group
from recgym.agents.trainer import GRPOTrainer
from recgym.agents.types import Completion

tok = tiny_tokenizer()


class FixedPolicy:
    tokenizer = tok
    steps = 0

    def generate(self, prompts, n=1, sampling=None):
        if sampling.temperature > 0:  # not an evaluation
            self.steps += 1
        rank = dist.get_rank() if dist.is_initialized() else 0
        groups = []
        for i, prompt in enumerate(prompts):
            ids = tok.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True)
            ids = ids["input_ids"] if hasattr(ids, "keys") else ids
            h = int(hashlib.sha1(json.dumps(prompt).encode()).hexdigest(), 16)
            place = rank * len(prompts) + i
            group = []
            for j in range(n):
                rates = place < 2 if self.steps == 1 else place >= 2 or (place == 0 and j == 0)
                text = f"<rate>{{1 + (h + j) % 5}}</rate>" if rates else "zz" * (1 + j)
                cids = list(tok(text, add_special_tokens=False)["input_ids"]) + [tok.eos_token_id]
                group.append(Completion(text=text, prompt_token_ids=list(ids), completion_token_ids=cids,
                                        logprobs=[-(1.0 + place)] * len(cids), finish_reason="stop"))
            groups.append(group)
        return groups


out, prompts = sys.argv[1], int(sys.argv[2])
cfg = GRPOConfig(env_kwargs=dict(SHORT_PROMPTS), max_steps=2, group_size=4, prompts_per_step=prompts,
                 max_new_tokens=8, eval_size=1, eval_max_new_tokens=2, eval_on_start=False, live_display=False,
                 plot=False, output_dir=out, learning_rate=1e-2, seed=0, algorithm="dapo",
                 algorithm_kwargs={{"max_refills": 0}}, process_group_timeout_minutes=7)
trainer = GRPOTrainer(cfg, model=tiny_model(), tokenizer=tok, policy=FixedPolicy())
trainer.train()
if dist.is_initialized():
    import torch
    group = dist.distributed_c10d._get_default_group()
    seconds = group._get_backend(torch.device("cpu")).options._timeout.total_seconds()
    Path(out, f"timeout.{{dist.get_rank()}}").write_text(str(seconds))  # one file each: stdout interleaves
end_process_group()
"""


@pytest.mark.slow
def test_two_process_step_metrics_equal_one_process_on_the_union_batch(tmp_path):
    """Reward parts over every parsed completion (none parsed on one process: not null; 1 and 8:
    weighted by count), entropy weighted by tokens, dropped groups summed; and the process group
    waits ``process_group_timeout_minutes``."""
    script = tmp_path / "union.py"
    script.write_text(UNION_SCRIPT.format(tests=str(TESTS)))
    two = run([*TORCHRUN, str(script), str(tmp_path / "two"), "2"])
    assert two.returncode == 0, two.stderr[-3000:]
    one = run([sys.executable, str(script), str(tmp_path / "one"), "4"])
    assert one.returncode == 0, one.stderr[-3000:]

    timeouts = sorted(p.name + "=" + p.read_text() for p in (tmp_path / "two").glob("timeout.*"))
    assert timeouts == ["timeout.0=420.0", "timeout.1=420.0"], two.stdout[-2000:]
    steps = [[r for r in read_metrics(tmp_path / name / "metrics.jsonl") if "reward" in r] for name in ("two", "one")]
    assert [r["step"] for r in steps[0]] == [1, 2]
    for two_row, one_row in zip(*steps, strict=True):
        assert sorted(two_row["sample_indices"]) == sorted(one_row["sample_indices"])  # dapo puts kept first
        keys = [k for k in one_row if k.startswith("reward/")] + ["entropy", "groups_dropped", "loss", "reward"]
        assert {k: two_row[k] for k in keys} == pytest.approx({k: one_row[k] for k in keys}, rel=1e-6), keys
    assert steps[1][0]["reward/abs_error"] is not None and steps[1][0]["groups_dropped"] == 2
