"""The ``recgym`` sub-commands, one module each; ``recgym.cli`` assembles and runs them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


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
