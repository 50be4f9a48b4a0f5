"""Named dataset loaders. ``load_dataset(name, **kwargs)`` returns a prepared :class:`RatingDataset`,
memoized in-process so that many environments over one dataset share it (until a raw file it was
read from changes on disk)."""

from __future__ import annotations

import inspect
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from recgym.data.dataset import RatingDataset


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    loader: Callable[..., RatingDataset]
    scale_label: str
    needs: str
    """What the user must provide, in words (e.g. "data_dir with yelp_academic_dataset_review.json")."""
    options: Callable[..., RatingDataset] | None = None
    """Where the loader's ``**options`` go (their names are its keyword arguments), if it has them."""


DATASETS: dict[str, DatasetInfo] = {}
_LOADED: dict[str, RatingDataset] = {}


def register_dataset(name: str, loader: Callable[..., RatingDataset], scale_label: str, needs: str,
                     options: Callable[..., RatingDataset] | None = None) -> None:
    DATASETS[name] = DatasetInfo(name, loader, scale_label, needs, options)


def dataset_arguments(name: str) -> list[str]:
    """The keyword arguments dataset ``name``'s loader takes (its ``**options`` spelled out)."""
    info = DATASETS[name]
    names: list[str] = []
    for fn in (info.loader, info.options):
        if fn is None:
            continue
        params = inspect.signature(fn).parameters.values()
        names += [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
                  and p.name not in ("name", "source") and p.name not in names]
    return names


def environment_arguments(env_class: type) -> list[str]:
    """The keyword arguments an environment class takes itself (``split``, ``template``, ...), beside
    ``dataset``; it passes any other on to the dataset's loader."""
    return [p.name for p in inspect.signature(env_class.__init__).parameters.values()
            if p.kind is p.POSITIONAL_OR_KEYWORD and p.name not in ("self", "dataset")]


def check_arguments(name: str, kwargs: dict, owner: type | None = None) -> None:
    """A TypeError naming each argument neither dataset ``name``'s loader nor ``owner`` (an
    environment class that passes the rest on to the loader) takes, with the closest names."""
    import difflib

    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; registered: {', '.join(sorted(DATASETS))}")
    theirs = dataset_arguments(name)
    own = [] if owner is None else environment_arguments(owner)
    if unknown := sorted(set(kwargs) - set(theirs)):
        close = [m for k in unknown for m in difflib.get_close_matches(k, own + theirs, 1)]
        where = f"{owner.__name__} with dataset {name!r}" if owner else f"dataset {name!r}"
        raise TypeError(f"{where} takes no argument(s) {', '.join(unknown)}"
                        + (f" (did you mean {', '.join(close)}?)" if close else "")
                        + (f"; the environment's arguments: {', '.join(own)}" if own else "")
                        + f"; the dataset's: {', '.join(theirs)}")


def load_dataset(name: str, **kwargs) -> RatingDataset:
    check_arguments(name, kwargs)
    # the variables that say where a dataset's raw files and cache are: another value is another dataset
    where = {v: os.environ.get(v) for v in ("RECGYM_DATA_DIR", "RECGYM_CACHE")}
    key = name + json.dumps([kwargs, where], sort_keys=True, default=repr)
    if key not in _LOADED or _raw_files_changed(_LOADED[key]):
        _LOADED[key] = DATASETS[name].loader(**kwargs)
    return _LOADED[key]


def _raw_files_changed(dataset: RatingDataset) -> bool:
    """Whether a raw file that prepared ``dataset`` was read from is gone or has another size or
    modification time now (its preparation's manifest lists them), or the prepared folder is gone."""
    from recgym.data.store import MANIFEST

    folder = dataset.stats.get("cache_dir") if isinstance(dataset.stats, dict) else None
    if folder is None:  # built in memory (the synthetic worlds): no raw files
        return False
    try:
        files = json.loads((Path(folder) / MANIFEST).read_text())["files"]
        for f in files:
            st = os.stat(f["path"])
            if (st.st_size, st.st_mtime_ns) != (f["size"], f["mtime_ns"]):
                return True
    except (OSError, ValueError, KeyError, TypeError):
        return True
    return False
