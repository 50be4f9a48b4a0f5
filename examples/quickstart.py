"""A gymnasium loop with an LLM policy: reset -> generate -> step, on RecRating-Synthetic-v0.

    python examples/quickstart.py                      # the embedded SmolLM2-135M, 3 episodes
    python examples/quickstart.py --model PATH -n 5
"""

from __future__ import annotations

import argparse

import gymnasium as gym

import recgym  # noqa: F401  (registers the environments)
from recgym.agents.policies import make_policy
from recgym.agents.types import SamplingParams


def main(argv: list[str] | None = None) -> list[float]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--env_id", default="RecRating-Synthetic-v0")
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--policy", default="hf", choices=["hf", "vllm"])
    parser.add_argument("-n", type=int, default=3, help="episodes")
    parser.add_argument("--max_new_tokens", type=int, default=128)
    args = parser.parse_args(argv)

    env = gym.make(args.env_id, split="valid")
    policy = make_policy(args.policy, args.model)
    sampling = SamplingParams(temperature=0.0, max_new_tokens=args.max_new_tokens)
    rewards = []
    for episode in range(args.n):
        _obs, info = env.reset(seed=episode)                 # _obs: the prompt text
        [[completion]] = policy.generate([info["messages"]], n=1, sampling=sampling)
        _, reward, _, _, info = env.step(completion.text)
        rewards.append(reward)
        print(f"episode {episode}: reward {reward:+.3f} {info['reward_breakdown']} "
              f"target {info['target_rating']} parsed {info['parsed_rating']}")
        print("  completion:", completion.text[:200].replace("\n", " "))
    return rewards


if __name__ == "__main__":
    main()
