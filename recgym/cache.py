"""recgym's on-disk cache: ``$RECGYM_CACHE`` (default ``~/.cache/recgym``).

Every layer that keeps files between runs (prepared datasets, converted model checkpoints)
puts them under :func:`cache_dir`, so one variable moves or clears them all.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

CACHE_ENV = "RECGYM_CACHE"


def cache_dir(*parts: str, create: bool = True) -> Path:
    """``$RECGYM_CACHE/<parts...>`` (default root ``~/.cache/recgym``), created unless ``create=False``."""
    root = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "recgym").expanduser()
    path = root.joinpath(*parts)
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


@contextmanager
def atomic_directory(final: Path, replace: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary directory beside ``final``; when the block succeeds, rename it to
    ``final``, so a reader never sees a half-written directory.

    ``replace=True`` overwrites an existing ``final``. Otherwise, if another process completed
    ``final`` first, theirs is kept. On any exception (a crash, Ctrl-C) the temporary directory is
    removed; ones left by processes killed too hard to clean up are removed on the next call.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_orphans(final.parent)
    tmp = final.parent / f".tmp-{final.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
        if replace and final.exists():
            shutil.rmtree(final)
        try:
            os.rename(tmp, final)
        except OSError:
            if replace or not final.is_dir():
                raise
            shutil.rmtree(tmp)  # another process finished the same directory first
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def remove_orphans(directory: Path) -> None:
    """Delete the temporary directories of :func:`atomic_directory` whose process no longer exists."""
    for tmp in directory.glob(".tmp-*"):
        try:
            pid = int(tmp.name.split("-")[-2])
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(tmp, ignore_errors=True)
        except (ValueError, IndexError, PermissionError):
            continue
