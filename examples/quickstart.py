"""A gymnasium loop with an LLM policy: reset -> generate -> step, on a single-turn environment.

    python examples/quickstart.py                      # RecRating-Synthetic-v0, the embedded SmolLM2-135M, 3 episodes
    python examples/quickstart.py --model PATH -n 5
    python examples/quickstart.py --env_id RecRating-MovieLens-v0 --data_dir ~/data/movielens
    python examples/quickstart.py --env_id RecRank-Synthetic-v0 --env_kwargs '{num_candidates: 5}'
"""

from __future__ import annotations

import argparse

import gymnasium as gym

import recgym  # noqa: F401  (registers the environments)
from recgym.agents.policies import make_policy
from recgym.agents.types import SamplingParams
from recgym.cli import expected_errors, one_line
from recgym.commands import CommandError
from recgym.commands.data import yaml_mapping_option
from recgym.commands.train import check_env, check_model
from recgym.envs.registration import MULTI_TURN


def env_kwargs(args: argparse.Namespace) -> dict:
    """``--env_kwargs`` (a YAML mapping) with ``--data_dir`` added."""
    kwargs = yaml_mapping_option(args.env_kwargs, "--env_kwargs")
    return {**kwargs, "data_dir": args.data_dir} if args.data_dir else kwargs


def check(args: argparse.Namespace) -> dict:
    """The flags, before the model loads; the environment's keyword arguments."""
    if args.n < 1:
        raise CommandError(f"-n must be >= 1, got {args.n}")
    if args.env_id in MULTI_TURN:
        raise CommandError(f"{args.env_id} takes several turns (tool calls): this loop plays one; "
                           "see examples/tools_comparison.py")
    kwargs = env_kwargs(args)
    check_env(args.env_id, kwargs, "valid")
    check_model(args.model)
    return kwargs


def main(argv: list[str] | None = None) -> list[float]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env_id", default="RecRating-Synthetic-v0", help="a RecRating-* or RecRank-* id")
    parser.add_argument("--data_dir", default=None, help="the raw data folder of a real-data id")
    parser.add_argument("--env_kwargs", default=None, help="more gym.make arguments, a YAML mapping")
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--policy", default="hf", choices=["hf", "vllm"])
    parser.add_argument("-n", type=int, default=3, help="episodes")
    parser.add_argument("--max_new_tokens", type=int, default=128)
    args = parser.parse_args(argv)
    try:  # a bad flag fails in one line, before the model loads
        kwargs = check(args)
    except expected_errors() as exc:
        parser.error(one_line(exc))

    env = gym.make(args.env_id, split="valid", **kwargs)
    policy = make_policy(args.policy, args.model)
    sampling = SamplingParams(temperature=0.0, max_new_tokens=args.max_new_tokens)
    rewards = []
    for episode in range(args.n):
        _obs, info = env.reset(seed=episode)                 # _obs: the prompt text
        [[completion]] = policy.generate([info["messages"]], n=1, sampling=sampling)
        _, reward, _, _, info = env.step(completion.text)
        rewards.append(reward)
        truth = (f"target {info['target_rating']} parsed {info['parsed_rating']}" if "target_rating" in info
                 else f"rank of the true item {info['rank_of_target']}")
        print(f"episode {episode}: reward {reward:+.3f} {info['reward_breakdown']} {truth}")
        print("  completion:", completion.text[:200].replace("\n", " "))
    return rewards


if __name__ == "__main__":
    main()
