"""Old import paths of modules that moved: the old name becomes the new module itself."""

from __future__ import annotations

import importlib
import sys
import warnings


def alias(old: str, new: str) -> None:
    """Make ``import old`` give module ``new`` (the same object: patches of one reach the other),
    with a DeprecationWarning that names the new path."""
    warnings.warn(f"{old} moved to {new}; import it from there", DeprecationWarning, stacklevel=3)
    sys.modules[old] = importlib.import_module(new)
