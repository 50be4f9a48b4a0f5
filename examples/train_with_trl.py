"""TRL's GRPOTrainer on a single-turn recgym environment (for scale: vLLM colocate/server, DeepSpeed, FSDP).

    python examples/train_with_trl.py --max_steps 2                       # CPU, embedded SmolLM2
    python examples/train_with_trl.py --env_id RecRank-Synthetic-v0 --max_steps 2
    python examples/train_with_trl.py --env_id RecRating-Yelp-v0 --data_dir ~/data/yelp --env_kwargs '{kcore: 5}'
    accelerate launch examples/train_with_trl.py --model Qwen/Qwen2.5-7B-Instruct --use_vllm --bf16

The environment becomes a dataset (``prompt`` + reward columns); its reward is split into
``format_reward`` and ``accuracy_reward`` (ranking: ``ndcg_reward``), which TRL logs separately
and sums. Tool environments (``RecRatingTools-*``) are multi-turn: train them with ``recgym train grpo``.
"""

from __future__ import annotations

import argparse

import gymnasium as gym

import recgym  # noqa: F401  (registers the environments)
from recgym.cli import expected_errors, one_line
from recgym.commands import given_values
from recgym.commands.data import yaml_mapping_option
from recgym.commands.train import check_env_id, check_model
from recgym.data.registry import environment_arguments

#: Short prompts for a CPU run, for the ids whose environment takes these arguments.
SHORT_HISTORY = {"max_user_history": 4, "max_item_history": 2}


def history_kwargs(env_id: str) -> dict:
    """The part of :data:`SHORT_HISTORY` that ``env_id``'s environment takes (RecRank-*: no item history)."""
    env_class = gym.envs.registration.load_env_creator(gym.spec(env_id).entry_point)
    return {k: v for k, v in SHORT_HISTORY.items() if k in environment_arguments(env_class)}


def env_kwargs(args: argparse.Namespace) -> dict:
    """``--env_kwargs`` (a YAML mapping) over :func:`history_kwargs`, with ``--data_dir`` added."""
    given = yaml_mapping_option(args.env_kwargs, "--env_kwargs")
    return {**history_kwargs(args.env_id), **given, **({"data_dir": args.data_dir} if args.data_dir else {})}


def prepare(args: argparse.Namespace):
    """The dataset, the reward functions and TRL's config, each checked before the model loads."""
    import torch
    from trl import GRPOConfig

    from recgym.integrations.trl import env_to_dataset, reward_functions

    check_env_id(args.env_id)
    kwargs = env_kwargs(args)
    with given_values():  # a tool env, a bad keyword or size
        rewards = reward_functions(args.env_id, **kwargs)
        dataset = env_to_dataset(args.env_id, split="train", num_samples=args.num_samples, seed=0, **kwargs)
    check_model(args.model)
    with given_values():
        config = GRPOConfig(
            output_dir=args.output_dir, max_steps=args.max_steps, per_device_train_batch_size=args.batch_size,
            num_generations=args.num_generations, max_completion_length=args.max_completion_length,
            learning_rate=args.learning_rate, logging_steps=1, save_strategy="no", report_to=[],
            use_vllm=args.use_vllm, vllm_mode="colocate", bf16=args.bf16, use_cpu=not torch.cuda.is_available(),
        )
    return dataset, rewards, config


def main(argv: list[str] | None = None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env_id", default="RecRating-Synthetic-v0", help="a RecRating-* or RecRank-* id")
    parser.add_argument("--data_dir", default=None, help="the raw data folder of a real-data id")
    parser.add_argument("--env_kwargs", default=None,
                        help=f"more gym.make arguments, a YAML mapping (over {SHORT_HISTORY} where the env takes them)")
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--num_samples", type=int, default=256, help="training samples (-1: all)")
    parser.add_argument("--max_steps", type=int, default=10)
    parser.add_argument("--num_generations", type=int, default=4)
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--max_completion_length", type=int, default=128)
    parser.add_argument("--learning_rate", type=float, default=1e-6)
    parser.add_argument("--output_dir", default="runs/trl_grpo")
    parser.add_argument("--use_vllm", action="store_true", help="TRL's vLLM generation (colocate mode)")
    parser.add_argument("--bf16", action="store_true")
    args = parser.parse_args(argv)
    try:  # a bad flag fails in one line, before the model loads
        dataset, rewards, config = prepare(args)
    except expected_errors() as exc:
        parser.error(one_line(exc))

    from trl import GRPOTrainer

    from recgym.agents.models import model_path

    trainer = GRPOTrainer(
        model=str(model_path(args.model)),  # a local checkpoint directory (embedded names resolve to one)
        reward_funcs=rewards,
        args=config,
        train_dataset=dataset,
    )
    trainer.train()
    return trainer


if __name__ == "__main__":
    main()
