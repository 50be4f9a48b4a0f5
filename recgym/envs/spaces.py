"""A text space that holds any unicode string up to a length.

It flattens (``gymnasium.spaces.utils.flatten``) to an ``int32`` array of ``max_length`` code
points padded with -1, which is also how ``AsyncVectorEnv`` passes observations through shared
memory: ``Text``'s own encoding indexes a fixed character set and cannot hold ``"\\n"`` or ``"é"``.
"""

from __future__ import annotations

import multiprocessing as mp
import string
from collections.abc import Sequence
from types import ModuleType

import numpy as np
from gymnasium.spaces import Box, Text
from gymnasium.spaces.utils import flatten, flatten_space, unflatten
from gymnasium.vector.utils.shared_memory import create_shared_memory, read_from_shared_memory

_SAMPLE_CHARSET = string.ascii_letters + string.digits + string.punctuation + " "
_PAD = -1
_MAX_CODE_POINT = 0x10FFFF


class UnicodeText(Text):
    """Any ``str`` of ``min_length..max_length`` characters. ``sample()`` draws printable ASCII."""

    def __init__(self, max_length: int, *, min_length: int = 0, seed=None) -> None:
        super().__init__(max_length, min_length=min_length, charset=_SAMPLE_CHARSET, seed=seed)

    def contains(self, x) -> bool:
        return isinstance(x, str) and self.min_length <= len(x) <= self.max_length

    def __repr__(self) -> str:
        return f"UnicodeText({self.min_length}, {self.max_length})"

    def __eq__(self, other) -> bool:
        return (
            isinstance(other, UnicodeText)
            and self.min_length == other.min_length
            and self.max_length == other.max_length
        )


@flatten.register(UnicodeText)
def _flatten_unicode_text(space: UnicodeText, x: str) -> np.ndarray:
    if not isinstance(x, str) or len(x) > space.max_length:
        raise ValueError(f"{space} holds a str of at most {space.max_length} characters, got {type(x).__name__}"
                         + (f" of {len(x)}" if isinstance(x, str) else ""))
    codes = np.full(space.max_length, _PAD, dtype=np.int32)
    # surrogatepass: a lone surrogate is a str's character too
    codes[: len(x)] = np.frombuffer(x.encode("utf-32-le", "surrogatepass"), dtype="<u4")
    return codes


@unflatten.register(UnicodeText)
def _unflatten_unicode_text(space: UnicodeText, x: np.ndarray) -> str:
    codes = np.asarray(x)
    return codes[codes != _PAD].astype("<u4").tobytes().decode("utf-32-le", "surrogatepass")


@flatten_space.register(UnicodeText)
def _flatten_space_unicode_text(space: UnicodeText) -> Box:
    return Box(low=_PAD, high=_MAX_CODE_POINT, shape=(space.max_length,), dtype=np.int32)


class SharedTexts(Sequence):
    """The strings in an ``AsyncVectorEnv``'s shared memory, decoded when read (``AsyncVectorEnv``
    reads its shared memory once, when it is made, and a tuple of ``str`` would keep those values).
    By default it returns ``copy.deepcopy`` of this, a tuple of ``str``; with ``copy=False`` this
    view, which the next step overwrites."""

    def __init__(self, space: UnicodeText, rows: np.ndarray) -> None:
        self.space, self.rows = space, rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return tuple(_unflatten_unicode_text(self.space, row) for row in self.rows[i])
        return _unflatten_unicode_text(self.space, self.rows[i])

    def __deepcopy__(self, memo) -> tuple[str, ...]:
        return tuple(self)

    def __eq__(self, other) -> bool:
        return tuple(self) == (tuple(other) if isinstance(other, SharedTexts) else other)

    __hash__ = None

    def __repr__(self) -> str:
        return f"SharedTexts{tuple(self)!r}"


@create_shared_memory.register(UnicodeText)
def _create_unicode_text_shared_memory(space: UnicodeText, n: int = 1, ctx: ModuleType = mp):
    memory = ctx.Array(np.dtype(np.int32).char, n * space.max_length)
    np.frombuffer(memory.get_obj(), dtype=np.int32).fill(_PAD)
    return memory


@read_from_shared_memory.register(UnicodeText)
def _read_unicode_text_from_shared_memory(space: UnicodeText, shared_memory, n: int = 1) -> SharedTexts:
    return SharedTexts(space, np.frombuffer(shared_memory.get_obj(), dtype=np.int32).reshape((n, space.max_length)))
