"""Named dataset loaders. ``load_dataset(name, **kwargs)`` returns a prepared :class:`RatingDataset`,
memoized in-process so that many environments over one dataset share it."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from recgym.data.dataset import RatingDataset


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    loader: Callable[..., RatingDataset]
    scale_label: str
    needs: str
    """What the user must provide, in words (e.g. "data_dir with yelp_academic_dataset_review.json")."""


DATASETS: dict[str, DatasetInfo] = {}
_LOADED: dict[str, RatingDataset] = {}


def register_dataset(name: str, loader: Callable[..., RatingDataset], scale_label: str, needs: str) -> None:
    DATASETS[name] = DatasetInfo(name, loader, scale_label, needs)


def load_dataset(name: str, **kwargs) -> RatingDataset:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; registered: {', '.join(sorted(DATASETS))}")
    key = name + json.dumps(kwargs, sort_keys=True, default=repr)
    if key not in _LOADED:
        _LOADED[key] = DATASETS[name].loader(**kwargs)
    return _LOADED[key]
