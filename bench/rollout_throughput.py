"""Rollout throughput: the same prompts, model and sampling through HFPolicy and VLLMPolicy.

For each group size G, every prompt gets G completions in one ``generate`` call (as
``recgym.agents.rollout.collect`` asks for them); the figure is generated tokens per second of
that call (after a warm-up call on another prompt, with vLLM's prefix cache emptied), and the
ratio vLLM / HF.

    python bench/rollout_throughput.py                       # SmolLM2, group sizes 4 and 8
    python bench/rollout_throughput.py --prompts 8 --max-new-tokens 128 --json out.json

HF runs first, then vLLM (the vLLM CPU engine re-binds this process's threads).
"""

from __future__ import annotations

import argparse
import json
import time


def synthetic_prompts(k: int, split: str = "train") -> list:
    import gymnasium as gym

    import recgym  # noqa: F401

    env = gym.make("RecRating-Synthetic-v0", split=split)
    return [env.reset(options={"index": i})[1]["messages"] for i in range(k)]


def measure(policy, prompts, warmup_prompt, group_size: int, sampling) -> dict:
    """One warm-up call on another prompt, then the timed call with an empty prefix cache (so
    vLLM gains only from sharing each prompt within its group, not from earlier calls)."""
    from recgym.agents.types import SamplingParams

    warm = SamplingParams(temperature=sampling.temperature, max_new_tokens=8, seed=0)
    policy.generate([warmup_prompt], n=group_size, sampling=warm)
    if hasattr(policy, "llm"):
        policy.llm.reset_prefix_cache()
    start = time.perf_counter()
    groups = policy.generate(prompts, n=group_size, sampling=sampling)
    seconds = time.perf_counter() - start
    tokens = sum(len(c.completion_token_ids) for g in groups for c in g)
    return {"group_size": group_size, "tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--prompts", type=int, default=2, help="distinct prompts per call")
    parser.add_argument("--group-sizes", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--hf-batch-size", type=int, default=64, help="rows per HF generate call")
    parser.add_argument("--json", default=None, help="write the results here too")
    args = parser.parse_args()

    from rich.table import Table

    from recgym.agents.policies import make_policy
    from recgym.agents.types import SamplingParams
    from recgym.console import machine_description, make_console

    *prompts, warmup_prompt = synthetic_prompts(args.prompts + 1)
    sampling = SamplingParams(temperature=args.temperature, max_new_tokens=args.max_new_tokens, seed=0)
    results: dict[str, list[dict]] = {}
    hf = make_policy("hf", args.model, batch_size=args.hf_batch_size)
    prompt_tokens = [len(hf.encoder.encode(p)) for p in prompts]
    results["hf"] = [measure(hf, prompts, warmup_prompt, g, sampling) for g in args.group_sizes]
    del hf
    vllm = make_policy("vllm", args.model, max_model_len=4096)
    results["vllm"] = [measure(vllm, prompts, warmup_prompt, g, sampling) for g in args.group_sizes]

    table = Table(title=f"Rollout throughput: {args.model}, {args.prompts} prompts "
                        f"(~{sum(prompt_tokens) // len(prompt_tokens)} tokens each), "
                        f"{args.max_new_tokens} new tokens, T={args.temperature:g}")
    for column in ("group size", "HF tokens/s", "vLLM tokens/s", "vLLM / HF"):
        table.add_column(column, justify="right")
    rows = []
    for h, v in zip(results["hf"], results["vllm"]):
        ratio = v["tokens_per_s"] / h["tokens_per_s"]
        rows.append({"group_size": h["group_size"], "hf": h, "vllm": v, "ratio": ratio})
        table.add_row(str(h["group_size"]), f"{h['tokens_per_s']:.1f}", f"{v['tokens_per_s']:.1f}", f"{ratio:.2f}x")
    table.caption = f"machine: {machine_description()}"
    make_console().print(table)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine_description(), "args": vars(args), "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
