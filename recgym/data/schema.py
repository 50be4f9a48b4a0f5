"""The data layer's contract with everything downstream.

Every reader produces an :class:`InteractionTable` (one row per rating) and an
:class:`ItemTable`; preparation turns them into a :class:`~recgym.data.dataset.RatingDataset`,
which hands the task layer one :class:`RatingContext` per sample. Nothing downstream of
this module knows a raw file format.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field

import numpy as np

#: Columns of the interaction table, in the order readers emit them.
INTERACTION_COLUMNS = ("user_id", "item_id", "rating", "timestamp", "review_text", "review_title")
#: Columns of the item table. ``title``, ``categories`` and ``description`` are rendered in prompts.
ITEM_COLUMNS = ("item_id", "title", "categories", "description")

SPLITS = ("train", "valid", "test")


def check_types(obj: object) -> None:
    """A TypeError for a dataclass field of annotated type ``int``, ``float``, ``bool`` or ``str``
    whose value is not one (``"10"`` for an int, ``"no"`` for a bool, which Python would take as
    true, ``2.5`` or ``True`` for an int)."""
    import dataclasses
    import typing

    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        want, value = hints.get(f.name), getattr(obj, f.name)
        if want is bool:
            ok = isinstance(value, bool | np.bool_)
        elif want is int:
            ok = isinstance(value, int | np.integer) and not isinstance(value, bool)
        elif want is float:
            ok = isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)
        elif want is str:
            ok = isinstance(value, str)
        else:
            continue
        if not ok:
            raise TypeError(f"{f.name} must be {want.__name__}, got {value!r}")


def check_int(name: str, value: object, low: int) -> int:
    """``value`` as an int if it is a whole number >= ``low``; a ValueError or TypeError naming ``name`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"{name} must be an int >= {low}, got {value!r}")
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    return int(value)


def check_number(name: str, value: object, low: float | None = None) -> float:
    """``value`` as a float if it is a finite real number (not a bool) >= ``low``; a ValueError or
    TypeError naming ``name`` otherwise."""
    want = "a finite number" + ("" if low is None else f" >= {low:g}")
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be {want}, got {value!r}")
    if not math.isfinite(value) or low is not None and value < low:
        raise ValueError(f"{name} must be {want}, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class RatingScale:
    """The range and granularity of a dataset's ratings.

    ``max_error`` (the range) is the reward's divisor; predictions are clipped to
    ``[low, high]``. Results on different scales are never averaged together.
    """

    low: float = 1.0
    high: float = 5.0
    step: float = 1.0

    def __post_init__(self) -> None:
        for name in ("low", "high", "step"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"RatingScale.{name} must be a number, got {value!r}")
            if not math.isfinite(value):
                raise ValueError(f"RatingScale.{name} must be finite, got {value!r}")
        if not self.high > self.low:
            raise ValueError(f"RatingScale needs high > low, got low={self.low}, high={self.high}")
        if not self.step > 0:
            raise ValueError(f"RatingScale.step must be positive, got {self.step}")
        steps = (self.high - self.low) / self.step
        if abs(steps - round(steps)) > 1e-6:
            raise ValueError(f"RatingScale step {self.step:g} does not reach high={self.high:g} from low={self.low:g}: "
                             "high - low must be a whole number of steps")

    @classmethod
    def coerce(cls, value: RatingScale | tuple | list | None) -> RatingScale:
        """Accept a scale, ``(low, high)`` or ``(low, high, step)``."""
        if value is None:
            return cls()
        if isinstance(value, RatingScale):
            return value
        if isinstance(value, (tuple, list)) and len(value) in (2, 3):
            return cls(*value)
        if isinstance(value, dict):
            return cls(**value)
        raise TypeError(f"scale must be a RatingScale, (low, high) or (low, high, step); got {value!r}")

    @property
    def max_error(self) -> float:
        return float(self.high - self.low)

    @property
    def label(self) -> str:
        step = "" if self.step == 1 else f" step {self.step:g}"
        return f"{self.low:g}-{self.high:g}{step}"

    def clip(self, value: float) -> float:
        return float(min(self.high, max(self.low, value)))

    def contains(self, value: float) -> bool:
        return bool(np.isfinite(value)) and self.low <= value <= self.high

    def on_grid(self, values: np.ndarray) -> np.ndarray:
        """Per value: whether it is a rating of this scale (finite, in range, on the step grid, up
        to float32 rounding)."""
        values = np.asarray(values, dtype=np.float64)
        with np.errstate(invalid="ignore"):
            steps = np.rint((values - self.low) / self.step)
            nearest = self.low + self.step * steps
            return ((steps >= 0) & (steps <= round((self.high - self.low) / self.step))
                    & (np.abs(values - nearest) <= 1e-6 * np.maximum(1.0, np.abs(nearest))))

    def values(self) -> np.ndarray:
        """Every rating on the scale's grid, e.g. ``[1, 2, 3, 4, 5]``."""
        n = round((self.high - self.low) / self.step)
        return self.low + self.step * np.arange(n + 1, dtype=np.float64)


@dataclass(frozen=True)
class HistoryEntry:
    """One past rating shown in a prompt (always strictly before the target's time)."""

    item_title: str
    rating: float
    review: str
    timestamp: int


@dataclass(frozen=True)
class RatingContext:
    """Everything the prompt of one sample may show, plus the hidden target.

    ``user_history`` holds the user's last ratings of other items, oldest first;
    ``item_history`` the target item's last ratings by other users, oldest first.
    Averages are over *all* prior ratings (None when there are none).
    """

    user_id: str
    item_id: str
    item_title: str
    item_categories: str
    item_description: str
    user_history: tuple[HistoryEntry, ...]
    item_history: tuple[HistoryEntry, ...]
    user_avg: float | None
    item_avg: float | None
    user_num_prior: int
    item_num_prior: int
    target_rating: float
    timestamp: int
    extra: dict = field(default_factory=dict)
