"""Classical baselines: fit on train only, exact on hand-made data, useful on structured data;
the ranking ones never scored on their own training lists, and on the lists ``recgym eval`` builds."""

from __future__ import annotations

import dataclasses
import json

import gymnasium as gym
import numpy as np
import pytest

from recgym.baselines import (
    BASELINES,
    MFConfig,
    fit_baselines,
    ranking_baseline_ranks,
    run_baselines,
)
from recgym.cli import main
from recgym.data.dataset import RatingDataset
from recgym.data.registry import load_dataset
from recgym.data.schema import RatingScale


def table(test_shift: float = 0.0) -> RatingDataset:
    """Three users, four items; each user's last rating is test, second-last valid."""
    users = ["a"] * 4 + ["b"] * 4 + ["c"] * 3
    items = ["i1", "i2", "i3", "i4", "i1", "i2", "i3", "i4", "i1", "i2", "i4"]
    ratings = [5, 4, 3, 1, 2, 2, 5, 3, 4, 1, 5]
    times = [1, 2, 3, 4, 1, 2, 3, 4, 1, 2, 3]
    ratings = [min(5.0, max(1.0, r + test_shift)) if k in (3, 7, 10) else r for k, r in enumerate(ratings)]
    return RatingDataset.from_tables(
        "hand", RatingScale(1, 5), {"user_id": users, "item_id": items, "rating": ratings, "timestamp": times}
    )


def test_means_are_exact_train_statistics():
    ds = table()
    fitted = fit_baselines(ds, ["global_mean", "user_mean", "item_mean"])
    train = {"a": [5, 4], "b": [2, 2], "c": [4]}
    mean = np.mean([5, 4, 2, 2, 4])
    u = np.array([list(ds.user_ids).index(x) for x in "abc"])
    i = np.array([list(ds.item_ids).index("i1")] * 3)
    assert np.allclose(fitted["global_mean"](u, i), mean)
    assert np.allclose(fitted["user_mean"](u, i), [np.mean(train[x]) for x in "abc"])
    assert np.allclose(fitted["item_mean"](u, i), np.mean([5, 2, 4]))  # i1's train ratings only
    i3 = np.array([list(ds.item_ids).index("i3")])
    assert np.allclose(fitted["item_mean"](u[:1], i3), mean)  # i3 has no train rating: global mean
    scores = run_baselines(ds, names=["global_mean"])
    expected = np.abs(ds.targets("test") - mean).mean()
    assert scores["global_mean"]["test"]["mae"] == pytest.approx(expected)
    assert scores["global_mean"]["test"]["n"] == 3


def test_no_test_rating_informs_any_prediction():
    base, shifted = table(0.0), table(-3.0)
    assert not np.allclose(base.targets("test"), shifted.targets("test"))
    fa, fb = fit_baselines(base), fit_baselines(shifted)
    for split in ("valid", "test"):
        rows = base.samples[split]
        u, i = np.asarray(base.user_codes)[rows], np.asarray(base.item_codes)[rows]
        for name in BASELINES:
            assert np.allclose(fa[name](u, i), fb[name](u, i), atol=1e-9), (name, split)


def test_predictions_clipped_to_scale():
    ds = table()
    for predict in fit_baselines(ds).values():
        p = predict(np.asarray(ds.user_codes), np.asarray(ds.item_codes))
        assert p.min() >= 1 and p.max() <= 5


def test_mf_and_biases_beat_global_mean_on_synthetic_world():
    ds = load_dataset("synthetic")
    scores = run_baselines(ds, mf=dataclasses.replace(MFConfig(), max_epochs=30))
    assert set(scores) == set(BASELINES)
    for name in ("user_item_bias", "biased_mf"):
        assert scores[name]["test"]["rmse"] < scores["global_mean"]["test"]["rmse"]
    assert scores["biased_mf"]["test"]["n"] == ds.num_samples("test")


def test_unknown_baseline_rejected():
    with pytest.raises(ValueError, match="unknown baselines"):
        run_baselines(table(), names=["oracle"])


def test_fitted_ranking_baselines_are_not_scored_on_train_lists(capsys):
    env = gym.make("RecRank-Synthetic-v0", split="train").unwrapped
    assert set(ranking_baseline_ranks(env.dataset, "train", env.lists[:20])) == {"random", "popularity"}
    with pytest.raises(ValueError, match="bpr are fit on the train split.*valid or test"):
        ranking_baseline_ranks(env.dataset, "train", env.lists[:20], names=("random", "bpr"))
    assert main(["baseline", "RecRank-Synthetic-v0", "--splits", "train", "valid", "--limit", "20"]) == 0
    train, valid = " ".join(capsys.readouterr().out.split()).split("RecRank-Synthetic-v0 valid")
    assert "│ popularity │" in train and "│ bpr │" not in train and "│ item_knn │" not in train
    assert "no item_knn or bpr row: they are fit on the train split" in train
    assert "│ bpr │" in valid and "│ item_knn │" in valid


def test_baseline_env_kwargs_build_the_lists_eval_ranks(capsys):
    from recgym.metrics import ranking_metrics

    kwargs = {"num_candidates": 5, "negatives": "popularity", "candidate_seed": 3}
    assert main(["baseline", "RecRank-Synthetic-v0", "--splits", "valid", "--limit", "30",
                 "--env-kwargs", json.dumps(kwargs)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "on the same 30 candidate lists (5 candidates, popularity negatives, seed 3;" in out
    env = gym.make("RecRank-Synthetic-v0", split="valid", **kwargs).unwrapped
    for name, ranks in ranking_baseline_ranks(env.dataset, "valid", env.lists[:30]).items():
        m = ranking_metrics(ranks)
        assert f"│ {name} │ " + " │ ".join(f"{m[c]:.4f}" for c in ("ndcg@5", "ndcg@10", "hr@1")) in out
    for given, error in (('{"num_candidate": 5}', "takes no argument(s) num_candidate (did you mean num_candidates?)"),
                         ("[5]", "--env-kwargs: expected a JSON object"), ('{"split": "test"}', "--splits")):
        assert main(["baseline", "RecRank-Synthetic-v0", "--env-kwargs", given]) == 2
        assert error in capsys.readouterr().err
