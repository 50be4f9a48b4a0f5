"""How a CPU learner's process keeps the memory it frees.

glibc hands every block above 32 MiB (the learner's logits, their gradients, a layer's activations
over a packed row) back to the kernel when it is freed, so the next step maps it anew and faults
each 4 KiB page in again: on a 2-core CPU about 200,000 page faults and a tenth of the learning
pass (``bench/train_step.py``, docs/benchmarks.md). :func:`keep_freed_memory` tells glibc to serve
large blocks from its heap and never to shrink it, so a step reuses the pages of the one before.
The process's resident memory then stays at its peak.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

#: glibc's ``mallopt`` parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4


@functools.cache
def keep_freed_memory() -> bool:
    """Make this process's glibc keep freed memory for reuse (once; the setting is process-wide and
    stays). Returns whether it applied: False where the C library is not glibc."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
