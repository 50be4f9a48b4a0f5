"""TRL's GRPOTrainer on a recgym environment (for scale: vLLM colocate/server, DeepSpeed, FSDP).

    python examples/train_with_trl.py --max_steps 2                       # CPU, embedded SmolLM2
    accelerate launch examples/train_with_trl.py --model Qwen/Qwen2.5-7B-Instruct --use_vllm --bf16

The environment becomes a dataset (``prompt`` + reward columns); its reward is split into
``format_reward`` and ``accuracy_reward``, which TRL logs separately and sums.
"""

from __future__ import annotations

import argparse


def main(argv: list[str] | None = None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env_id", default="RecRating-Synthetic-v0")
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--num_samples", type=int, default=256)
    parser.add_argument("--max_steps", type=int, default=10)
    parser.add_argument("--num_generations", type=int, default=4)
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--max_completion_length", type=int, default=128)
    parser.add_argument("--learning_rate", type=float, default=1e-6)
    parser.add_argument("--output_dir", default="runs/trl_grpo")
    parser.add_argument("--use_vllm", action="store_true", help="TRL's vLLM generation (colocate mode)")
    parser.add_argument("--bf16", action="store_true")
    args = parser.parse_args(argv)

    import torch
    from trl import GRPOConfig, GRPOTrainer

    from recgym.agents.models import model_path
    from recgym.integrations.trl import env_to_dataset, reward_functions

    env_kwargs = {"max_user_history": 4, "max_item_history": 2}
    dataset = env_to_dataset(args.env_id, split="train", num_samples=args.num_samples, seed=0, **env_kwargs)
    config = GRPOConfig(
        output_dir=args.output_dir, max_steps=args.max_steps, per_device_train_batch_size=args.batch_size,
        num_generations=args.num_generations, max_completion_length=args.max_completion_length,
        learning_rate=args.learning_rate, logging_steps=1, save_strategy="no", report_to=[],
        use_vllm=args.use_vllm, vllm_mode="colocate", bf16=args.bf16, use_cpu=not torch.cuda.is_available(),
    )
    trainer = GRPOTrainer(
        model=str(model_path(args.model)),  # a local checkpoint directory (embedded names resolve to one)
        reward_funcs=reward_functions(args.env_id, **env_kwargs),
        args=config,
        train_dataset=dataset,
    )
    trainer.train()
    return trainer


if __name__ == "__main__":
    main()
