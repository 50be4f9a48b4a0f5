"""recgym's on-disk cache: ``$RECGYM_CACHE`` (default ``~/.cache/recgym``).

Every layer that keeps files between runs (prepared datasets, converted model checkpoints)
puts them under :func:`cache_dir`, so one variable moves or clears them all.
"""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "RECGYM_CACHE"


def cache_dir(*parts: str, create: bool = True) -> Path:
    """``$RECGYM_CACHE/<parts...>`` (default root ``~/.cache/recgym``), created unless ``create=False``."""
    root = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "recgym").expanduser()
    path = root.joinpath(*parts)
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path
