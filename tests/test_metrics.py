import math

import numpy as np
import pytest

from recgym.data.schema import RatingScale
from recgym.metrics import (
    fallback_predictions,
    paired_ranking_difference,
    ranking_metrics,
    rating_metrics,
)


def test_unparsed_predictions_use_the_fallback_not_perfection():
    m = rating_metrics(
        targets=[5, 1, 3, 4], predictions=[5, None, float("nan"), 9], fallbacks=[3, 3, 3, 3],
        scale=RatingScale(1, 5), format_ok=[True, False, False, False], rewards=[1.5, -0.5, -0.5, 0.5],
    )
    # errors: 0, |1-3|=2 (fallback), |3-3|=0 (fallback), |4-5|=1 (clipped)
    assert m.mae == pytest.approx(3 / 4)
    assert m.rmse == pytest.approx(math.sqrt(5 / 4))
    assert m.mae_parsed == pytest.approx(1 / 2)
    assert m.coverage == 0.5 and m.format_rate == 0.25 and m.mean_reward == pytest.approx(0.25)
    assert m.scale == "1-5" and "user average" in m.fallback
    # predictions used: 5, 3 (fallback), 3 (fallback), 5 (clipped): mean 4, population std 1
    assert m.prediction_std == pytest.approx(1.0)


def test_coverage_is_per_completion_and_parsed_figures_cover_fully_parsed_samples():
    """With k completions per sample coverage counted a sample with 1 of 3 parsed as covered."""
    scale = RatingScale(1, 5)
    m = rating_metrics(targets=[5, 1, 3], predictions=[4, 2, None], fallbacks=[3, 3, 3], scale=scale,
                       parsed_share=[1.0, 1 / 3, 0.0])
    assert m.coverage == pytest.approx((1 + 1 / 3) / 3)
    assert m.mae_parsed == pytest.approx(1.0)  # sample 0 alone had every completion parsed
    assert m.mae == pytest.approx((1 + 1 + 0) / 3)
    # the default is the one-completion rule: 1 where a prediction is given
    assert rating_metrics([5, 1], [4, None], [3, 3], scale).coverage == 0.5
    with pytest.raises(ValueError, match="parsed_share must hold one share in \\[0, 1\\] for each of the 2 samples"):
        rating_metrics([5, 1], [4, None], [3, 3], scale, parsed_share=[1.5, 0])


def test_one_rating_for_everyone_has_zero_prediction_spread():
    m = rating_metrics([1, 3, 5, 3], [3, 3, 3, 3], [2, 2, 2, 2], RatingScale(1, 5))
    assert m.prediction_std == 0.0 and m.mae == 1.0


def test_one_sample_has_no_prediction_spread_rather_than_zero():
    """The spread of one prediction is undefined: 0 would read as a collapse to one rating."""
    m = rating_metrics([4], [4], [3], RatingScale(1, 5))
    assert math.isnan(m.prediction_std) and m.mae == 0.0


def test_nothing_parsed():
    m = rating_metrics([1, 2], [None, None], [2, 2], RatingScale())
    assert m.coverage == 0 and math.isnan(m.mae_parsed) and m.mae == 0.5


def test_fallback_order():
    fb = fallback_predictions(np.array([4.0, np.nan, np.nan]), np.array([2.0, 3.0, np.nan]), 3.5)
    assert fb.tolist() == [4.0, 3.0, 3.5]


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match="length"):
        rating_metrics([1, 2], [1], [1, 1], RatingScale())


def test_paired_difference_on_a_hand_made_example():
    from recgym.metrics import paired_difference

    before = [1.0, -2.0, 0.5, 0.0]   # signed errors: their absolute values are compared
    after = [0.5, 1.0, 0.5, 1.0]
    mean, se = paired_difference(before, after)
    d = np.array([0.5, 1.0, 0.0, -1.0])  # |before| - |after|
    assert mean == pytest.approx(0.125)
    assert se == pytest.approx(d.std(ddof=1) / 2)
    with pytest.raises(ValueError):
        paired_difference([1.0], [0.0])


def test_demo_summary_rows_baselines_and_paired_error():
    from recgym.demo import summarize

    def record(mae, n=4):
        return {"eval/mae": mae, "eval/rmse": mae + 0.1, "eval/coverage": 1.0, "eval/format_rate": 0.95, "eval/n": n,
                "eval/prediction_std": 0.6, "eval/baseline/user_mean_mae": 0.8, "eval/baseline/item_mean_mae": 0.7}

    target = [3.0, 4.0, 2.0, 3.5]
    sft = [4.0, 3.0, 3.0, 4.0]      # errors 1, -1, 1, 0.5
    grpo = [3.5, 3.5, 3.0, 4.0]     # errors 0.5, -0.5, 1, 0.5
    summary = summarize({"base": record(1.0), "sft": record(0.9), "grpo": record(0.7)},
                        {"sft": (sft, target), "grpo": (grpo, target)}, seconds=12.5, train_mean=3.0)
    assert [r["name"] for r in summary["rows"]] == ["base", "sft", "grpo"]
    assert summary["rows"][0] == {"name": "base", "mae": 1.0, "rmse": pytest.approx(1.1), "coverage": 1.0,
                                  "format_rate": 0.95, "n": 4, "prediction_std": 0.6}
    # grpo's predictions (mean 3.5) centred to the training mean 3.0: 3, 3, 2.5, 3.5 -> errors 0, -1, 0.5, 0
    assert summary["rows"][2]["centred_mae"] == pytest.approx(0.375)
    assert summary["rows"][2]["correlation"] == pytest.approx(np.corrcoef(grpo, target)[0, 1])
    assert summary["baselines"] == {"user_mean": 0.8, "item_mean": 0.7}
    assert summary["paired_gain"] == pytest.approx(0.25)
    assert summary["paired_se"] == pytest.approx(np.std([0.5, 0.5, 0, 0], ddof=1) / 2)
    assert summary["beyond_bias"]["centred_mae_b"] == pytest.approx(0.375)
    assert summary["seconds"] == 12.5 and summary["train_mean"] == 3.0


def test_demo_predictions_file_keeps_every_row_per_sample_in_index_order(tmp_path):
    from recgym.demo import read_predictions, write_predictions

    path = tmp_path / "predictions.jsonl"
    write_predictions(path, {"sft": [{"index": 1, "target": 4.0, "prediction_or_fallback": 3.5},
                                     {"index": 0, "target": 2.0, "prediction_or_fallback": 2.5}],
                             "grpo": [{"index": 0, "target": 2.0, "prediction_or_fallback": 2.0}]})
    assert read_predictions(path, "sft") == [{"row": "sft", "index": 0, "target": 2.0, "prediction": 2.5},
                                             {"row": "sft", "index": 1, "target": 4.0, "prediction": 3.5}]
    assert [r["prediction"] for r in read_predictions(path, "grpo")] == [2.0]
    with pytest.raises(ValueError, match="no row 'base'"):
        read_predictions(path, "base")
    with pytest.raises(FileNotFoundError, match="rerun"):
        read_predictions(tmp_path / "old_run" / "predictions.jsonl", "sft")


def test_demo_summary_on_ranking_rows_gives_the_paired_ndcg_gain():
    from recgym.demo import summarize

    def record(ndcg):
        return {"eval/ndcg@10": ndcg, "eval/ndcg@5": ndcg, "eval/hr@1": 0.1, "eval/hr@10": 0.8, "eval/mrr": 0.3,
                "eval/coverage": 0.9, "eval/format_rate": 0.9, "eval/n": 4, "eval/baseline/random_ndcg@10": 0.25,
                "eval/baseline/bpr_ndcg@10": 0.41}

    sft, grpo = [1, 3, 2, 10], [1, 1, 4, 11]   # the true item's rank in each list; 11 is past the cut-off
    ones = [1, 1, 1, 1]
    summary = summarize({"sft": record(0.4), "grpo": record(0.5)}, {"sft": (sft, ones), "grpo": (grpo, ones)},
                        seconds=3.0, train_mean=3.5)
    gains = np.array([1 - 1, 1 - 1 / np.log2(4), 1 / np.log2(5) - 1 / np.log2(3), 0 - 1 / np.log2(11)])
    assert summary["task"] == "ranking" and summary["metric"] == "ndcg@10"
    assert summary["paired_gain"] == pytest.approx(gains.mean())
    assert summary["paired_se"] == pytest.approx(gains.std(ddof=1) / 2)
    assert summary["baselines"] == {"random": 0.25, "bpr": 0.41}
    assert summary["rows"][1] == {"name": "grpo", "ndcg@10": 0.5, "ndcg@5": 0.5, "hr@1": 0.1, "hr@10": 0.8,
                                  "mrr": 0.3, "coverage": 0.9, "format_rate": 0.9, "n": 4}
    assert "beyond_bias" not in summary  # a rank has no mean shift to remove


def test_beyond_bias_removes_a_pure_shift_and_keeps_a_real_gain():
    from recgym.metrics import beyond_bias

    rng = np.random.default_rng(0)
    truth = rng.integers(1, 6, size=200).astype(float)
    noisy = truth + rng.normal(0, 1.0, size=200)
    shifted = noisy - 0.8                                    # the same model with a low bias
    only_bias = beyond_bias(shifted, noisy, truth, train_mean=float(truth.mean()))
    assert only_bias["centred_gain"] == pytest.approx(0.0, abs=1e-12)  # removing the shift leaves nothing
    assert only_bias["correlation_gain"] == pytest.approx(0.0, abs=1e-12)
    better = truth + rng.normal(0, 0.3, size=200) - 0.8      # a real improvement, also biased
    real = beyond_bias(shifted, better, truth, train_mean=float(truth.mean()))
    assert real["centred_gain"] > 4 * real["centred_se"] > 0
    assert real["correlation_gain"] > 4 * real["correlation_se"] > 0
    constant = beyond_bias(np.full(200, 3.0), noisy, truth, train_mean=3.0)
    assert np.isnan(constant["correlation_a"]) and np.isfinite(constant["correlation_b"])
    with pytest.raises(ValueError):
        beyond_bias([1.0, 2.0], [1.0], [1.0, 2.0], train_mean=1.5)


def test_demo_settings_from_defaults_then_config_file_then_flags(tmp_path):
    import argparse

    from recgym.demo import DemoSettings, add_settings_arguments, parse_settings

    def parse(*argv):
        parser = argparse.ArgumentParser()
        parser.add_argument("--arms", nargs="+", default=["recone"])
        add_settings_arguments(parser, output_dir="runs/elsewhere")
        return parse_settings(parser, list(argv))

    settings, rest = parse()
    assert settings == DemoSettings(output_dir="runs/elsewhere") and rest == {"arms": ["recone"]}
    recipe = tmp_path / "long.yaml"
    recipe.write_text("grpo_steps: 40\nlearning_rate: 2.0e-5\nalgorithm_kwargs: {overlong_buffer: 0}\n")
    settings, _ = parse("--config", str(recipe), "--grpo_steps", "3", "--arms", "sft-only")
    assert (settings.grpo_steps, settings.learning_rate, settings.algorithm_kwargs) == (3, 2e-5, {"overlong_buffer": 0})
    assert settings.output_dir == "runs/elsewhere" and settings.group_size == DemoSettings.group_size
    settings, _ = parse("--algorithm_kwargs", "{clip_epsilon_high: 0.3}")
    assert settings.algorithm_kwargs == {"clip_epsilon_high": 0.3}
    with pytest.raises(SystemExit):
        parse("--teacher", "oracle")  # a one-line usage error, not a traceback later in the run
    assert parse("--eval_base", "false")[0].eval_base is False and parse("--eval_base", "true")[0].eval_base is True
    recipe.write_text("grpo_step: 40\n")
    with pytest.raises(SystemExit):
        parse("--config", str(recipe))


def test_demo_grpo_trains_the_top_blocks_its_sft_every_weight_on_the_tuning_split(tmp_path, monkeypatch):
    """The demo's GRPO config carries trainable_layers and eval_split; its SFT config trains every
    weight on the configured schedule (train_sft replaced by a recorder: no model is loaded)."""
    from pathlib import Path

    from recgym.agents import sft
    from recgym.demo import DemoSettings, cold_start_sft, grpo_config

    s = DemoSettings(output_dir=str(tmp_path), eval_split="train", sft_lr_scheduler_type="cosine", cold_start_samples=8)
    config = grpo_config(s, tmp_path / "grpo", "m", s.env_kwargs, steps=2)
    assert (config.trainable_layers, config.eval_split, config.prompts_per_step) == (10, "train", 3)
    seen = []
    monkeypatch.setattr(sft, "train_sft", lambda c: seen.append(c) or Path(c.output_dir))
    cold_start_sft(s, tmp_path, s.env_kwargs)
    assert seen[0].trainable_layers == 0 and seen[0].lr_scheduler_type == "cosine"


def test_paired_change_text_states_the_change_its_error_and_their_ratio():
    from recgym.metrics import paired_change_text

    assert paired_change_text(0.035, 0.048) == "MAE lower by +0.035 (paired standard error 0.048, 0.7 SE)"
    assert paired_change_text(-0.063, 0.061).startswith("MAE lower by -0.063")
    assert paired_change_text(0.0, 0.0, "NDCG@10 higher by") == (
        "NDCG@10 higher by +0.000 (the same change on every sample: paired standard error 0)")


def test_demo_learner_dtype_auto_picks_bfloat16_only_on_a_cpu_with_native_bfloat16(monkeypatch):
    import torch

    from recgym.demo import learner_dtype

    assert learner_dtype("float32") == "float32" and learner_dtype("bfloat16") == "bfloat16"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    assert learner_dtype("auto") == "float32"  # without native bfloat16, autocast would be emulated
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    assert learner_dtype("auto") == "bfloat16"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert learner_dtype("auto") == "float32"  # at 135M parameters bfloat16 was slower on an H200


@pytest.mark.parametrize("ranks", [[0], [1, -3], [2.5], [float("nan")], [float("inf")], [[[1, 2]]], [[1, 2], [3]],
                                   [[1, 0]]])
def test_ranking_metrics_refuse_what_is_not_a_rank(ranks):
    """[0] gave NDCG and MRR of inf with only a RuntimeWarning. One or k ranks per sample (k completions)."""
    with pytest.raises(ValueError, match="must be|must hold"):
        ranking_metrics(ranks)


def test_ranking_metrics_take_whole_number_floats_and_check_lengths():
    assert ranking_metrics([1.0, 3.0]) == ranking_metrics([1, 3])  # the demo's records hold float64 ranks
    with pytest.raises(ValueError, match="ranks and format_ok differ in length: 2, 1"):
        ranking_metrics([1, 3], [True])


def test_paired_ranking_difference_needs_the_same_lists_and_a_known_metric():
    """Lists of lengths 1 and 3 were broadcast into a difference; an unknown metric was a bare KeyError."""
    with pytest.raises(ValueError, match="ranks_a and ranks_b must rank the same lists, got 1 and 3 ranks"):
        paired_ranking_difference([1], [1, 5, 20])
    with pytest.raises(ValueError, match="unknown ranking metric 'ndcg@20': choose one of ndcg@5, ndcg@10, hr@1, "
                                         "hr@5, hr@10, mrr"):
        paired_ranking_difference([1, 2], [2, 1], metric="ndcg@20")
    assert paired_ranking_difference([2, 2], [1, 1], metric="mrr") == (0.5, 0.0)
