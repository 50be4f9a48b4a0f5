"""Classical reference scores: the floor every LLM result is shown against.

Every baseline is fit on the *train* split's ratings only (``split_codes == train``), so no
valid or test rating, and no rating of a sample itself outside train, informs a prediction.
Predictions are clipped to the dataset's scale.

    from recgym.baselines import run_baselines
    scores = run_baselines(dataset)          # {"biased_mf": {"test": {"mae": .., "rmse": .., "n": ..}}, ...}
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from recgym.data.dataset import RatingDataset
from recgym.data.prepare import SPLIT_CODES
from recgym.data.ranking import popularity_before

BASELINES = ("global_mean", "user_mean", "item_mean", "user_item_bias", "biased_mf")
Predictor = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class MFConfig:
    """Biased matrix factorization, trained with Adam on mini-batches, early-stopped on valid."""

    factors: int = 32
    lr: float = 0.01
    reg: float = 0.05
    batch_size: int = 8192
    max_epochs: int = 60
    patience: int = 4
    seed: int = 0


@dataclass(frozen=True)
class TrainRatings:
    users: np.ndarray
    items: np.ndarray
    ratings: np.ndarray
    num_users: int
    num_items: int

    @classmethod
    def of(cls, ds: RatingDataset) -> TrainRatings:
        train = np.asarray(ds.split_codes) == SPLIT_CODES["train"]
        return cls(
            np.asarray(ds.user_codes)[train].astype(np.int64),
            np.asarray(ds.item_codes)[train].astype(np.int64),
            np.asarray(ds.ratings)[train].astype(np.float64),
            len(ds.user_ids),
            len(ds.item_ids),
        )

    @property
    def mean(self) -> float:
        return float(self.ratings.mean()) if len(self.ratings) else float("nan")


def _group_mean(keys: np.ndarray, values: np.ndarray, size: int, fallback: float) -> np.ndarray:
    counts = np.bincount(keys, minlength=size)
    sums = np.bincount(keys, weights=values, minlength=size)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), fallback)


def fit_biases(train: TrainRatings, reg: float = 5.0, iters: int = 10) -> tuple[float, np.ndarray, np.ndarray]:
    """Regularized user and item biases around the train mean (alternating least squares)."""
    mu = train.mean
    bu, bi = np.zeros(train.num_users), np.zeros(train.num_items)
    nu = np.bincount(train.users, minlength=train.num_users) + reg
    ni = np.bincount(train.items, minlength=train.num_items) + reg
    for _ in range(iters):
        bi = np.bincount(train.items, train.ratings - mu - bu[train.users], train.num_items) / ni
        bu = np.bincount(train.users, train.ratings - mu - bi[train.items], train.num_users) / nu
    return mu, bu, bi


def fit_means(train: TrainRatings) -> dict[str, Predictor]:
    mu = train.mean
    user_avg = _group_mean(train.users, train.ratings, train.num_users, mu)
    item_avg = _group_mean(train.items, train.ratings, train.num_items, mu)
    mu_b, bu, bi = fit_biases(train)
    return {
        "global_mean": lambda u, i: np.full(len(u), mu),
        "user_mean": lambda u, i: user_avg[u],
        "item_mean": lambda u, i: item_avg[i],
        "user_item_bias": lambda u, i: mu_b + bu[u] + bi[i],
    }


def fit_biased_mf(
    train: TrainRatings, valid: tuple[np.ndarray, np.ndarray, np.ndarray] | None, config: MFConfig = MFConfig()
) -> Predictor:
    """``mu + b_u + b_i + p_u . q_i`` fit on train; the epoch with the best valid RMSE is kept
    (without valid samples, all ``max_epochs`` run)."""
    import torch

    gen = torch.Generator().manual_seed(config.seed)
    mu, bu0, bi0 = fit_biases(train)
    k = config.factors
    P = (0.01 * torch.randn(train.num_users, k, generator=gen, dtype=torch.float64)).requires_grad_()
    Q = (0.01 * torch.randn(train.num_items, k, generator=gen, dtype=torch.float64)).requires_grad_()
    bu = torch.tensor(bu0).requires_grad_()
    bi = torch.tensor(bi0).requires_grad_()
    params = [P, Q, bu, bi]
    opt = torch.optim.Adam(params, lr=config.lr)
    users, items = torch.from_numpy(train.users), torch.from_numpy(train.items)
    ratings = torch.from_numpy(train.ratings)

    def predict(u: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
        return mu + bu[u] + bi[i] + (P[u] * Q[i]).sum(1)

    best = (float("inf"), [p.detach().clone() for p in params])
    stale = 0
    for _ in range(config.max_epochs):
        order = torch.randperm(len(ratings), generator=gen)
        for start in range(0, len(order), config.batch_size):
            b = order[start : start + config.batch_size]
            u, i = users[b], items[b]
            err = predict(u, i) - ratings[b]
            loss = (err**2).mean() + config.reg * ((P[u] ** 2).sum(1) + (Q[i] ** 2).sum(1)).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        if valid is None:
            best = (0.0, [p.detach().clone() for p in params])
            continue
        with torch.no_grad():
            vu, vi, vr = (torch.from_numpy(np.asarray(a)) for a in valid)
            rmse = float(((predict(vu, vi) - vr) ** 2).mean().sqrt())
        if rmse < best[0] - 1e-5:
            best, stale = (rmse, [p.detach().clone() for p in params]), 0
        else:
            stale += 1
            if stale >= config.patience:
                break
    P_, Q_, bu_, bi_ = (t.numpy() for t in best[1])
    return lambda u, i: mu + bu_[u] + bi_[i] + (P_[u] * Q_[i]).sum(1)


def split_arrays(
    ds: RatingDataset, split: str, indices: Sequence[int] | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """User codes, item codes and target ratings of the samples of ``split`` (or of the samples at
    ``indices`` within it): what a predictor needs to be scored."""
    rows = np.asarray(ds.samples[split])
    if indices is not None:
        rows = rows[np.asarray(indices, dtype=np.int64)]
    return (
        np.asarray(ds.user_codes)[rows].astype(np.int64),
        np.asarray(ds.item_codes)[rows].astype(np.int64),
        np.asarray(ds.ratings)[rows].astype(np.float64),
    )


def error_metrics(predictions: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    err = np.asarray(predictions, dtype=np.float64) - np.asarray(targets, dtype=np.float64)
    if len(err) == 0:
        return {"mae": float("nan"), "rmse": float("nan"), "n": 0}
    return {"mae": float(np.abs(err).mean()), "rmse": float(np.sqrt((err**2).mean())), "n": len(err)}


def fit_baselines(
    dataset: RatingDataset, names: Sequence[str] = BASELINES, mf: MFConfig = MFConfig()
) -> dict[str, Predictor]:
    """Fit the named baselines on the train split; each maps ``(user_codes, item_codes)`` to
    predictions clipped to the dataset's scale."""
    unknown = set(names) - set(BASELINES)
    if unknown:
        raise ValueError(f"unknown baselines {sorted(unknown)}; choose from {', '.join(BASELINES)}")
    train = TrainRatings.of(dataset)
    if len(train.ratings) == 0:
        raise ValueError(f"dataset {dataset.name!r} has no train ratings to fit baselines on")
    fitted = fit_means(train)
    if "biased_mf" in names:
        valid = split_arrays(dataset, "valid")
        fitted["biased_mf"] = fit_biased_mf(train, valid if len(valid[2]) else None, mf)
    low, high = dataset.scale.low, dataset.scale.high

    def clipped(predict: Predictor) -> Predictor:
        return lambda u, i: np.clip(predict(u, i), low, high)

    return {name: clipped(fitted[name]) for name in names}


def run_baselines(
    dataset: RatingDataset,
    splits: Sequence[str] = ("valid", "test"),
    names: Sequence[str] = BASELINES,
    mf: MFConfig = MFConfig(),
) -> dict[str, dict[str, dict[str, float]]]:
    """MAE, RMSE and n of each baseline on each split: ``{baseline: {split: {"mae", "rmse", "n"}}}``.

    All baselines are fit on the train split only; ``biased_mf`` early-stops on valid. A split with
    no samples is refused (a ValueError), not reported as NaN."""
    for split in splits:
        dataset.require_samples(split)
    predictors = fit_baselines(dataset, names, mf)
    results: dict[str, dict[str, dict[str, float]]] = {}
    for name, predict in predictors.items():
        results[name] = {}
        for split in splits:
            users, items, targets = split_arrays(dataset, split)
            results[name][split] = error_metrics(predict(users, items), targets)
    return results


# ---- ranking: scores for the candidates of a RecRank list --------------------------------------
RANKING_BASELINES = ("random", "popularity", "item_knn", "bpr")
FIT_ON_TRAIN = ("item_knn", "bpr")
"""Ranking baselines fit on the train split: a train list's target is in their training data."""
Scorer = Callable[[int, np.ndarray, np.ndarray], np.ndarray]
"""``(row, history_items, candidate_items) -> scores`` (higher is better)."""


@dataclass(frozen=True)
class BPRConfig:
    """BPR matrix factorisation (numpy mini-batch SGD on train interactions, uniform negatives)."""

    factors: int = 32
    lr: float = 0.05
    reg: float = 0.001
    epochs: int = 30
    batch_size: int = 1024
    seed: int = 0


def rank_of_target(scores: np.ndarray, target_position: int) -> int:
    """1-based rank of the target; ties go to the earlier prompt position (a shuffled order)."""
    s = np.asarray(scores, dtype=np.float64)
    t = s[target_position]
    return int(1 + (s > t).sum() + (s[:target_position] == t).sum())


def _train_interactions(ds: RatingDataset) -> tuple[np.ndarray, np.ndarray]:
    train = np.asarray(ds.split_codes) == SPLIT_CODES["train"]
    return np.asarray(ds.user_codes)[train].astype(np.int64), np.asarray(ds.item_codes)[train].astype(np.int64)


def _dense_train_matrix(ds: RatingDataset) -> np.ndarray:
    size = len(ds.user_ids) * len(ds.item_ids)
    if size > 400_000_000:
        raise ValueError(f"item_knn keeps a dense user x item matrix; {size:,} cells is too many for this baseline")
    users, items = _train_interactions(ds)
    x = np.zeros((len(ds.user_ids), len(ds.item_ids)), dtype=np.float32)
    x[users, items] = 1.0
    return x


def fit_bpr(ds: RatingDataset, config: BPRConfig = BPRConfig()) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """User factors, item factors and item biases of BPR fit on the train split only."""
    rng = np.random.default_rng(config.seed)
    users, items = _train_interactions(ds)
    nu, ni = len(ds.user_ids), len(ds.item_ids)
    p = rng.normal(0, 0.1, (nu, config.factors))
    q = rng.normal(0, 0.1, (ni, config.factors))
    b = np.zeros(ni)
    for _ in range(config.epochs):
        order = rng.permutation(len(users))
        for start in range(0, len(order), config.batch_size):
            at = order[start : start + config.batch_size]
            u, i, j = users[at], items[at], rng.integers(ni, size=len(at))
            x = (p[u] * (q[i] - q[j])).sum(1) + b[i] - b[j]
            g = 1.0 / (1.0 + np.exp(np.clip(x, -30, 30)))  # d log sigmoid(x) / dx
            gu = g[:, None] * (q[i] - q[j]) - config.reg * p[u]
            gi = g[:, None] * p[u] - config.reg * q[i]
            gj = -g[:, None] * p[u] - config.reg * q[j]
            np.add.at(p, u, config.lr * gu)
            np.add.at(q, i, config.lr * gi)
            np.add.at(q, j, config.lr * gj)
            np.add.at(b, i, config.lr * (g - config.reg * b[i]))
            np.add.at(b, j, config.lr * (-g - config.reg * b[j]))
    return p, q, b


def fit_ranking_baselines(
    ds: RatingDataset, names: Sequence[str] = RANKING_BASELINES, bpr: BPRConfig = BPRConfig(), seed: int = 0
) -> dict[str, Scorer]:
    """Fit the named ranking scorers: popularity counts before each target's time, item-kNN
    (cosine co-occurrence over train histories), BPR on train; ``random`` is seeded per row."""
    unknown = set(names) - set(RANKING_BASELINES)
    if unknown:
        raise ValueError(f"unknown ranking baselines {sorted(unknown)}; choose from {', '.join(RANKING_BASELINES)}")
    scorers: dict[str, Scorer] = {}
    if "random" in names:
        scorers["random"] = lambda row, hist, cands: np.random.default_rng([seed, row]).random(len(cands))
    if "popularity" in names:
        def popularity(row: int, hist: np.ndarray, cands: np.ndarray) -> np.ndarray:
            return popularity_before(ds, int(ds.timestamps[row]))[cands]

        scorers["popularity"] = popularity
    if "item_knn" in names:
        x = _dense_train_matrix(ds)
        norm = 1.0 / np.sqrt(np.maximum(x.sum(0), 1.0))

        def item_knn(row: int, hist: np.ndarray, cands: np.ndarray) -> np.ndarray:
            if len(hist) == 0:
                return np.zeros(len(cands))
            w = x[:, hist] @ norm[hist]
            return (w @ x[:, cands]) * norm[cands]

        scorers["item_knn"] = item_knn
    if "bpr" in names:
        p, q, b = fit_bpr(ds, bpr)
        scorers["bpr"] = lambda row, hist, cands: q[cands] @ p[ds.user_codes[row]] + b[cands]
    return {name: scorers[name] for name in names}


def ranking_baseline_names(split: str) -> tuple[str, ...]:
    """The ranking baselines that can be scored on ``split``'s lists (on train: not ``FIT_ON_TRAIN``)."""
    return tuple(n for n in RANKING_BASELINES if split != "train" or n not in FIT_ON_TRAIN)


def ranking_baseline_ranks(
    ds: RatingDataset,
    split: str,
    lists: Sequence,
    names: Sequence[str] | None = None,
    bpr: BPRConfig = BPRConfig(),
) -> dict[str, np.ndarray]:
    """The target's 1-based rank under each baseline (by default ``ranking_baseline_names(split)``),
    for ``lists`` of ``(sample_index, CandidateList)`` (a RecRank env's ``lists``): the same lists
    the LLM ranks. ``FIT_ON_TRAIN`` baselines are refused on train lists."""
    names = ranking_baseline_names(split) if names is None else names
    if split == "train" and (fitted := [n for n in names if n in FIT_ON_TRAIN]):
        raise ValueError(f"{', '.join(fitted)} are fit on the train split, so its lists would score them on their "
                         "own training data: score them on valid or test lists")
    scorers = fit_ranking_baselines(ds, names, bpr)
    ranks: dict[str, np.ndarray] = {}
    for name, score in scorers.items():
        out = []
        for sample, c in lists:
            row = ds.row(split, sample)
            scores = score(row, np.asarray(c.history_items, dtype=np.int64), np.asarray(c.items, dtype=np.int64))
            out.append(rank_of_target(scores, c.target_position))
        ranks[name] = np.asarray(out, dtype=np.int64)
    return ranks
