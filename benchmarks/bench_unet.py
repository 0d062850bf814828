"""medbalance ``UNet`` against MONAI's ``UNet`` and ``BasicUNet`` at matched widths.

Workloads (2D, one input channel, two classes):

* ``train``: one optimisation step, forward + cross-entropy + backward + Adam.
* ``infer``: one forward pass in ``eval()`` under ``torch.inference_mode()``.

All three networks use BatchNorm and ReLU so that the comparison is about architecture and
implementation, not about configuration (MONAI's defaults are instance norm with PReLU /
LeakyReLU). ``monai.networks.nets.UNet`` gets ``channels=(b, 2b, 4b, 8b, 16b)``,
``strides=(2, 2, 2, 2)`` and ``num_res_units=2`` (the spleen-segmentation tutorial's
setting): two convolutions per encoder level like the classic double conv, where the
default 0 gives a single strided conv per level. It is a different design all the same:
the first conv already has stride 2 (nothing but the output layers runs at full
resolution), the 16b level stays at the 8b level's size and the decoder has one conv per
level, so it needs about a quarter of the FLOPs. ``BasicUNet`` is MONAI's classic U-Net;
``features=(b, 2b, 4b, 8b, 16b, b)`` matches ours except that its last up step keeps
``2b`` channels after the transposed conv (ours halves to ``b``).
"""

from __future__ import annotations

from collections.abc import Callable

import monai
import torch
import torch.nn.functional as F
from monai.networks.nets import BasicUNet
from monai.networks.nets import UNet as MonaiUNet
from torch import nn

from benchmarks.harness import Case, Group, Row, forward_gflops, run_groups
from medbalance.nets import UNet

__all__ = ["build_models", "run"]


def build_models(base: int) -> dict[str, nn.Module]:
    """The compared networks at width ``base``, medbalance first."""
    widths = tuple(base * 2**i for i in range(5))
    return {
        "medbalance.UNet": UNet(1, 2, base_channels=base),
        "monai.UNet(res=2)": MonaiUNet(
            spatial_dims=2,
            in_channels=1,
            out_channels=2,
            channels=widths,
            strides=(2, 2, 2, 2),
            num_res_units=2,
            norm="batch",
            act="relu",
        ),
        "monai.BasicUNet": BasicUNet(
            spatial_dims=2,
            in_channels=1,
            out_channels=2,
            features=(*widths, base),
            norm="batch",
            act="relu",
        ),
    }


def _train_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        optimizer.step()

    return step


def _inference(model: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    model.eval()

    def forward() -> None:
        with torch.inference_mode():
            model(x)

    return forward


def run(*, quick: bool = False, device: str = "cpu", channels_last: bool = False) -> list[Row]:
    """Time train steps and inference for widths 16 and 32 (``quick``: tiny run, width 16).

    ``channels_last`` converts every model and the input to that memory format.
    """
    batch, side, bases = (2, 64, (16,)) if quick else (8, 128, (16, 32))
    warmup, repeats = (1, 2) if quick else (2, 7)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 1, side, side, generator=generator).to(device)
    y = torch.randint(0, 2, (batch, side, side), generator=generator).to(device)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    x = x.contiguous(memory_format=memory_format)
    groups = []
    for base in bases:
        for mode in ("train", "infer"):
            torch.manual_seed(0)
            cases = []
            for impl, model in build_models(base).items():
                model.to(device, memory_format=memory_format)
                gflops = forward_gflops(model, x[:1])
                fn = _train_step(model, x, y) if mode == "train" else _inference(model, x)
                params = sum(p.numel() for p in model.parameters())
                cases.append(Case(impl=impl, fn=fn, items=batch, params=params, gflops=gflops))
            name = f"unet b{base} {mode} {batch}x1x{side}x{side}"
            extra = {"device": device, "channels_last": channels_last, "monai": monai.__version__}
            groups.append(Group(name=name, cases=cases, extra=extra))
    return run_groups(groups, warmup=warmup, repeats=repeats)
