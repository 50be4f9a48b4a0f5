"""Terminal output shared by the commands: the one rich console factory, the one table of rating
metrics (LLM rows and classical baselines on the same samples), and the machine a benchmark names."""

from __future__ import annotations

import math
import os
import platform
import sys
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from recgym.metrics import RatingMetrics

#: Width when stdout is not a terminal: without one, rich falls back to 80 columns and wraps
#: every cell of a wide table in logs and CI output.
LOG_WIDTH = 140


def machine_description() -> str:
    """The machine a benchmark table names: the GPU where torch sees one, else cores, architecture
    and memory."""
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_name(0)
    except ImportError:
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()}-core {platform.machine()} CPU, {memory:.0f} GiB, no GPU"


def make_console(stderr: bool = False) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, width=None if stream.isatty() else LOG_WIDTH)


def fmt(value: float | None, spec: str = ".3f") -> str:
    """``value`` formatted, or ``-`` when it is missing or NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, spec)


def metrics_table(
    title: str,
    rows: dict[str, RatingMetrics],
    baselines: dict[str, dict[str, float]] | None = None,
    note: str = "",
) -> Table:
    """One row per predictor, then one per classical baseline (``{"mae", "rmse", "n"}``)."""
    table = Table(title=title)
    for column in ("predictor", "n", "mean reward", "MAE", "RMSE", "MAE parsed", "coverage", "format rate"):
        table.add_column(column, justify="left" if column == "predictor" else "right", no_wrap=True)
    for name, m in rows.items():
        table.add_row(
            name, str(m.n), fmt(m.mean_reward), fmt(m.mae), fmt(m.rmse), fmt(m.mae_parsed),
            fmt(m.coverage, ".1%"), fmt(m.format_rate, ".1%"),
        )
    for name, scores in (baselines or {}).items():
        table.add_row(
            f"{name} (baseline)", str(scores["n"]), "-", fmt(scores["mae"]), fmt(scores["rmse"]), "-", "100.0%", "-"
        )
    first = next(iter(rows.values()))
    table.caption = (
        f"scale {first.scale}; MAE/RMSE over all samples use the fallback ({first.fallback}) where no "
        "rating parsed" + (f"; {note}" if note else "")
    )
    return table
