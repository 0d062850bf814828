"""Keep freed memory in the C heap so big activation buffers are reused, not page-faulted back.

glibc's ``malloc`` serves allocations above its mmap threshold with fresh ``mmap`` calls and
unmaps them on ``free``. A training step allocates and frees the same large activation
tensors every step, so each step re-maps and page-faults them in again: a third or more of the
CPU time of a U-Net step went to the kernel on the 2-core machine we measured. Disabling
``mmap`` for malloc and raising the trim threshold keeps freed blocks in the heap for the next
step (measured in ``benchmarks/RESULTS.md``: faster steps for somewhat higher peak RSS).

This changes process-wide allocator settings, so it is applied by the command-line entry point
only (``MEDBALANCE_MALLOC=default`` turns it off); library users may call :func:`tune_malloc`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

__all__ = ["ENV_VAR", "tune_malloc"]

log = logging.getLogger(__name__)

#: Environment variable: ``default`` leaves glibc malloc alone, anything else (or unset) tunes it.
ENV_VAR = "MEDBALANCE_MALLOC"

# mallopt parameter numbers from glibc's <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4

_applied = False


def tune_malloc(*, enable: bool | None = None) -> bool:
    """Tell glibc malloc to keep freed memory for reuse (no ``mmap`` per allocation, no trimming).

    Args:
        enable: ``None`` reads :data:`ENV_VAR` (tuned unless it is ``"default"``).

    Returns:
        ``True`` if the settings are in effect (now or from an earlier call); ``False`` if turned
        off or the C library is not glibc (macOS, Windows, musl), where nothing is changed.

    Example:
        >>> isinstance(tune_malloc(enable=False), bool)
        True
    """
    global _applied
    if enable is None:
        enable = os.environ.get(ENV_VAR, "").strip().lower() != "default"
    if not enable:
        return _applied
    if _applied:
        return True
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        log.debug("no glibc mallopt here; allocator left as is")
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # mallopt returns 1 on success; 2**31 - 1 bytes is the largest trim threshold an int can say
    ok = mallopt(_M_MMAP_MAX, 0) == 1 and mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) == 1
    _applied = ok
    log.debug("glibc malloc tuned for reuse: %s", ok)
    return ok
