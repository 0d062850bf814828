"""Float32 subnormals (0 < |x| < 1.18e-38) on the CPU: kept out of weights and arithmetic.

Weight decay drives weights that get no gradient below float32's normal range, and x86
arithmetic over subnormals takes a slow microcode path: late in a long CPU run 29 % of a CoNSeP
U-Net's weights were subnormal and every step was 3-4x slower (benchmarks/RESULTS.md,
"Denormal weights"). A subnormal contributes less than 1e-38 to any activation, so setting it
to 0 changes nothing above float32's normal range.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch

__all__ = ["flush_denormals", "zero_subnormals_"]

_TINY_SQUARE_ROOT = 1e-160  # its square, 1e-320, is a subnormal double (a variable: not folded at compile time)


@contextmanager
def flush_denormals() -> Iterator[None]:
    """Subnormals read and written as 0 on this thread while the block runs, the caller's setting restored.

    The engine wraps each training step (forward, loss, backward, optimiser step) and each
    network forward of inference (:func:`~medbalance.engine.engine.infer_logits`), and nothing
    else: the flag (the CPU's FTZ / DAZ bits, ``torch.set_flush_denormal``) changes every float
    computation of the thread, and third-party code is not written for it. Under it, scipy
    1.17's ``KDTree`` overflowed the stack (a segfault) building the tree of some CoNSeP nuclei
    borders in the per-case surface metrics, and hypothesis's float strategies broke. Inference
    needs it even without subnormal weights: a late checkpoint with none, but most weights below
    1e-30, validated 8x faster under it (probably subnormal products in the BatchNorm-folded
    inference copy). The threads of an intra-op pool keep their own setting:
    :func:`zero_subnormals_` covers what they write.
    """
    was_on = _TINY_SQUARE_ROOT * _TINY_SQUARE_ROOT == 0.0  # a Python float product obeys the same CPU flag
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(was_on)


@torch.no_grad()
def zero_subnormals_(tensors: Iterable[torch.Tensor]) -> None:
    """Set every float32 subnormal entry of the CPU ``tensors`` to 0, in place.

    Example:
        >>> t = torch.tensor([1e-40, 1.0, -1e-39, 0.5])
        >>> zero_subnormals_([t]); t.tolist()
        [0.0, 1.0, 0.0, 0.5]
    """
    tiny = torch.finfo(torch.float32).tiny
    for t in tensors:
        if t.dtype == torch.float32 and t.device.type == "cpu":
            t.masked_fill_(t.abs() < tiny, 0.0)  # zeros stay zeros
