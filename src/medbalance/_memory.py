"""Refuse an allocation the machine cannot hold, with the figure, before it is attempted.

A header or a config can ask for tens of GB (a MetaImage claiming 100000^3 voxels,
``data.size=300000``): numpy would raise a MemoryError traceback, or worse, the allocation
succeeds lazily and the kernel kills the process later.
"""

from __future__ import annotations

import os

from medbalance.errors import DataError

__all__ = ["available_bytes", "check_allocation", "check_data_memory", "format_bytes"]


def available_bytes() -> int:
    """Memory the machine can still give (``MemAvailable`` of ``/proc/meminfo``, else total RAM)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 1 << 62  # unknown: do not refuse


def format_bytes(n: float) -> str:
    """``1.5 GiB``-style size.

    Example:
        >>> format_bytes(3 * 2**30), format_bytes(512)
        ('3.0 GiB', '512 B')
    """
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def check_allocation(nbytes: int, *, what: str, error: type[Exception] = DataError) -> None:
    """Raise ``error`` naming ``what`` when ``nbytes`` exceeds the memory still available.

    Raises:
        DataError: (or ``error``) with both figures.
    """
    have = available_bytes()
    if nbytes > have:
        raise error(f"{what} needs about {format_bytes(nbytes)} of memory; this machine has {format_bytes(have)} free")


# Bytes per pixel a dataset holds in memory: float32 image channels, an int64 target and
# working copies while it is generated or resized.
_BYTES_PER_PIXEL = 32


def check_data_memory(data) -> None:
    """Refuse a ``data`` config (a :class:`medbalance.config.RunConfig` ``data`` section) whose arrays
    cannot fit, before generating or reading them.

    Generated phantoms are counted in full; a dataset read from files is checked for one image
    at ``data.size`` (its file count is only known once listed).

    Raises:
        ConfigError: naming ``data.size`` and both figures.
    """
    from medbalance.errors import ConfigError

    size = getattr(data, "size", None)
    if not size:
        return
    count = 1
    if data.kind in ("intraclass_phantom", "nuclei_phantom"):
        count = data.n_train + data.n_val + data.n_test
    elif data.kind == "longtail_phantom":
        count = data.num_classes * (data.n_max + data.n_val_per_class + data.n_test_per_class)
    what = f"data.size={size} ({count} image(s) of {size} x {size} px)"
    check_allocation(count * size * size * _BYTES_PER_PIXEL, what=what, error=ConfigError)
