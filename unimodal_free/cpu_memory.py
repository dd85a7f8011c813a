"""Keep freed activation memory in the process (glibc malloc settings).

PyTorch's CPU tensors come straight from malloc. glibc serves blocks above
its mmap threshold with fresh mmaps and hands freed heap tops back to the
kernel, so a CPU training step page-faults much of its activation memory in
again every step: on the 2-core reference machine the ``aten::copy_`` that
fills a (2048, 768) addmm output with its bias took 3.5 ms, mostly
first-touch faults. Raising the mmap threshold to glibc's maximum (32 MB) and
the trim threshold to 1 GB lets freed blocks be reused instead (the default
train step ~10% faster there; both measured in docs/BENCHMARKS.md).

The settings only take full effect before the heap has grown, so entry
points call :func:`keep_freed_memory` before they import torch. Set
``UNIMODAL_FREE_MALLOC_DEFAULTS=1`` to keep glibc's own settings (the
"before" of a comparison). A no-op where libc is not glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

M_TRIM_THRESHOLD = -1  # glibc <malloc.h>
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_MAX = 32 << 20  # glibc's cap on 64-bit: 4 * 1024 * 1024 * sizeof(long)
TRIM_THRESHOLD = 1 << 30
OPT_OUT = "UNIMODAL_FREE_MALLOC_DEFAULTS"

applied = False  # whether this process runs with the settings (recorded by the bench)


def keep_freed_memory() -> bool:
    """Apply the settings to this process unless opted out; True when glibc accepted both."""
    global applied
    if os.environ.get(OPT_OUT, "") not in ("", "0"):
        return False
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    applied = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return applied
