"""``train_split == eval_split`` in a GRPO config: allowed (debugging), but warned about once, in one line."""

from __future__ import annotations

import warnings

from recgym.agents.config import GRPOConfig
from recgym.cli import main


def test_training_on_the_eval_split_warns_once_in_one_line(capsys):
    assert main(["train", "grpo", "--train_split", "valid", "--estimate-memory", "--gpu_memory_gib", "79"]) == 0
    err = capsys.readouterr().err.splitlines()
    warned = [line for line in err if "train_split" in line]
    assert warned == [("recgym: warning: train_split and eval_split are both 'valid': the validation figures then "
                       "score the training samples (fine for debugging or choosing settings; do not report them)")], err


def test_separate_splits_do_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        GRPOConfig()
        GRPOConfig(train_split="train", eval_split="test")
