"""What a training run shows and keeps: ``metrics.jsonl`` (one JSON line per step and per
evaluation), a rich live table, optional trackers (TensorBoard, W&B, trackio), ``curves.png``, and
the side-by-side table of evaluations and baselines. Only the main process of a run writes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from recgym.agents.config import REPORT_TARGETS, GRPOConfig


def _restart(path: Path, resume_step: int) -> list[dict[str, Any]]:
    """Rewrite the JSON lines at ``path`` to those of steps up to ``resume_step`` (a resumed run keeps
    what its checkpoint had seen; a fresh one, ``resume_step`` 0, starts empty); returns them."""
    kept = []
    if resume_step and path.exists():
        kept = [r for r in map(json.loads, path.read_text().splitlines()) if r["step"] <= resume_step]
    path.write_text("".join(json.dumps(r) + "\n" for r in kept))
    return kept


class RunLogger:
    """Writes one JSON line per step/evaluation and mirrors it to the display and trackers."""

    def __init__(self, config: GRPOConfig, resume_step: int = 0) -> None:
        self.dir = Path(config.output_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / "metrics.jsonl"
        self.completions_path = self.dir / "completions.jsonl"
        self.records = _restart(self.path, resume_step)
        _restart(self.completions_path, resume_step)
        self.trackers = [_make_tracker(name, config) for name in config.report_to]
        self.live = None
        if config.live_display:
            from rich.live import Live

            self.live = Live(self._table(), refresh_per_second=2, transient=False)
            self.live.start()

    def log(self, record: dict[str, Any]) -> None:
        record = {k: _jsonable(v) for k, v in record.items()}
        self.records.append(record)
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        for tracker in self.trackers:
            tracker(record)
        if self.live is not None:
            self.live.update(self._table())
        else:
            print(_one_line(record), flush=True)

    def log_completions(self, step: int, records: list[dict[str, Any]]) -> None:
        """Append an evaluation's first completions (its per-sample records) to ``completions.jsonl``."""
        with self.completions_path.open("a") as f:
            for r in records:
                f.write(json.dumps({"step": step, "index": r["index"], "target": r["target"],
                                    "completion": r["completions"][0]}) + "\n")

    def print(self, *args: Any) -> None:
        if self.live is not None:
            self.live.console.print(*args)
        else:
            print(*args, flush=True)

    def _table(self):
        from rich.table import Table

        table = Table(title="recgym GRPO training", expand=False)
        headline = _headline(self.records)
        accuracy = next((k for k in ACCURACY_PARTS if any(k in r for r in self.records)), ACCURACY_PARTS[0])
        columns = [
            ("step", "step", "{:d}"), ("reward", "reward", "{:.3f}"), ("format", "reward/format", "{:+.3f}"),
            (accuracy.removeprefix("reward/"), accuracy, "{:.3f}"), ("format rate", "format_rate", "{:.0%}"),
            (f"val {HEADLINES[headline]}", headline, "{:.3f}"), ("val coverage", "eval/coverage", "{:.0%}"),
            ("tok/s", "tokens_per_second", "{:.0f}"), ("gen s", "time/generation", "{:.1f}"),
            ("learn s", "time/learning", "{:.1f}"),
        ]
        for title, _, _ in columns:
            table.add_column(title, justify="right")
        last_eval: dict[str, Any] = {}
        rows = []
        for r in self.records:
            if is_eval_record(r):
                last_eval = r
            if "reward" in r:
                rows.append({**{k: v for k, v in last_eval.items() if k.startswith("eval/")}, **r})
        for r in rows[-12:]:
            table.add_row(*[_fmt(r.get(key), fmt) for _, key, fmt in columns])
        return table

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()
        for tracker in self.trackers:
            getattr(tracker, "close", lambda: None)()


#: An evaluation's headline figure (``eval_record`` writes the one its metrics name) and its title.
HEADLINES = {"eval/mae": "MAE", "eval/ndcg@10": "NDCG@10"}
#: The reward part beside the format (rating: accuracy; ranking: NDCG of the true item).
ACCURACY_PARTS = ("reward/accuracy", "reward/ndcg")


def is_eval_record(record: dict[str, Any]) -> bool:
    """An evaluation's line of ``metrics.jsonl`` (rating or ranking), not a training step's or the guard's."""
    return any(key.startswith("eval/") for key in record)


def _headline(records: list[dict[str, Any]]) -> str:
    """``eval/ndcg@10`` for a ranking run's evaluations, else ``eval/mae``."""
    return next((key for r in records if is_eval_record(r) for key in HEADLINES if key in r), "eval/mae")


def _fmt(value: Any, fmt: str) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "-"
    return fmt.format(int(value) if fmt == "{:d}" else value)


def _one_line(record: dict[str, Any]) -> str:
    keys = ("step", "reward", "format_rate", *HEADLINES, "eval/coverage", "eval/format_rate", "time/step")
    return " ".join(f"{k}={record[k]:.4g}" if isinstance(record[k], float) else f"{k}={record[k]}"
                    for k in keys if k in record)


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


class _Tracker:
    def __init__(self, log, close=lambda: None) -> None:
        self._log, self.close = log, close

    def __call__(self, record: dict[str, Any]) -> None:
        numbers = {k: v for k, v in record.items() if isinstance(v, int | float) and k != "step"}
        self._log(numbers, int(record["step"]))


def _make_tracker(name: str, config: GRPOConfig) -> _Tracker:
    """TensorBoard / W&B / trackio, by the names transformers' ``report_to`` uses."""
    try:
        if name == "tensorboard":
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(Path(config.output_dir) / "tensorboard"))
            return _Tracker(lambda m, s: [writer.add_scalar(k, v, s) for k, v in m.items()], writer.close)
        if name in ("wandb", "trackio"):
            module = __import__(name)
            run = module.init(project="recgym", config=config.to_dict())
            return _Tracker(lambda m, s: module.log(m, step=s), getattr(run, "finish", lambda: None))
    except ImportError as exc:
        raise ImportError(f"report_to={name!r} needs the {exc.name!r} package: pip install {exc.name}") from exc
    raise ValueError(f"unknown report_to target {name!r} ({', '.join(REPORT_TARGETS)})")


def plot_curves(records: list[dict[str, Any]], path: str | Path, baseline_mae: float | None = None) -> Path | None:
    """Reward (and its parts), format rate, the validation headline (MAE, or NDCG@10 for ranking)
    and coverage against steps."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    train = [r for r in records if "reward" in r]
    evals = [r for r in records if is_eval_record(r)]
    headline = _headline(records)
    fig, axes = plt.subplots(2, 3, figsize=(14, 7))

    def series(rows, key):
        pts = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
        return ([p[0] for p in pts], [p[1] for p in pts])

    ax = axes[0, 0]
    for key, label in (("reward", "total"), ("reward/format", "format"), *((k, k.removeprefix("reward/")) for k in ACCURACY_PARTS)):
        ax.plot(*series(train, key), marker=".", label=label)
    ax.set_title("training reward"), ax.legend()
    ax = axes[0, 1]
    ax.plot(*series(train, "format_rate"), marker=".", label="train (sampled)")
    ax.plot(*series(evals, "eval/format_rate"), marker="o", label="validation (greedy)")
    ax.set_title("format rate"), ax.set_ylim(-0.05, 1.05), ax.legend()
    ax = axes[1, 0]
    ax.plot(*series(evals, headline), marker="o", label="model (fallback where unparsed)")
    if baseline_mae is not None:
        ax.axhline(baseline_mae, color="grey", linestyle="--", label="user-average baseline")
    ax.set_title(f"validation {HEADLINES[headline]}"), ax.legend()
    ax = axes[1, 1]
    ax.plot(*series(evals, "eval/coverage"), marker="o")
    ax.set_title("validation coverage (answer parsed)"), ax.set_ylim(-0.05, 1.05)
    ax = axes[0, 2]
    ax.plot(*series(train, "zero_std_group_frac"), marker=".")
    ax.set_title("share of sampled groups with zero reward variance"), ax.set_ylim(-0.05, 1.05)
    ax = axes[1, 2]
    ax.plot(*series(train, "entropy"), marker=".")
    ax.set_title("policy entropy (nats/token, sampled-token estimate)")
    for ax in axes.flat:
        ax.set_xlabel("step")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def eval_record(result: Any, step: int) -> dict[str, Any]:
    """A flat ``eval/*`` record from a :class:`recgym.agents.evaluation.EvalResult`: every figure of
    its metrics (rating: MAE, RMSE, coverage, ...; ranking: NDCG@5/@10, HR@1/@5/@10, MRR, coverage,
    format rate) and each baseline's headline figure, ``eval/baseline/<name>_<headline>``."""
    headline = result.metrics.headline
    return {
        "step": step,
        **{f"eval/{k}": v for k, v in result.metrics.as_dict().items() if isinstance(v, int | float)},
        "eval/seconds": result.seconds,
        **{f"eval/baseline/{name}_{headline}": m[headline] for name, m in result.baselines.items()},
        **{f"eval/{k}": v for k, v in getattr(result, "episode_stats", {}).items()},  # multi-turn: tool calls, tokens read
    }


#: The figures ``comparison_table`` shows after the shared ones (n, reward, format rate, coverage),
#: by the records' headline: (title, key, format).
_TABLE_FIGURES = {
    "eval/mae": (("MAE", "eval/mae", "{:.3f}"), ("RMSE", "eval/rmse", "{:.3f}"),
                 ("MAE parsed", "eval/mae_parsed", "{:.3f}"), ("pred. std", "eval/prediction_std", "{:.2f}")),
    "eval/ndcg@10": (("NDCG@10", "eval/ndcg@10", "{:.3f}"), ("NDCG@5", "eval/ndcg@5", "{:.3f}"),
                     ("HR@1", "eval/hr@1", "{:.3f}"), ("MRR", "eval/mrr", "{:.3f}")),
}
_TABLE_CAPTIONS = {
    "eval/mae": "MAE/RMSE use the user's prior average (else item's, else global mean) where no rating parsed; "
                "pred. std near 0: one rating for everyone",
    "eval/ndcg@10": "unparsed rankings count in the prompt's (shuffled) order",
}


def comparison_table(rows: dict[str, dict[str, Any]], title: str = "validation, greedy decoding"):
    """A rich table of evaluation records (``eval/*`` keys) side by side, plus the classical
    baselines found in the last record, all on the same samples."""
    from rich.table import Table

    headline = _headline(list(rows.values()))
    figures = _TABLE_FIGURES[headline]
    table = Table(title=title)
    for column in ("predictor", "n", "mean reward", "format rate", "coverage", *(f[0] for f in figures)):
        table.add_column(column, justify="left" if column == "predictor" else "right", no_wrap=True)
    last: dict[str, Any] = {}
    for name, r in rows.items():
        table.add_row(
            name, _fmt(r.get("eval/n"), "{:d}"), _fmt(r.get("eval/mean_reward"), "{:.3f}"),
            _fmt(r.get("eval/format_rate"), "{:.0%}"), _fmt(r.get("eval/coverage"), "{:.0%}"),
            *(_fmt(r.get(key), fmt) for _, key, fmt in figures),
        )
        last = r
    suffix = "_" + headline.removeprefix("eval/")
    for key, value in last.items():
        if key.startswith("eval/baseline/") and key.endswith(suffix):
            name = key.removeprefix("eval/baseline/").removesuffix(suffix)
            table.add_row(f"[dim]{name} (baseline)[/]", _fmt(last.get("eval/n"), "{:d}"), "-", "-", "100%",
                          _fmt(value, "{:.3f}"), *["-"] * (len(figures) - 1))
    table.caption = _TABLE_CAPTIONS[headline]
    return table
