"""Detecting a collapsing run at its evaluations.

GRPO on a small model can lose the answer format within a few steps (a long run's greedy format
once fell from 97% to 51%) or collapse to one rating for everyone (prediction spread 0.00). At
every evaluation :class:`CollapseGuard` compares the greedy format rate with the best this run has
shown and the spread of the predictions with a floor: the spread of all of them (fallbacks
included) and, where at least :attr:`CollapseGuard.min_parsed` parsed, of the parsed ones alone
(a few fallbacks spread one rating for nearly everyone past the floor). It decides from the
format and the spread only, never from the error, so a run it stops or restores is not selected
on the error it reports.
Ranking evaluations (``RecRank-*``) carry no rating spread; only their format rate is checked.
For ``restore``, :func:`save_healthy` and :func:`keep_healthy` keep the last healthy evaluation's
weights, with their step, whole through a kill.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ACTIONS = ("off", "warn", "stop", "restore")


@dataclass
class CollapseGuard:
    """``check(record)`` on each evaluation record (``eval/*`` keys) returns why the run is
    collapsing, or None; the trainer then acts as ``action`` says."""

    action: str = "warn"
    format_drop: float = 0.25
    """A collapse: the greedy format rate at least this far below the best earlier evaluation's."""
    min_prediction_std: float = 0.05
    """A collapse: the predictions' spread (fallbacks included), or the parsed ones' alone, below this."""
    min_parsed: int = 10
    """The parsed predictions' spread counts from this many parsed (``eval/coverage`` x ``eval/n``)."""
    best_format: float = -math.inf
    healthy_step: int | None = None
    """The step of the last evaluation that showed no collapse."""

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"collapse_action must be one of {', '.join(ACTIONS)}, got {self.action!r}")

    def check(self, record: dict[str, Any]) -> str | None:
        if self.action == "off":
            return None
        reasons = []
        fmt = record.get("eval/format_rate")
        if fmt is not None and math.isfinite(fmt):
            if self.best_format - fmt >= self.format_drop - 1e-9:  # 0.35 - 0.10 is 0.2499...
                reasons.append(f"greedy format rate {fmt:.0%}, down from {self.best_format:.0%}")
            self.best_format = max(self.best_format, fmt)
        spread = record.get("eval/prediction_std")
        if spread is not None and math.isfinite(spread) and spread < self.min_prediction_std:
            reasons.append(f"prediction spread {spread:.3f} < {self.min_prediction_std:g} (one rating for everyone)")
        elif self._parsed_spread_collapsed(record):
            reasons.append(f"parsed predictions' spread {record['eval/prediction_std_parsed']:.3f} < "
                           f"{self.min_prediction_std:g} (one rating for nearly everyone)")
        if reasons:
            return "; ".join(reasons)
        self.healthy_step = int(record["step"])
        return None

    def _parsed_spread_collapsed(self, record: dict[str, Any]) -> bool:
        spread, coverage, n = (record.get(f"eval/{k}") for k in ("prediction_std_parsed", "coverage", "n"))
        if None in (spread, coverage, n) or not (math.isfinite(spread) and math.isfinite(coverage)):
            return False
        return round(coverage * n) >= self.min_parsed and spread < self.min_prediction_std

    def state_dict(self) -> dict[str, Any]:
        return {"best_format": self.best_format, "healthy_step": self.healthy_step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best_format = float(state.get("best_format", -math.inf))
        self.healthy_step = state.get("healthy_step")


#: Where ``collapse_action: restore`` keeps the last healthy evaluation's weights, under ``output_dir``.
HEALTHY_DIR = "healthy_model"
#: Where :func:`save_healthy` completes a new copy, and keeps the old one while they swap.
HEALTHY_NEW, HEALTHY_OLD = ".new-healthy_model", ".old-healthy_model"


def healthy_step(directory: Path) -> int | None:
    """The step whose weights ``directory`` holds (its ``step.json``), or None."""
    try:
        return int(json.loads((directory / "step.json").read_text())["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def save_healthy(model: Any, output_dir: str | Path, step: int) -> None:
    """Write ``model``'s weights and ``step`` (``step.json``) to ``output_dir/healthy_model``. The new
    copy is completed beside the old one, which is renamed aside until the new one is in: a kill
    leaves one of them whole for :func:`keep_healthy`."""
    from recgym.cache import atomic_directory

    out = Path(output_dir)
    new, old, final = out / HEALTHY_NEW, out / HEALTHY_OLD, out / HEALTHY_DIR
    with atomic_directory(new, replace=True) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        (tmp / "step.json").write_text(json.dumps({"step": step}))
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.rename(final, old)
    os.rename(new, final)
    shutil.rmtree(old, ignore_errors=True)


def keep_healthy(output_dir: str | Path, step: int | None) -> bool:
    """Leave step ``step``'s weights from :func:`save_healthy` (in place or, after a kill, beside it)
    in ``output_dir/healthy_model`` and remove every other copy; False when there is none."""
    out = Path(output_dir)
    copies = [out / name for name in (HEALTHY_DIR, HEALTHY_NEW, HEALTHY_OLD)]
    found = next((p for p in copies if step is not None and healthy_step(p) == step), None)
    for path in copies:
        if path != found:
            shutil.rmtree(path, ignore_errors=True)
    if found is not None and found != copies[0]:
        os.rename(found, copies[0])
    return found is not None
