"""RecOne: cold-start traces from a teacher -> completion-only SFT -> GRPO from the SFT checkpoint.

    python examples/train_recone.py                          # scripted offline teacher, synthetic world, CPU
    python examples/train_recone.py --teacher smollm2-135m-instruct --teacher_policy hf
    python examples/train_recone.py --teacher Qwen/Qwen2.5-32B-Instruct --teacher_policy openai \\
        --teacher_base_url http://localhost:8000/v1          # any OpenAI-compatible server
    python examples/train_recone.py --grpo_steps 5 --learning_rate 1e-5   # other flags: GRPO config fields

The same as ``recgym sft make-data``, ``recgym sft train`` and ``recgym train grpo``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from recgym.agents.config import GRPOConfig
from recgym.agents.sft import SFTTrainConfig, train_sft
from recgym.agents.teachers.cold_start import ColdStartConfig, run_cold_start
from recgym.agents.trainer import TrainResult, train

CONFIG = Path(__file__).parent / "configs" / "recone_synthetic.yaml"


def main(argv: list[str] | None = None) -> TrainResult:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)  # --num_sample must not pass as --num_samples
    parser.add_argument("--model", default="smollm2-135m-instruct", help="the model to fine-tune and train")
    parser.add_argument("--teacher", default="scripted", help="'scripted' (offline, no model) or a model name")
    parser.add_argument("--teacher_policy", default="hf", choices=["hf", "vllm", "openai"])
    parser.add_argument("--teacher_base_url", default=None)
    parser.add_argument("--num_samples", type=int, default=64, help="training samples to write traces for")
    parser.add_argument("--sft_epochs", type=float, default=2.0)
    parser.add_argument("--output_dir", default="runs/recone")
    parser.add_argument("--grpo_steps", type=int, default=None, help="override max_steps of the GRPO config")
    args, grpo_overrides = parser.parse_known_args(argv)  # any other --field value goes to the GRPO config
    out = Path(args.output_dir)
    try:  # a typo in a GRPO field fails now, not after the cold start and SFT
        grpo = GRPOConfig.from_yaml(CONFIG, grpo_overrides)
    except (ValueError, TypeError) as exc:
        parser.error(str(exc))
    # 1. cold-start data: kept traces, rationalized ones (true rating as a hint, removed after), dropped
    teacher = None
    kwargs = {"base_url": args.teacher_base_url} if args.teacher_base_url else {}
    if args.teacher == "scripted":
        from recgym.agents.teachers.scripted import UserAveragePolicy

        teacher = UserAveragePolicy()
    report = run_cold_start(ColdStartConfig(
        env_id=grpo.env_id, env_kwargs=grpo.env_kwargs, num_samples=args.num_samples, teacher=args.teacher,
        teacher_policy="scripted" if teacher else args.teacher_policy, teacher_kwargs=kwargs,
        samples_per_prompt=1 if teacher else 4, output=str(out / "cold_start.jsonl"),
    ), teacher=teacher)
    print(report.summary())
    # 2. SFT with the loss on completions only
    sft_dir = train_sft(SFTTrainConfig(data=report.path, model=args.model, output_dir=str(out / "sft"),
                                       num_train_epochs=args.sft_epochs, learning_rate=1e-4))
    # 3. GRPO from the SFT checkpoint
    overrides = ["--model", str(sft_dir), "--output_dir", str(out / "grpo")]
    if args.grpo_steps is not None:
        overrides += ["--max_steps", str(args.grpo_steps)]
    return train(grpo.with_overrides(overrides))


if __name__ == "__main__":
    main()
