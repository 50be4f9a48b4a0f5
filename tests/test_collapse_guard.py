"""The collapse guard: a run whose greedy format falls (or whose predictions collapse to one rating)
is logged and, as configured, stopped or restored to its last healthy evaluation's weights."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from tiny_lm import tiny_config, tiny_model, tiny_tokenizer

from recgym.agents.checkpoints import list_checkpoints
from recgym.agents.collapse_guard import CollapseGuard
from recgym.agents.trainer import GRPOTrainer


def test_guard_flags_a_falling_format_and_a_collapsed_spread_never_a_low_start():
    guard = CollapseGuard("warn", format_drop=0.25, min_prediction_std=0.05)
    assert guard.check({"step": 0, "eval/format_rate": 0.0, "eval/prediction_std": 0.7}) is None  # RecZero's start
    assert guard.check({"step": 2, "eval/format_rate": 0.97, "eval/prediction_std": 0.5}) is None
    assert guard.check({"step": 4, "eval/format_rate": 0.80, "eval/prediction_std": 0.5}) is None  # 0.17 down
    assert guard.healthy_step == 4
    reason = guard.check({"step": 6, "eval/format_rate": 0.51, "eval/prediction_std": 0.5})
    assert "51%" in reason and "97%" in reason and guard.healthy_step == 4
    assert "spread" in guard.check({"step": 8, "eval/format_rate": 1.0, "eval/prediction_std": 0.0})
    assert CollapseGuard("off").check({"step": 0, "eval/format_rate": 0.0, "eval/prediction_std": 0.0}) is None
    with pytest.raises(ValueError):
        CollapseGuard("explode")


def test_an_evaluation_of_one_sample_is_no_collapse():
    """``bench/train_step.py`` evaluates one sample: its spread is undefined, not a collapse (``restore``
    would otherwise act at every evaluation of such a run)."""
    from recgym.data.schema import RatingScale
    from recgym.metrics import rating_metrics

    spread = rating_metrics([4], [4], [3], RatingScale(1, 5)).prediction_std
    guard = CollapseGuard("restore")
    assert guard.check({"step": 2, "eval/format_rate": 1.0, "eval/prediction_std": spread}) is None
    assert guard.healthy_step == 2


def test_one_rating_for_nearly_everyone_is_a_collapse_though_fallbacks_spread_the_predictions():
    """92 of 100 answers say 3 and 8 fall back to the user's average: the spread of all predictions
    is 0.18, past the floor, so only a collapse with every answer parsed was caught."""
    import numpy as np

    fallbacks = np.random.default_rng(0).uniform(2, 4, 8)
    spread = float(np.r_[np.full(92, 3.0), fallbacks].std())
    guard = CollapseGuard("stop")
    assert guard.check({"step": 0, "eval/n": 100, "eval/coverage": 0.93, "eval/format_rate": 0.93,
                        "eval/prediction_std": 0.5, "eval/prediction_std_parsed": 0.6}) is None
    reason = guard.check({"step": 2, "eval/n": 100, "eval/coverage": 0.92, "eval/format_rate": 0.92,
                          "eval/prediction_std": spread, "eval/prediction_std_parsed": 0.0})
    assert spread > 0.05 and "parsed predictions' spread 0.000" in reason and guard.healthy_step == 0
    # fewer than min_parsed (10) parsed: their spread says too little
    few = {"step": 4, "eval/n": 100, "eval/coverage": 0.09, "eval/format_rate": 0.9, "eval/prediction_std": 0.5,
           "eval/prediction_std_parsed": 0.0}
    assert CollapseGuard("stop").check(few) is None
    assert CollapseGuard("stop").check({**few, "eval/coverage": 0.10}) is not None


def test_a_drop_of_exactly_format_drop_is_a_collapse_despite_float_rounding():
    """7/20 -> 2/20 is a drop of exactly 0.25, though 0.35 - 0.1 is 0.24999999999999997 in floats."""
    guard = CollapseGuard("warn", format_drop=0.25)
    assert guard.check({"step": 0, "eval/format_rate": 7 / 20}) is None
    assert guard.check({"step": 2, "eval/format_rate": 3 / 20}) is None  # 0.20 down
    assert "10%, down from 35%" in guard.check({"step": 4, "eval/format_rate": 2 / 20})


def scripted_trainer(tmp_path, action: str, formats: list[float], **overrides):
    """A tiny trainer whose evaluations report ``formats`` in turn (a scripted run whose format
    falls); each evaluation also records the model's weights at that moment."""
    cfg = tiny_config(tmp_path, **{"max_steps": 6, "eval_interval": 2, "save_interval": 0,
                                   "collapse_action": action, **overrides})
    trainer = GRPOTrainer(cfg, model=tiny_model(), tokenizer=tiny_tokenizer())
    weights: dict[int, dict[str, torch.Tensor]] = {}
    scripted = iter(formats)

    def evaluate(logger=None, baselines=False):
        record = {"step": trainer.step, "eval/mae": 1.0 + trainer.step, "eval/format_rate": next(scripted),
                  "eval/prediction_std": 0.5}
        weights[trainer.step] = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
        trainer.eval_samples[trainer.step] = [{"index": 0, "target": 3.0, "prediction_or_fallback": 3.0}]
        if logger is not None:
            logger.log(record)
        return [record]

    trainer.evaluate = evaluate
    return trainer, weights


def guard_lines(cfg_dir: Path) -> list[dict]:
    lines = [json.loads(line) for line in (cfg_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in lines if "guard/collapse" in r]


@pytest.mark.parametrize("action", ["warn", "stop", "restore"])
def test_a_run_whose_format_falls_is_logged_and_acted_on(tmp_path, action):
    # evaluations at steps 0, 2, 4, 6: the format falls at step 4
    trainer, weights = scripted_trainer(tmp_path, action, [0.95, 0.97, 0.40, 0.30])
    result = trainer.train()
    out = Path(trainer.config.output_dir)
    [logged] = guard_lines(out)[:1]
    assert logged["step"] == 4 and "40%" in logged["guard/collapse"] and logged["guard/action"] == action
    if action == "warn":
        assert result.steps == 6 and len(guard_lines(out)) == 2  # steps 4 and 6 both flagged, the run went on
        return
    assert result.steps == 4 and len(guard_lines(out)) == 1       # ended at the collapse
    assert [c.name for c in list_checkpoints(out)] == ["step-000004"]  # nothing lost
    final = trainer.model.state_dict()
    if action == "stop":
        assert all(torch.equal(final[k], weights[4][k]) for k in final)
        assert result.evals[-1]["eval/format_rate"] == 0.40
    else:  # restore: the weights of step 2, the last healthy evaluation, and its evaluation as the final one
        assert logged["guard/restored_step"] == 2
        assert not all(torch.equal(weights[2][k], weights[4][k]) for k in final)
        assert all(torch.equal(final[k], weights[2][k]) for k in final)
        assert result.evals[-1]["step"] == 4 and result.evals[-1]["eval/restored_from_step"] == 2
        assert result.evals[-1]["eval/format_rate"] == 0.97 and result.eval_samples[4] == result.eval_samples[2]
        from safetensors.torch import load_file

        saved = load_file(str(list_checkpoints(out)[-1] / "model" / "model.safetensors"))
        assert all(torch.equal(saved[k], weights[2][k]) for k in saved)  # the checkpoint holds the restored model


def test_restore_when_the_first_evaluation_already_collapsed_stops_instead(tmp_path):
    trainer, _ = scripted_trainer(tmp_path, "restore", [0.5, 0.1, 0.1, 0.1])
    trainer.guard.best_format = 1.0  # as if an earlier, resumed part of the run had shown 100%
    result = trainer.train()
    [logged] = guard_lines(Path(trainer.config.output_dir))
    assert logged["step"] == 0 and logged["guard/action"] == "stop" and result.steps == 0


def same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


def killed_after_its_last_evaluation(tmp_path, save_interval: int) -> dict[int, dict[str, torch.Tensor]]:
    """A healthy 6-step run whose step-6 checkpoint is removed: as if killed after its step-6
    evaluation rewrote ``healthy_model``, before the checkpoint was saved."""
    trainer, weights = scripted_trainer(tmp_path, "restore", [0.95, 0.96, 0.97, 0.98], save_interval=save_interval)
    trainer.train()
    out = Path(trainer.config.output_dir)
    shutil.rmtree(out / "checkpoints" / "step-000006")
    assert not same_weights(weights[4], weights[6])
    return weights


def test_restore_after_a_resume_puts_back_the_healthy_steps_weights_not_the_killed_runs_newer_ones(tmp_path):
    """Resumed from step 4 (healthy there), the redone step-6 evaluation collapses: the weights
    restored are step 4's, though the killed run had left its step-6 weights in ``healthy_model``."""
    killed = killed_after_its_last_evaluation(tmp_path, save_interval=4)
    trainer, _ = scripted_trainer(tmp_path, "restore", [0.40], save_interval=4)
    result = trainer.train(resume=True)
    out = Path(trainer.config.output_dir)
    [logged] = guard_lines(out)
    assert logged["step"] == 6 and logged["guard/action"] == "restore" and logged["guard/restored_step"] == 4
    assert result.evals[-1]["eval/restored_from_step"] == 4
    assert same_weights(trainer.model.state_dict(), killed[4])
    from safetensors.torch import load_file

    assert same_weights(load_file(str(list_checkpoints(out)[-1] / "model" / "model.safetensors")), killed[4])


def test_restore_without_the_healthy_steps_weights_stops_instead_and_says_why(tmp_path):
    """Resumed from step 3 (last healthy evaluation: step 2, whose weights the killed run replaced
    by step 6's), the step-4 evaluation collapses: nothing of step 2 to restore, so the run stops."""
    killed = killed_after_its_last_evaluation(tmp_path, save_interval=3)
    trainer, weights = scripted_trainer(tmp_path, "restore", [0.40], save_interval=3)
    with pytest.warns(UserWarning, match="no saved weights of step 2 .*stopping instead"):
        result = trainer.train(resume=True)
    [logged] = guard_lines(Path(trainer.config.output_dir))
    assert logged["step"] == 4 and logged["guard/action"] == "stop" and logged["guard/restored_step"] is None
    assert result.steps == 4 and "eval/restored_from_step" not in result.evals[-1]
    assert same_weights(trainer.model.state_dict(), weights[4]) and not same_weights(weights[4], killed[6])


class SimulatedKill(BaseException):
    """Stands in for a SIGKILL at one point of a write (a real kill cannot be caught in-process)."""


def test_a_kill_while_healthy_model_is_replaced_leaves_a_whole_copy_to_restore(tmp_path, monkeypatch):
    trainer, _ = scripted_trainer(tmp_path, "restore", [])
    healthy = {"eval/format_rate": 0.9, "eval/prediction_std": 0.5}
    evals = [{"step": 0, **healthy}]
    assert not trainer.guard_collapse(evals, None)
    trainer.train_step()
    evals.append({"step": 1, **healthy})
    step1 = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
    rename = os.rename

    def killed_on_the_last_rename(src, dst):
        if Path(dst).name == "healthy_model":
            raise SimulatedKill
        rename(src, dst)

    with monkeypatch.context() as m:
        m.setattr(os, "rename", killed_on_the_last_rename)
        with pytest.raises(SimulatedKill):
            trainer.guard_collapse(evals, None)
    trainer.train_step()
    evals.append({"step": 2, "eval/format_rate": 0.1, "eval/prediction_std": 0.5})
    assert trainer.guard_collapse(evals, None)
    assert same_weights(trainer.model.state_dict(), step1) and evals[-1]["eval/restored_from_step"] == 1
