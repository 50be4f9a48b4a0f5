"""RecZero: pure GRPO from the instruct model, configured by a YAML file plus overrides.

    python examples/train_reczero.py                                   # synthetic world, CPU
    python examples/train_reczero.py --config examples/configs/reczero_yelp.yaml   # GPU
    python examples/train_reczero.py --max_steps 3 --output_dir runs/x --policy hf

The same as ``recgym train grpo --config ...`` (the same flags: ``--help``), in a script to copy.
"""

from __future__ import annotations

from pathlib import Path

from recgym.agents.run_log import HEADLINES, headline_key
from recgym.agents.trainer import TrainResult, train
from recgym.cli import build_parser
from recgym.commands import CommandError
from recgym.commands.train import check_config, config_from_args

DEFAULT = Path(__file__).parent / "configs" / "reczero_synthetic.yaml"


def main(argv: list[str] | None = None) -> TrainResult:
    """``recgym train grpo``'s flags (``--help`` lists them), with this script's default config."""
    import sys

    from recgym.agents.checkpoints import check_output_dir
    from recgym.agents.config import GRPOConfig

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(["train", "grpo", *(["--config", str(DEFAULT)] if "--config" not in argv else []), *argv])
    try:
        config = config_from_args(args, GRPOConfig)
        check_config(config)
        check_output_dir(config, args.resume)
    except (CommandError, ValueError) as exc:
        raise SystemExit(f"train_reczero.py: error: {exc}") from None
    result = train(config, resume=args.resume)
    if result.evals:  # none where evaluation is off
        first, last, key = result.evals[0], result.evals[-1], headline_key(result.evals)  # MAE, or NDCG@10 for ranking
        print(f"validation {HEADLINES[key]} {first[key]:.3f} -> {last[key]:.3f}, "
              f"format rate {first['eval/format_rate']:.0%} -> {last['eval/format_rate']:.0%}")
    return result


if __name__ == "__main__":
    main()
