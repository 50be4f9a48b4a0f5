"""Rating-prediction metrics that stay honest about unparseable outputs.

MAE and RMSE are reported twice: over *all* samples, where an unparsed prediction is replaced by
the declared fallback (the user's prior average, else the item's, else the training mean), and
over the parsed predictions alone. Coverage says how many parsed. Never report the parsed-only
figure on its own.

With k completions per sample (``recgym eval --samples k``) the prediction is the mean of the k
ratings, each unparsed one replaced by the sample's fallback; coverage is then the share of
completions that parsed, and the parsed-only figures cover the samples all of whose completions
parsed (for k = 1 both are the per-sample figures).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import ClassVar

import numpy as np

from recgym.data.schema import RatingScale

FALLBACK = "user average, else item average, else training mean"


@dataclass(frozen=True)
class RatingMetrics:
    headline: ClassVar[str] = "mae"
    """The figure a training log and its baselines report (lower is better here)."""
    n: int
    mae: float
    """Over all samples, with the fallback for unparsed predictions."""
    rmse: float
    mae_parsed: float
    """Over parsed predictions only: with k completions per sample, the samples all k of whose
    completions parsed (NaN when none did)."""
    rmse_parsed: float
    coverage: float
    """Share of completions that parsed (with one completion per sample: of samples)."""
    format_rate: float
    """Share of completions whose format holds (NaN when unknown)."""
    mean_reward: float
    """NaN when rewards were not given."""
    scale: str
    prediction_std: float = float("nan")
    """Spread of the predictions, fallbacks included (population std): near 0 when one rating is
    given to everyone, which lowers MAE toward the majority rating's without any personalization.
    NaN for fewer than two samples, whose spread says nothing."""
    prediction_std_parsed: float = float("nan")
    """Spread of the parsed predictions alone (NaN for fewer than two): the collapse guard's check
    of one rating for nearly everyone, which a few fallbacks hide from ``prediction_std``."""
    fallback: str = FALLBACK

    def as_dict(self) -> dict:
        return asdict(self)


def fallback_predictions(
    user_avg: np.ndarray, item_avg: np.ndarray, global_mean: float
) -> np.ndarray:
    """The declared fallback per sample: user average, else item average, else the global mean."""
    out = np.where(np.isfinite(user_avg), user_avg, item_avg)
    return np.where(np.isfinite(out), out, global_mean).astype(np.float64)


def rating_metrics(
    targets: Sequence[float],
    predictions: Sequence[float | None],
    fallbacks: Sequence[float],
    scale: RatingScale,
    format_ok: Sequence[bool] | None = None,
    rewards: Sequence[float] | None = None,
    parsed_share: Sequence[float] | None = None,
) -> RatingMetrics:
    """Metrics for one split on one scale. ``predictions`` hold None (or NaN) where none parsed;
    parsed predictions are clipped to the scale.

    ``parsed_share``: per sample, the share of its completions that parsed, where a prediction is
    the mean of several (each unparsed one already counted as the fallback in it); coverage is then
    its mean, and the parsed-only figures cover the samples whose share is 1. By default 1 where a
    prediction is given, else 0."""
    y = np.asarray(targets, dtype=np.float64)
    pred = np.array([np.nan if p is None else float(p) for p in predictions], dtype=np.float64)
    fb = np.asarray(fallbacks, dtype=np.float64)
    if not (len(y) == len(pred) == len(fb)):
        raise ValueError(f"targets, predictions and fallbacks differ in length: {len(y)}, {len(pred)}, {len(fb)}")
    parsed = np.isfinite(pred)
    share = parsed.astype(np.float64)
    if parsed_share is not None:
        given = np.asarray(parsed_share, dtype=np.float64)
        if given.shape != y.shape or not np.all((given >= 0) & (given <= 1)):
            raise ValueError(f"parsed_share must hold one share in [0, 1] for each of the {len(y)} samples")
        share = np.where(parsed, given, 0.0)
    pred = np.where(parsed, np.clip(np.nan_to_num(pred), scale.low, scale.high), fb)
    err = np.abs(pred - y)
    whole = share == 1

    def _mean(values: np.ndarray) -> float:
        return float(values.mean()) if len(values) else float("nan")

    return RatingMetrics(
        n=len(y),
        mae=_mean(err),
        rmse=float(np.sqrt(_mean(err**2))),
        mae_parsed=_mean(err[whole]),
        rmse_parsed=float(np.sqrt(_mean(err[whole] ** 2))),
        coverage=_mean(share),
        format_rate=_mean(np.asarray(format_ok, dtype=np.float64)) if format_ok is not None else float("nan"),
        mean_reward=_mean(np.asarray(rewards, dtype=np.float64)) if rewards is not None else float("nan"),
        scale=scale.label,
        prediction_std=float(pred.std()) if len(pred) >= 2 else float("nan"),
        prediction_std_parsed=float(pred[parsed].std()) if parsed.sum() >= 2 else float("nan"),
    )


def paired_difference(errors_a: np.ndarray, errors_b: np.ndarray) -> tuple[float, float]:
    """Mean and standard error of the per-sample difference ``|err_a| - |err_b|`` over the same
    samples (positive: ``b`` is better). The standard error is ``std(d, ddof=1) / sqrt(n)``."""
    d = np.abs(np.asarray(errors_a, dtype=np.float64)) - np.abs(np.asarray(errors_b, dtype=np.float64))
    return _mean_and_se(d)


def _mean_and_se(d: np.ndarray) -> tuple[float, float]:
    if d.ndim != 1 or len(d) < 2:
        raise ValueError(f"a paired difference needs two equal-length 1-d arrays of at least 2 values, got shape {d.shape}")
    return float(d.mean()), float(d.std(ddof=1) / np.sqrt(len(d)))


def paired_change_text(gain: float, se: float, what: str = "MAE lower by") -> str:
    """A paired change in words: ``what`` (``paired_difference``'s MAE drop by default), the change,
    its standard error, and their ratio."""
    if se == 0:
        return f"{what} {gain:+.3f} (the same change on every sample: paired standard error 0)"
    return f"{what} {gain:+.3f} (paired standard error {se:.3f}, {gain / se:.1f} SE)"


def centred_errors(predictions: Sequence[float], targets: Sequence[float], train_mean: float) -> np.ndarray:
    """Errors after removing a model's mean shift: its predictions moved so that their mean is the
    training ratings' mean (no truth of the evaluated samples is used), minus the targets."""
    pred = np.asarray(predictions, dtype=np.float64)
    return pred - pred.mean() + train_mean - np.asarray(targets, dtype=np.float64)


def _correlation(pred: np.ndarray, targets: np.ndarray) -> float:
    if len(pred) < 2 or pred.std() == 0 or targets.std() == 0:
        return float("nan")  # one rating for everyone carries no ranking of the samples
    return float(np.corrcoef(pred, targets)[0, 1])


def beyond_bias(predictions_a: Sequence[float], predictions_b: Sequence[float], targets: Sequence[float],
                train_mean: float, *, resamples: int = 2000, seed: int = 0) -> dict[str, float]:
    """What is left of a change from model ``a`` to ``b`` (same samples) once each model's mean shift is
    removed: the MAE of :func:`centred_errors` of each, their paired gain ``|e_a| - |e_b|`` with its
    standard error; and the Pearson correlation of each model's predictions with the truth, with the
    paired bootstrap standard error (``resamples`` draws of the samples, ``seed``) of ``corr_b - corr_a``.
    Correlations are NaN for a model that gives every sample one rating."""
    a, b, y = (np.asarray(v, dtype=np.float64) for v in (predictions_a, predictions_b, targets))
    if not (a.shape == b.shape == y.shape) or a.ndim != 1 or len(y) < 2:
        raise ValueError(f"beyond_bias needs three equal-length 1-d arrays of at least 2 values, "
                         f"got shapes {a.shape}, {b.shape}, {y.shape}")
    ca, cb = centred_errors(a, y, train_mean), centred_errors(b, y, train_mean)
    gain, se = paired_difference(ca, cb)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(y), size=(resamples, len(y)))
    diffs = np.array([_correlation(b[i], y[i]) - _correlation(a[i], y[i]) for i in draws])
    diffs = diffs[np.isfinite(diffs)]
    return {
        "centred_mae_a": float(np.abs(ca).mean()), "centred_mae_b": float(np.abs(cb).mean()),
        "centred_gain": gain, "centred_se": se,
        "correlation_a": _correlation(a, y), "correlation_b": _correlation(b, y),
        "correlation_gain": _correlation(b, y) - _correlation(a, y),
        "correlation_se": float(diffs.std(ddof=1)) if len(diffs) > 1 else float("nan"),
    }


RANKING_CUTOFFS = {"ndcg@5": 5, "ndcg@10": 10, "hr@1": 1, "hr@5": 5, "hr@10": 10}
RANKING_METRICS = (*RANKING_CUTOFFS, "mrr")


def check_ranks(ranks: Sequence[int] | Sequence[Sequence[int]], name: str = "ranks") -> np.ndarray:
    """``ranks`` as a float array if they are whole numbers >= 1, one per sample (1-d) or k per sample
    (2-d: ``[sample][completion]``, k >= 1 the same for every sample); a ValueError otherwise."""
    try:
        r = np.asarray(ranks, dtype=np.float64)
    except ValueError:  # ragged
        raise ValueError(f"{name} must hold the same number of ranks for every sample") from None
    if r.ndim not in (1, 2) or (r.ndim == 2 and len(r) and r.shape[1] < 1):
        raise ValueError(f"{name} must be 1-based ranks, one or k per sample, got shape {r.shape}")
    bad = r[~(np.isfinite(r) & (r >= 1) & (r == np.round(r)))]
    if len(bad):
        raise ValueError(f"{name} must be whole numbers >= 1 (1 = the top), not {bad[0]:g} ({len(bad)} such value(s))")
    return r


def ranking_values(ranks: Sequence[int] | Sequence[Sequence[int]]) -> dict[str, np.ndarray]:
    """Per-sample NDCG@5/@10, HR@1/@5/@10 and reciprocal rank of 1-based target ranks; with k ranks
    per sample (k completions), each figure's mean over them."""
    r = check_ranks(ranks)
    out = {}
    for name, k in RANKING_CUTOFFS.items():
        hit = r <= k
        out[name] = np.where(hit, 1.0 / np.log2(r + 1), 0.0) if name.startswith("ndcg") else hit.astype(float)
    out["mrr"] = 1.0 / r
    return {name: v.mean(axis=1) if v.ndim == 2 else v for name, v in out.items()}


def ranking_metrics(ranks: Sequence[int] | Sequence[Sequence[int]],
                    format_ok: Sequence[bool] | Sequence[Sequence[bool]] | None = None) -> dict[str, float]:
    """Means of :func:`ranking_values` (one or k ranks per sample), ``n`` (samples), and ``mean_rank``
    (1-based) of the target. With ``format_ok`` (one or k per sample), coverage (share that parsed) too."""
    r = check_ranks(ranks)
    metrics = {name: float(v.mean()) if len(v) else float("nan") for name, v in ranking_values(r).items()}
    metrics["n"] = len(r)
    metrics["mean_rank"] = float(r.mean()) if len(r) else float("nan")
    if format_ok is not None:
        ok = np.asarray(format_ok, dtype=np.float64)
        if ok.shape[:1] != r.shape[:1]:
            raise ValueError(f"ranks and format_ok differ in length: {len(r)}, {len(ok)}")
        metrics["coverage"] = float(ok.mean()) if len(ok) else float("nan")
    return metrics


class RankingMetrics(dict):
    """``ranking_metrics``'s figures, with ``as_dict()`` like :class:`RatingMetrics`."""

    headline: ClassVar[str] = "ndcg@10"
    """The figure a training log and its baselines report (higher is better here)."""

    def as_dict(self) -> dict:
        return dict(self)


def paired_ranking_difference(ranks_a: Sequence[int], ranks_b: Sequence[int], metric: str = "ndcg@10") -> tuple[float, float]:
    """Mean and standard error of the per-list gain of ``b`` over ``a`` in ``metric`` (positive: b better);
    each side one or k ranks per list (:func:`ranking_values`)."""
    if metric not in RANKING_METRICS:
        raise ValueError(f"unknown ranking metric {metric!r}: choose one of {', '.join(RANKING_METRICS)}")
    a, b = check_ranks(ranks_a, "ranks_a"), check_ranks(ranks_b, "ranks_b")
    if len(a) != len(b):
        raise ValueError(f"ranks_a and ranks_b must rank the same lists, got {len(a)} and {len(b)} ranks")
    a, b = ranking_values(a)[metric], ranking_values(b)[metric]
    return _mean_and_se(b - a)
