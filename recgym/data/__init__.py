"""The data layer: readers, the synthetic world, preparation, prepared datasets."""

from recgym.data import synthetic as _synthetic  # noqa: F401  (registers the "synthetic" dataset)
from recgym.data.dataset import PrepareConfig, RatingDataset
from recgym.data.registry import DATASETS, load_dataset, register_dataset
from recgym.data.schema import HistoryEntry, RatingContext, RatingScale

__all__ = [
    "DATASETS", "HistoryEntry", "PrepareConfig", "RatingContext", "RatingDataset", "RatingScale",
    "load_dataset", "register_dataset",
]
