"""The memory layout a network trains and infers in (``channels_last`` on CPU where measured faster)."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["memory_format"]


def memory_format(setting: bool | str, model: nn.Module, device: torch.device) -> torch.memory_format | None:
    """The memory layout to train ``model`` in: ``torch.channels_last`` or ``None`` (as is).

    ``setting`` is the config's ``channels_last``: ``True`` / ``False``, or ``"auto"``, which
    follows the network's ``prefers_channels_last`` on CPU, where it was measured, and keeps the
    default layout on other devices until it is measured there. 3D networks (any ``Conv3d``)
    keep their layout: ``channels_last_3d`` is not measured.
    """
    if any(isinstance(m, nn.Conv3d) for m in model.modules()):
        return None
    if setting == "auto":
        setting = device.type == "cpu" and getattr(model, "prefers_channels_last", False)
    return torch.channels_last if setting else None
