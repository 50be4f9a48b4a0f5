"""What a training run shows and keeps: ``metrics.jsonl`` (one strict JSON line per step and per
evaluation: NaN and inf as null), a rich live table in a terminal (elsewhere one line per record),
optional trackers (TensorBoard, W&B, trackio), ``curves.png``, and the side-by-side table of
evaluations and baselines. Only the main process of a run writes.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from recgym.agents.config import REPORT_TARGETS, GRPOConfig
from recgym.console import make_console


def finite(value: Any) -> Any:
    """``value`` as strict JSON holds it, through dicts, lists and tuples: numpy scalars and arrays as
    Python numbers and lists, NaN and +-inf as None (``json.dumps`` would write ``NaN``, which strict
    parsers refuse)."""
    if isinstance(value, np.generic | np.ndarray):
        value = value.tolist()
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return None if isinstance(value, float) and not math.isfinite(value) else value


def json_text(value: Any, **kwargs: Any) -> str:
    """``json.dumps`` of :func:`finite` ``(value)``, refusing whatever would still not be strict JSON."""
    return json.dumps(finite(value), allow_nan=False, **kwargs)


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` so that ``path`` keeps its old content or holds the new one whole, whenever the
    process dies (a temporary file beside it, then a rename)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


_warned: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        warnings.warn(message, stacklevel=3)


def _restart(path: Path, resume_step: int) -> list[dict[str, Any]]:
    """Rewrite the JSON lines at ``path`` to those of steps up to ``resume_step`` (a resumed run keeps
    what its checkpoint had seen; a fresh one, ``resume_step`` 0, starts empty); returns them. A last
    line cut short (the process died while writing it) is left out with a warning."""
    kept = []
    if resume_step and path.exists():
        lines = [line for line in path.read_text().splitlines() if line.strip()]
        for n, line in enumerate(lines, 1):
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                if n < len(lines):
                    raise ValueError(f"{path} line {n} is not JSON ({exc}): remove that line to resume") from None
                _warn_once(f"{path}: its last line was cut short (the run stopped while writing it): left out")
                continue
            if record["step"] <= resume_step:
                kept.append(record)
    write_text_atomic(path, "".join(json_text(r) + "\n" for r in kept))
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
        if not resume_step:
            (self.dir / TRACKER_RUNS).unlink(missing_ok=True)
        self.trackers = [_make_tracker(name, config, resume_step) for name in config.report_to]
        self.console = make_console()
        self.live = None
        if config.live_display and self.console.is_terminal:  # elsewhere (a pipe, a log file): one line per record
            from rich.live import Live

            self.live = Live(self._table(), console=self.console, refresh_per_second=2, transient=False)
            self.live.start()

    def log(self, record: dict[str, Any]) -> None:
        record = finite(record)
        self.records.append(record)
        with self.path.open("a") as f:
            f.write(json_text(record) + "\n")
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
                f.write(json_text({"step": step, "index": r["index"], "target": r["target"],
                                   "completion": r["completions"][0]}) + "\n")

    def print(self, *args: Any) -> None:
        if self.live is not None:
            self.console.print(*args)
        else:
            print(*args, flush=True)

    def _table(self):
        from rich.table import Table

        table = Table(title="recgym GRPO training", expand=False)
        headline = headline_key(self.records)
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
        rows: dict[Any, dict[str, Any]] = {}  # by step: an evaluation comes after its step's training line
        for r in self.records:
            if is_eval_record(r):
                last_eval = {k: v for k, v in r.items() if k.startswith("eval/")}
                rows.get(r["step"], {}).update(last_eval)
            if "reward" in r:
                rows[r["step"]] = {**last_eval, **r}
        for r in list(rows.values())[-12:]:
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


def headline_key(records: list[dict[str, Any]]) -> str:
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


class _Tracker:
    def __init__(self, log, close=lambda: None) -> None:
        self._log, self.close = log, close

    def __call__(self, record: dict[str, Any]) -> None:
        numbers = {k: v for k, v in record.items() if isinstance(v, int | float) and k != "step"}
        self._log(numbers, int(record["step"]))


#: Beside ``metrics.jsonl``: the W&B run id and trackio run name of the run, which ``--resume`` reopens.
TRACKER_RUNS = "tracker_runs.json"
#: How W&B and trackio name a run, and what reopens it (W&B: ``max_steps`` and the logging fields
#: may change on resume).
_REOPEN = {"wandb": ("id", {"resume": "allow", "allow_val_change": True}), "trackio": ("name", {"resume": "allow"})}


def _make_tracker(name: str, config: GRPOConfig, resume_step: int = 0) -> _Tracker:
    """TensorBoard / W&B / trackio, by the names transformers' ``report_to`` uses. Like
    ``metrics.jsonl``, a run resumed at ``resume_step`` drops the later steps: TensorBoard hides the
    logged steps after it (a fresh run, ``resume_step`` 0, all of them); W&B and trackio reopen the
    run kept in :data:`TRACKER_RUNS` (W&B ignores the steps it already has: its steps only increase)."""
    out = Path(config.output_dir)
    try:
        if name == "tensorboard":
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(out / "tensorboard"), purge_step=resume_step + 1 if resume_step else 0)
            return _Tracker(lambda m, s: [writer.add_scalar(k, v, s) for k, v in m.items()], writer.close)
        if name in ("wandb", "trackio"):
            module = __import__(name)
            key, reopen = _REOPEN[name]
            try:
                runs = json.loads((out / TRACKER_RUNS).read_text())
            except (OSError, ValueError):
                runs = {}
            kwargs = {key: runs[name], **reopen} if resume_step and name in runs else {}
            run = module.init(project="recgym", config=config.to_dict(), **kwargs)
            write_text_atomic(out / TRACKER_RUNS, json.dumps({**runs, name: getattr(run, key)}))
            return _Tracker(lambda m, s: module.log(m, step=s), getattr(run, "finish", lambda: None))
    except ImportError as exc:
        raise ImportError(f"report_to={name!r} needs the {exc.name!r} package: pip install {exc.name}") from exc
    raise ValueError(f"unknown report_to target {name!r} ({', '.join(REPORT_TARGETS)})")


def plot_curves(records: list[dict[str, Any]], path: str | Path, baseline_mae: float | None = None) -> Path | None:
    """Reward (and its parts), format rate, the validation headline (MAE, or NDCG@10 for ranking)
    and coverage against steps; only the curves with data. Returns ``path``, or None (with a warning,
    once) where matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        _warn_once("curves.png not written: it needs matplotlib (pip install matplotlib)")
        return None
    train = [r for r in records if "reward" in r]
    evals = [r for r in records if is_eval_record(r)]
    headline = headline_key(records)
    fig, axes = plt.subplots(2, 3, figsize=(14, 7))

    def plot(ax, rows, key, **kwargs):
        points = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
        if points:
            ax.plot(*zip(*points), **kwargs)

    def panel(ax, title, legend=False, unit=False):
        ax.set_title(title)
        if unit:
            ax.set_ylim(-0.05, 1.05)
        if legend and ax.get_legend_handles_labels()[0]:
            ax.legend()

    ax = axes[0, 0]
    for key, label in (("reward", "total"), ("reward/format", "format"), *((k, k.removeprefix("reward/")) for k in ACCURACY_PARTS)):
        plot(ax, train, key, marker=".", label=label)
    panel(ax, "training reward", legend=True)
    plot(axes[0, 1], train, "format_rate", marker=".", label="train (sampled)")
    plot(axes[0, 1], evals, "eval/format_rate", marker="o", label="validation (greedy)")
    panel(axes[0, 1], "format rate", legend=True, unit=True)
    ax = axes[1, 0]
    plot(ax, evals, headline, marker="o", label="model (fallback where unparsed)")
    if baseline_mae is not None:
        ax.axhline(baseline_mae, color="grey", linestyle="--", label="user-average baseline")
    panel(ax, f"validation {HEADLINES[headline]}", legend=True)
    plot(axes[1, 1], evals, "eval/coverage", marker="o")
    panel(axes[1, 1], "validation coverage (answer parsed)", unit=True)
    plot(axes[0, 2], train, "zero_std_group_frac", marker=".")
    panel(axes[0, 2], "share of sampled groups\nwith zero reward variance", unit=True)
    plot(axes[1, 2], train, "entropy", marker=".")
    panel(axes[1, 2], "policy entropy\n(nats/token, sampled-token estimate)")
    for ax in axes.flat:
        ax.set_xlabel("step")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def current_plot(output_dir: str | Path) -> Path | None:
    """``output_dir/curves.png`` where the run that last wrote ``metrics.jsonl`` there also plotted it
    (:func:`plot_curves` writes it after the last line), else None (``plot`` off, a stopped run or no
    matplotlib: a ``curves.png`` there is an earlier run's)."""
    curves, metrics = Path(output_dir) / "curves.png", Path(output_dir) / "metrics.jsonl"
    fresh = curves.is_file() and metrics.is_file() and curves.stat().st_mtime_ns >= metrics.stat().st_mtime_ns
    return curves if fresh else None


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


def baseline_figures(records: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """The ``eval/baseline/*`` figures of the first evaluation record that has them (records of one
    run are on the same samples; a run the collapse guard stopped early has none in its last)."""
    first = next((r for r in records if any(k.startswith("eval/baseline/") for k in r)), {})
    return {k: v for k, v in first.items() if k.startswith("eval/baseline/")}


def comparison_table(rows: dict[str, dict[str, Any]], title: str = "validation, greedy decoding"):
    """A rich table of evaluation records (``eval/*`` keys) side by side, plus the classical
    baselines found in the first record that has them (:func:`baseline_figures`), all on the same
    samples."""
    from rich.table import Table

    headline = headline_key(list(rows.values()))
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
    for key, value in baseline_figures(rows.values()).items():
        if key.endswith(suffix):
            name = key.removeprefix("eval/baseline/").removesuffix(suffix)
            table.add_row(f"[dim]{name} (baseline)[/]", _fmt(last.get("eval/n"), "{:d}"), "-", "-", "100%",
                          _fmt(value, "{:.3f}"), *["-"] * (len(figures) - 1))
    table.caption = _TABLE_CAPTIONS[headline]
    return table
