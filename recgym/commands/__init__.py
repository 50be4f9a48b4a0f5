"""The ``recgym`` sub-commands, one module each; ``recgym.cli`` assembles and runs them."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class CommandError(Exception):
    """An expected failure a command recognises (a missing input, a bad config file or value):
    ``recgym`` prints its message as one line and exits with status 2."""


@contextmanager
def given_values(prefix: str = "") -> Iterator[None]:
    """Around code that checks what the user gave (options, a config file, dataset arguments):
    a ``ValueError`` or ``TypeError`` raised inside reports those values, so it becomes a
    :class:`CommandError` (with ``prefix`` before its message)."""
    try:
        yield
    except (ValueError, TypeError) as exc:
        raise CommandError(f"{prefix}{exc}") from exc


def check_output_path(path: str, field: str, folder: bool = False) -> None:
    """``path`` (a file, or with ``folder`` a directory) can be written: it is not the other kind of
    thing, and the nearest part of it that exists is a writable directory. Checked before anything
    slow, so that a run does not end on it."""
    out = Path(path)
    if out.exists() and out.is_dir() != folder:
        kind = "a folder, not a file" if out.is_dir() else "a file, not a folder"
        raise CommandError(f"{field} {out} is {kind}: choose another {field}")
    parent = out.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise CommandError(f"{field} {out}: {parent} is a file, not a folder: choose another {field}")
    try:  # a file made there, not os.access: root may "write" to /proc, which takes no file
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError as exc:
        raise CommandError(f"{field} {out}: {parent} is not writable ({exc.strerror}): choose another {field}") from exc
