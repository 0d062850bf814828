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


@contextmanager
def flush_denormals() -> Iterator[None]:
    """Subnormals read and written as 0 on this thread while the block runs, the caller's setting restored.

    The engine wraps each training step (forward, loss, backward, optimiser step) and each
    network forward of inference (:func:`~medbalance.engine.engine.infer_logits`), and nothing
    else: the flag (the CPU's FTZ / DAZ bits, ``torch.set_flush_denormal``) changes every float
    computation of the thread, and third-party code is not written for it. Under it, scipy
    1.17's ``KDTree`` overflowed the stack (a segfault) building the tree of some CoNSeP nuclei
    borders in the per-case surface metrics, and hypothesis's float strategies broke. Inference
    needs it even without subnormal weights: late in a run most dead weights sit just above the
    normal range (|w| < 1e-30), and their products with activations are subnormal. The threads
    of an intra-op pool keep their own setting: :func:`zero_subnormals_` covers what they write.
    """
    was_on = (torch.tensor([1e-20]) * torch.tensor([1e-20])).item() == 0.0  # 1e-40 is subnormal
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(was_on)


@torch.no_grad()
def zero_subnormals_(tensors: Iterable[torch.Tensor]) -> int:
    """Set every float32 subnormal entry of ``tensors`` to 0, in place; returns how many were.

    Example:
        >>> t = torch.tensor([1e-40, 1.0, -1e-39, 0.5])
        >>> zero_subnormals_([t]), t.tolist()
        (2, [0.0, 1.0, 0.0, 0.5])
    """
    tiny = torch.finfo(torch.float32).tiny
    count = 0
    for t in tensors:
        if t.dtype != torch.float32 or t.device.type != "cpu":
            continue
        sub = (t != 0) & (t.abs() < tiny)
        n = int(sub.sum())
        if n:
            t.masked_fill_(sub, 0.0)
            count += n
    return count
