"""The one rich console factory: tables keep one line per row in logs and CI output, where there
is no terminal to measure (rich would fall back to 80 columns and wrap every cell)."""

from __future__ import annotations

import sys

from rich.console import Console

LOG_WIDTH = 140


def make_console(stderr: bool = False) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, width=None if stream.isatty() else LOG_WIDTH)
