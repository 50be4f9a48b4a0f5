"""RecZero: pure GRPO from the instruct model, configured by a YAML file plus overrides.

    python examples/train_reczero.py                                   # synthetic world, CPU
    python examples/train_reczero.py --config examples/configs/reczero_yelp.yaml   # GPU
    python examples/train_reczero.py --max_steps 3 --output_dir runs/x --policy hf

The same as ``recgym train grpo --config ...``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from recgym.agents.config import GRPOConfig
from recgym.agents.trainer import TrainResult, train

DEFAULT = Path(__file__).parent / "configs" / "reczero_synthetic.yaml"


def main(argv: list[str] | None = None) -> TrainResult:
    argv = list(sys.argv[1:] if argv is None else argv)
    config_path = DEFAULT
    if "--config" in argv:
        i = argv.index("--config")
        config_path = Path(argv[i + 1])
        del argv[i : i + 2]
    resume = "--resume" in argv
    if resume:
        argv.remove("--resume")
    config = GRPOConfig.from_yaml(config_path, argv)
    result = train(config, resume=resume)
    first, last = result.evals[0], result.evals[-1]
    print(f"validation MAE {first['eval/mae']:.3f} -> {last['eval/mae']:.3f}, "
          f"format rate {first['eval/format_rate']:.0%} -> {last['eval/format_rate']:.0%}")
    return result


if __name__ == "__main__":
    main()
