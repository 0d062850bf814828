"""Input pipeline vs compute: can the data keep a U-Net busy? (issue 10 item 1)

Usage::

    python -m benchmarks.bench_pipeline [--quick] [--threads N] [--n 64] [--native 256] [--side 128]
    python -m benchmarks --only pipeline

A folder of ``--n`` PNG image / mask pairs (intra-class phantoms rendered at ``--native``
pixels) is written to a temporary directory and read at ``data.size = --side``. Three groups,
each timed round-robin by :func:`benchmarks.harness.run_groups`:

* **prepare**: getting the decoded, resized dataset at run start -- a hit of the
  :mod:`medbalance.data.cache` (hash the file list, memory-map two ``.npy``) vs
  :func:`medbalance.data.folder.read_folder` (decode and resize every file, as without cache).
* **loader**: one epoch of the engine's training loader (shuffled batches of
  :func:`medbalance.data.samplers.uniform`, batch ``--batch``) over the memory-mapped cached
  dataset and over the in-memory one, with ``num_workers`` 0, 1 and 2 (persistent workers, as
  in the engine; ``pin_memory`` only matters with a GPU, none here): data-only images/s.
* **augment**: augmenting one batch, with the engine's batched tensor transforms
  (:class:`medbalance.data.augment.Augment`: flips and 90-degree turns; rotation and zoom on
  every sample; the four intensity transforms on every sample; and an nnU-Net-like mix with
  its probabilities) side by side with the per-sample MONAI dictionary transforms a user
  would otherwise run in the DataLoader workers (``RandFlipd``, ``RandRotate90d``,
  ``RandAffined``, ``RandScaleIntensityd`` / ``RandAdjustContrastd`` /
  ``RandGaussianNoised``...) at the same strengths.
* **train**: the training step the data feeds -- ``UNet(base_channels=8)`` (the demo config's
  width) and 16, forward + Dice-CE + backward + Adam on the same batch shape.

The summary lines divide the best data-only images/s by the train-step images/s (goal >= 3),
without and with the nnU-Net-like augmentation (which the engine runs in the training
process, so its time adds to the loader's).
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from benchmarks.harness import Case, Group, Row, report, run_groups, start
from medbalance.data.augment import Augment
from medbalance.data.cache import cached_dataset
from medbalance.data.datasets import ArrayDataset
from medbalance.data.folder import read_folder
from medbalance.data.phantoms import intraclass_phantoms
from medbalance.data.samplers import uniform
from medbalance.losses import build_loss
from medbalance.nets import UNet

__all__ = ["run", "main", "data_compute_ratio", "write_png_folder"]

log = logging.getLogger("benchmarks")


def write_png_folder(root: Path, n: int, native: int) -> Path:
    """``root/images/*.png`` (8-bit grey) and ``root/masks/*.png`` from intra-class phantoms."""
    phantoms = intraclass_phantoms(n, size=native, seed=0)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(n):
        Image.fromarray((255 * phantoms.images[i, 0]).round().astype(np.uint8)).save(root / "images" / f"{i:04d}.png")
        Image.fromarray(phantoms.target[i].astype(np.uint8)).save(root / "masks" / f"{i:04d}.png")
    return root


def _epoch_case(label: str, data: ArrayDataset, *, batch: int, workers: int) -> Case:
    generator = torch.Generator().manual_seed(0)
    loader = DataLoader(
        data, batch_sampler=uniform(data, batch, generator), num_workers=workers, persistent_workers=workers > 0
    )

    def epoch() -> None:
        for _ in loader:
            pass

    return Case(label, epoch, len(data), 0)


def _train_case(base: int, *, batch: int, side: int) -> Case:
    torch.manual_seed(0)
    model = UNet(1, 2, base_channels=base)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = build_loss("dice_ce", binary=False)
    x = torch.rand(batch, 1, side, side)
    y = (torch.rand(batch, side, side) > 0.8).long()

    def step() -> None:
        loss_fn(model(x), y).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return Case(f"UNet(base_channels={base}) train step", step, batch, sum(p.numel() for p in model.parameters()))


AUGMENTS = {
    "flip + rot90": Augment(flip=True, rot90=True),
    "rotate 30 + zoom 0.2, p=1": Augment(rotate=30, scale=0.2, affine_p=1.0),
    "intensity x4, p=1": Augment(brightness=0.1, contrast=0.25, gamma=0.3, noise=0.05, intensity_p=1.0),
    "nnU-Net-like mix": Augment(
        flip=True, rotate=30, scale=0.2, affine_p=0.2, brightness=0.1, contrast=0.25, gamma=0.3, noise=0.05
    ),
}


def _monai_transforms(name: str):
    """MONAI's per-sample dictionary transforms at the strengths of ``AUGMENTS[name]``."""
    from monai import transforms as mt

    both = ["image", "label"]

    def flips() -> list:
        return [mt.RandFlipd(both, prob=0.5, spatial_axis=axis) for axis in (0, 1)]

    def affine(prob: float):
        return mt.RandAffined(
            both, prob=prob, rotate_range=np.pi / 6, scale_range=0.2, mode=("bilinear", "nearest"), padding_mode="zeros"
        )

    def intensity(prob: float) -> list:
        return [
            mt.RandShiftIntensityd("image", offsets=0.1, prob=prob),
            mt.RandScaleIntensityFixedMeand("image", factors=0.25, prob=prob),
            mt.RandAdjustContrastd("image", gamma=(0.7, 1.3), prob=prob),
            mt.RandGaussianNoised("image", std=0.05, prob=prob),
        ]

    chains = {
        "flip + rot90": lambda: [*flips(), mt.RandRotate90d(both, prob=0.75, max_k=3)],
        "rotate 30 + zoom 0.2, p=1": lambda: [affine(1.0)],
        "intensity x4, p=1": lambda: intensity(1.0),
        "nnU-Net-like mix": lambda: [*flips(), affine(0.2), *intensity(0.15)],
    }
    return mt.Compose(chains[name]()).set_random_state(0)


def _augment_cases(name: str, *, batch: int, side: int) -> list[Case]:
    x = torch.rand(batch, 1, side, side)
    y = (torch.rand(batch, side, side) > 0.8).long()
    aug, generator = AUGMENTS[name], torch.Generator().manual_seed(0)
    cases = [Case("medbalance.Augment (batched)", lambda: aug({"image": x, "target": y}, generator), batch, 0)]
    try:
        compose = _monai_transforms(name)
    except ImportError:  # MONAI is a test-only dependency
        return cases
    samples = [{"image": x[i], "label": y[i][None]} for i in range(batch)]

    def monai_batch() -> None:
        for sample in samples:
            compose(sample)

    return cases + [Case("monai transforms (per sample)", monai_batch, batch, 0)]


def run(
    *,
    quick: bool = False,
    device: str = "cpu",
    channels_last: bool = False,
    n: int = 64,
    native: int = 256,
    side: int = 128,
    batch: int = 8,
) -> list[Row]:
    """Time the prepare / loader / train groups on a temporary PNG folder (CPU only)."""
    del device, channels_last  # the data side is CPU work; the train step is the CPU reference
    if quick:
        n, native, side = 16, 64, 32
    warmup, repeats = (1, 3) if quick else (1, 7)
    with tempfile.TemporaryDirectory(prefix="medbalance-bench-") as tmp:
        root = write_png_folder(Path(tmp) / "data", n, native)
        settings = {"reader": "folder", "task": "segmentation", "channels": 1, "size": side}

        def decode() -> ArrayDataset:
            return read_folder(root, task="segmentation", size=side)

        def from_cache() -> ArrayDataset:
            return cached_dataset(root, settings, decode, cache_dir=Path(tmp) / "cache")

        prepare = Group(
            f"prepare {n} PNG {native}->{side}",
            [Case("cache hit (mmap)", from_cache, n, 0), Case("decode + resize (no cache)", decode, n, 0)],
        )
        mapped, in_memory = from_cache(), decode()
        loader = Group(
            f"loader epoch {n}x1x{side}x{side} batch {batch}",
            [
                _epoch_case(f"{kind} workers={w}", data, batch=batch, workers=w)
                for w in (0, 1, 2)
                for kind, data in (("cached mmap", mapped), ("in memory", in_memory))
            ],
        )
        augment = [
            Group(f"augment {name} {batch}x1x{side}x{side}", _augment_cases(name, batch=batch, side=side))
            for name in AUGMENTS
        ]
        train = Group(f"train {batch}x1x{side}x{side}", [_train_case(b, batch=batch, side=side) for b in (8, 16)])
        return run_groups([prepare, loader, *augment], warmup=warmup, repeats=repeats) + run_groups(
            [train], warmup=warmup + 1, repeats=repeats
        )


def data_compute_ratio(rows: list[Row]) -> dict[str, float]:
    """Best data-only images/s (loader group) over each train case's images/s, without and
    with the nnU-Net-like batch augmentation (its time adds to the loader's)."""
    data = max(r.images_per_s for r in rows if r.name.startswith("loader"))
    mix = [r.images_per_s for r in rows if r.name.startswith("augment nnU-Net") and r.impl.startswith("medbalance")]
    ratios = {}
    for r in rows:
        if r.name.startswith("train"):
            ratios[r.impl] = data / r.images_per_s
            if mix:
                ratios[f"{r.impl}, with augmentation"] = 1 / (1 / data + 1 / mix[0]) / r.images_per_s
    return ratios


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_pipeline", description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--native", type=int, default=256)
    parser.add_argument("--side", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args(argv)
    start(args.threads)
    rows = run(quick=args.quick, n=args.n, native=args.native, side=args.side, batch=args.batch)
    sys.stdout.write(report(rows) + "\n")
    for impl, ratio in data_compute_ratio(rows).items():
        sys.stdout.write(f"data-only / compute images/s, {impl}: {ratio:.1f}x\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
