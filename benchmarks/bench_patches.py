"""Patch sampling: :class:`medbalance.data.patches.PatchDataset` vs MONAI ``RandCropByLabelClassesd``,
the data wait of a U-Net training step, and the class coverage of the ``rare_class`` powers.

Usage::

    python -m benchmarks patches [--quick] [--threads N] [--repeats 7] [--steps 40] [--skip-speed]
        [--skip-wait] [--skip-coverage] [--batches 300] [--floor]
    python -m benchmarks --only patches          # the speed groups only

**speed** (round-robin by :func:`benchmarks.harness.run_groups`): one call turns the same stored
arrays into one batch of ``items`` patches as the training step consumes it, a float32 image
``(items, C, *patch)`` and an int64 target ``(items, *patch)`` -- 20 DRIVE images
(3 x 584 x 565 uint8, vessels ~12% of the field of view; read from ``../shared/data/drive``, or
synthetic arrays of the same shape and fraction when absent) with patches 64 x 64 and 128 x 128,
16 per call; and 4 volumes 1 x 128^3 int16 with a ball of ~12% foreground, patches 64^3, 4 per
call. medbalance: the default ``foreground`` sampler (fraction 0.33), locations computed once at
construction; the batch cut at once as the engine's loader does (``PatchDataset.batch``: float32
image, target in the smallest label dtype, here uint8), then the target widened to int64 by the
engine's ``widen_target`` (one cast per batch, paid in the timing); and, as a second medbalance
row, its items one by one collated by ``default_collate`` (what a plain DataLoader does). MONAI:
the crops (tensors in the stored dtypes) stacked, then one ``.float()`` of the image batch and one
``.long()`` of the label batch (the cheapest order for it: one cast per batch, not per patch).
MONAI, configured as closely as it allows: ``ratios=[0.67, 0.33]`` (a patch is centred on a vessel
voxel with probability 0.33, per patch, instead of exactly 5 of 16 per batch; the other patches
are centred on a background voxel instead of a uniform position), a case drawn uniformly per call,
and four ways of running it:

* ``indices per call``: ``RandCropByLabelClassesd`` alone (it scans the label on every call);
* ``cached indices``: ``ClassesToIndicesd(max_samples_per_class=10000)`` run once per case
  beforehand (as a ``CacheDataset`` would), passed through ``indices_key``;
* ``cached indices, track_meta off``: the same with ``monai.data.set_track_meta(False)``
  (plain tensors, no metadata bookkeeping: MONAI's fastest setting);
* ``cached, 4 per case``: cached indices with ``num_samples=4`` (four patches per case per call,
  as MONAI tutorials do; fewer distinct cases per batch than the others).

The same calls are then timed in CPU time (``time.process_time``, round-robin, median), which
leaves out the time other processes hold the core on a shared machine.

**wait**: a DataLoader with 1 worker, set up as the engine sets up a patch stream (``Numbered``,
``StreamBatches``, ``batch_size=None``: one ``PatchDataset.batch`` per step), feeds ``UNet(3, 1,
base_channels=16)`` (Dice + CE, Adam, batch 16 of 64 x 64 DRIVE patches, default sampler;
channels_last as the engine's CPU default) for ``--steps`` steps; the time the loop waits for the
next batch is reported as a fraction of the step (goal <= 10%; the int64 widening of the target is
in the step), with 0 workers (patches drawn in the training process) for comparison.

**floor** (``--floor``, 3D only): where the time of one 3D call goes and what memory traffic alone
costs on this machine, every row timed in CPU time round-robin with the others (so caches are as
cold as in the speed groups): ours and its parts (plans, the target left in uint8, the target cut
straight into int64), MONAI's fastest setting with and without the label widening, MONAI's bytes
alone (the same ``torch.stack`` + ``.float()`` / ``.long()`` on views, none of its bookkeeping),
the widening alone, and two bandwidth probes (writing an 8 MiB int64 array, copying 64 MiB).

**coverage**: for ``rare_class`` at powers 0, 0.25, 0.5, 0.75, 1 (and ``uniform`` /
``foreground`` for reference), batches of 16 patches of 64 x 64 from the CoNSeP train tiles
(``../shared/data/consep_patches256``, 5 classes) and from 64 nuclei phantoms 256 x 256 (7
classes, CoNIC fractions): per class, the fraction of batches containing it and its share of the
patch pixels.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, default_collate

from benchmarks.harness import Case, Group, Row, interleaved_times, report, run_groups, start
from medbalance.data.patches import PatchDataset
from medbalance.data.phantoms import nuclei_phantoms
from medbalance.engine.engine import widen_target
from medbalance.engine.native import Numbered, StreamBatches
from medbalance.losses import build_loss
from medbalance.nets import UNet

__all__ = ["run", "main", "cpu_time_table", "floor_table", "data_wait", "coverage"]

log = logging.getLogger("benchmarks")

_DATA = Path(os.environ.get("MEDBALANCE_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
FRACTION = 0.33


def _drive(n: int) -> tuple[list[np.ndarray], list[np.ndarray], str]:
    """DRIVE training images ``(3, 584, 565)`` uint8 and vessel masks, or synthetic stand-ins."""
    root = _DATA / "drive" / "DRIVE" / "training"
    paths = sorted((root / "images").glob("*_training.tif"))[:n]
    if len(paths) == n:
        images = [np.ascontiguousarray(np.asarray(Image.open(p)).transpose(2, 0, 1)) for p in paths]
        masks = [
            (np.asarray(Image.open(root / "1st_manual" / f"{p.name.split('_')[0]}_manual1.gif")) > 0).astype(np.uint8)
            for p in paths
        ]
        return images, masks, "DRIVE training images"
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (3, 584, 565), dtype=np.uint8) for _ in range(n)]
    masks = [(rng.random((584, 565)) < 0.09).astype(np.uint8) for _ in range(n)]
    return images, masks, "synthetic DRIVE-shaped arrays"


def _volumes(n: int, side: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """``n`` int16 volumes ``(1, side, side, side)`` with a ball covering ~12% of the voxels."""
    rng = np.random.default_rng(1)
    grid = np.indices((side,) * 3, dtype=np.float32)
    radius = side * (0.12 * 3 / (4 * np.pi)) ** (1 / 3)
    images, masks = [], []
    for _ in range(n):
        centre = rng.uniform(radius, side - radius, 3)
        mask = (((grid - centre[:, None, None, None]) ** 2).sum(0) < radius**2).astype(np.uint8)
        masks.append(mask)
        images.append((rng.normal(0, 50, (1, *mask.shape)) + 300.0 * mask).astype(np.int16))
    return images, masks


def _dataset(images, masks, patch, items: int) -> PatchDataset:
    return PatchDataset(
        images,
        masks,
        patch_size=patch,
        num_classes=2,
        batch_size=items,
        samples_per_epoch=items,
        foreground_fraction=FRACTION,
    )


def _ours(images, masks, patch, items: int) -> Case:
    ds = _dataset(images, masks, patch, items)
    counter = iter(range(10**12))

    def draw() -> dict:
        return widen_target(ds.batch([next(counter) for _ in range(items)]))

    return Case("medbalance.PatchDataset", draw, items, 0)


def _ours_items(images, masks, patch, items: int) -> Case:
    """The former item path: one tensor pair per patch, then ``default_collate``."""
    ds = _dataset(images, masks, patch, items)
    counter = iter(range(10**12))

    def draw() -> dict:
        return widen_target(default_collate([ds[next(counter)] for _ in range(items)]))

    return Case("medbalance, items + default_collate", draw, items, 0)


def _plain(x) -> torch.Tensor:
    return x.as_tensor() if hasattr(x, "as_tensor") else torch.as_tensor(x)


def _monai(
    images, masks, patch, items: int, *, cached: bool, per_case: int, track_meta: bool = True, widen: bool = True
) -> Case:
    from monai.data import set_track_meta
    from monai.transforms import ClassesToIndicesd, RandCropByLabelClassesd

    cases = [{"image": torch.from_numpy(x), "label": torch.from_numpy(y[None])} for x, y in zip(images, masks)]
    indices_key = None
    if cached:
        to_indices = ClassesToIndicesd("label", num_classes=2, max_samples_per_class=10_000)
        cases = [to_indices(case) for case in cases]
        indices_key = "label_cls_indices"
    crop = RandCropByLabelClassesd(
        ["image", "label"],
        "label",
        patch,
        ratios=[1 - FRACTION, FRACTION],
        num_classes=2,
        num_samples=per_case,
        indices_key=indices_key,
        warn=False,
    )
    crop.set_random_state(0)
    rng = np.random.default_rng(0)

    def draw() -> tuple[torch.Tensor, torch.Tensor]:
        set_track_meta(track_meta)  # a global switch: restored so that the other cases keep MONAI's default
        try:
            crops = [out for _ in range(items // per_case) for out in crop(cases[rng.integers(len(cases))])]
            image = torch.stack([_plain(out["image"]) for out in crops]).float()
            label = torch.stack([_plain(out["label"])[0] for out in crops])
            return image, label.long() if widen else label
        finally:
            set_track_meta(True)

    label = "cached indices" if cached else "indices per call"
    if per_case > 1:
        label = f"cached, {per_case} per case"
    if not track_meta:
        label += ", track_meta off"
    if not widen:
        label += ", label left uint8"
    return Case(f"monai.RandCropByLabelClassesd, {label}", draw, items, 0)


def _groups(quick: bool) -> list[Group]:
    images, masks, source = _drive(4 if quick else 20)
    volumes, balls = _volumes(2 if quick else 4, 64 if quick else 128)
    workloads = [(images, masks, (64, 64), 16), (images, masks, (128, 128), 16)]
    workloads.append((volumes, balls, (32,) * 3 if quick else (64,) * 3, 4))
    groups = []
    for data, target, patch, items in workloads:
        shape = "x".join(map(str, data[0].shape))
        name = f"patches {'x'.join(map(str, patch))} from {len(data)} x {shape}"
        cases = [_ours(data, target, patch, items), _ours_items(data, target, patch, items)]
        cases += [_monai(data, target, patch, items, cached=c, per_case=1) for c in (False, True)]
        cases.append(_monai(data, target, patch, items, cached=True, per_case=1, track_meta=False))
        cases.append(_monai(data, target, patch, items, cached=True, per_case=4))
        groups.append(Group(name, cases, extra={"data": source if len(data) == len(images) else "synthetic"}))
    return groups


def run(
    *, quick: bool = False, device: str = "cpu", channels_last: bool = False, repeats: int | None = None
) -> list[Row]:
    """Time PatchDataset against MONAI's RandCropByLabelClassesd (CPU work; ``device`` unused)."""
    del device, channels_last
    warmup, default_repeats = (1, 3) if quick else (2, 7)
    return run_groups(_groups(quick), warmup=warmup, repeats=repeats or default_repeats)


def _cpu_clock(fn) -> float:
    begin = time.process_time()
    fn()
    return time.process_time() - begin


def cpu_time_table(*, quick: bool, repeats: int) -> str:
    """Median CPU seconds (``time.process_time``) per call of every case: on a loaded machine this
    does not count the time other processes hold the core, unlike the wall-clock table."""
    lines = ["| benchmark | impl | median CPU ms | ours/this |", "|---|---|---:|---:|"]
    for group in _groups(quick):
        medians = [float(np.median(t)) for t in interleaved_times(group, warmup=1, repeats=repeats, clock=_cpu_clock)]
        for case, median in zip(group.cases, medians):
            ratio = "-" if case is group.cases[0] else f"{median / medians[0]:.2f}"
            lines.append(f"| {group.name} | {case.impl} | {1e3 * median:.2f} | {ratio} |")
    return "\n".join(lines) + "\n"


def _floor_cases(volumes, balls, patch, items: int) -> list[tuple[Case, float]]:
    """The ``--floor`` rows: each case with the MiB its call writes (0: not counted)."""
    ours = _dataset(volumes, balls, patch, items)
    wide = _dataset(volumes, balls, patch, items)
    wide.target_dtype = np.dtype(np.int64)  # cut straight into the dtype the step takes
    counter = iter(range(10**12))
    rng = np.random.default_rng(2)
    tensors = [(torch.from_numpy(x), torch.from_numpy(y)) for x, y in zip(volumes, balls)]

    def views() -> list[tuple[torch.Tensor, torch.Tensor]]:
        out = []
        for _ in range(items):
            image, label = tensors[rng.integers(len(tensors))]
            sl = tuple(slice(a, a + p) for a, p in zip(rng.integers(0, np.subtract(label.shape, patch) + 1), patch))
            out.append((image[(slice(None), *sl)], label[sl]))
        return out

    def monai_bytes() -> tuple[torch.Tensor, torch.Tensor]:
        cut = views()
        return torch.stack([x for x, _ in cut]).float(), torch.stack([y for _, y in cut]).long()

    narrow = [ours.batch(range(i * items, (i + 1) * items))["target"] for i in range(8)]
    source, copy = np.ones(64 << 20, np.uint8), np.zeros(64 << 20, np.uint8)
    voxels = items * int(np.prod(patch))
    image, int64, uint8 = 4 * voxels / 2**20, 8 * voxels / 2**20, voxels / 2**20  # MiB of each batch array
    # MONAI stacks the crops in their stored dtypes, then casts both batches
    monai = volumes[0].dtype.itemsize * voxels / 2**20 + image + uint8 + int64

    def draw(source_ds: PatchDataset) -> Callable[[], dict]:
        return lambda: source_ds.batch([next(counter) for _ in range(items)])

    def row(name: str, fn: Callable[[], object], mib: float) -> tuple[Case, float]:
        return Case(name, fn, items, 0), mib

    return [
        (_ours(volumes, balls, patch, items), image + uint8 + int64),
        row("medbalance, target left uint8", draw(ours), image + uint8),
        row("medbalance, target cut straight into int64", draw(wide), image + int64),
        row(f"medbalance, {items} plans alone", lambda: [ours.plan(next(counter)) for _ in range(items)], 0.0),
        (_monai(volumes, balls, patch, items, cached=True, per_case=1, track_meta=False), monai),
        (_monai(volumes, balls, patch, items, cached=True, per_case=1, track_meta=False, widen=False), monai - int64),
        row("MONAI's bytes alone: stack + .float(), stack + .long() of views", monai_bytes, monai),
        row("widening alone: uint8 batch .long()", lambda: narrow[next(counter) % 8].long(), int64),
        row("write 8 MiB: np.zeros(2**20, int64)", lambda: np.zeros(2**20, np.int64), 8.0),
        row("copy 64 MiB: np.copyto", lambda: np.copyto(copy, source), 64.0),
    ]


def floor_table(*, repeats: int) -> str:
    """The ``--floor`` table: median CPU ms per call of each row, MiB written and the write rate."""
    volumes, balls = _volumes(4, 128)
    rows = _floor_cases(volumes, balls, (64,) * 3, 4)
    group = Group("3D floor", [case for case, _ in rows])
    times = interleaved_times(group, warmup=2, repeats=repeats, clock=_cpu_clock)
    lines = ["| 4 x 64^3 from 4 x 128^3 int16 | median CPU ms | IQR ms | MiB written | GB/s written |"]
    lines.append("|---|---:|---:|---:|---:|")
    for (case, mib), t in zip(rows, times):
        median, (low, high) = float(np.median(t)), np.percentile(t, [25, 75])
        rate = f"{mib * 2**20 / median / 1e9:.1f}" if mib else "-"
        written = f"{mib:g}" if mib else "-"
        lines.append(f"| {case.impl} | {1e3 * median:.3f} | {1e3 * (high - low):.3f} | {written} | {rate} |")
    return "\n".join(lines) + "\n"


def _scale(case: int, patch: np.ndarray) -> np.ndarray:
    del case
    return patch * np.float32(1 / 255)


def data_wait(*, steps: int, workers: int, channels_last: bool = True, batch: int = 16) -> dict[str, float]:
    """Mean seconds per step waiting for data and computing, over ``steps`` steps after 3 untimed."""
    images, masks, _ = _drive(20)
    warm = 3
    ds = PatchDataset(
        images,
        masks,
        patch_size=(64, 64),
        num_classes=2,
        batch_size=batch,
        samples_per_epoch=batch * (steps + warm),
        normalize=_scale,
    )
    torch.manual_seed(0)
    model = UNet(3, 1, base_channels=16)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = build_loss("dice_ce", binary=True)
    # as the engine loads a patch stream: each batch's index list, cut at once in the worker
    batches = StreamBatches(ds.epoch_indices, steps + warm, batch, lambda: 0)
    loader = DataLoader(Numbered(ds), sampler=batches, batch_size=None, num_workers=workers)
    waits, computes = [], []
    tick = time.perf_counter()
    for batch_data in loader:
        ready = time.perf_counter()
        x = batch_data["image"].contiguous(memory_format=memory_format)
        loss_fn(model(x), widen_target(batch_data)["target"]).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        done = time.perf_counter()
        waits.append(ready - tick)
        computes.append(done - ready)
        tick = done
    wait, compute = float(np.mean(waits[warm:])), float(np.mean(computes[warm:]))
    return {"wait_s": wait, "step_s": compute, "wait_fraction": wait / (wait + compute)}


def _consep() -> tuple[list[np.ndarray], list[np.ndarray]] | None:
    root = _DATA / "consep_patches256" / "seg_mask" / "train"
    paths = sorted(root.glob("*.png"))
    if not paths:
        return None
    masks = [np.asarray(Image.open(p)).astype(np.uint8) for p in paths]
    return [np.zeros((1, *m.shape), np.uint8) for m in masks], masks


def coverage(
    images, masks, num_classes: int, *, batches: int, batch: int = 16
) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Per sampler setting: per class, the fraction of batches containing it and its pixel share."""
    settings = [("uniform", {"sampler": "uniform"}), ("foreground", {"sampler": "foreground"})]
    settings += [(f"rare_class, power {p:g}", {"sampler": "rare_class", "power": p}) for p in (0, 0.25, 0.5, 0.75, 1)]
    out = []
    for name, options in settings:
        ds = PatchDataset(
            images,
            masks,
            patch_size=(64, 64),
            num_classes=num_classes,
            batch_size=batch,
            samples_per_epoch=batch * batches,
            **options,
        )
        present = np.zeros(num_classes)
        pixels = np.zeros(num_classes)
        for b in range(batches):
            counts = sum(
                np.bincount(ds[k]["target"].ravel().numpy(), minlength=num_classes)
                for k in range(b * batch, (b + 1) * batch)
            )
            present += counts > 0
            pixels += counts
        out.append((name, present / batches, pixels / pixels.sum()))
    return out


def _coverage_table(title: str, rows, names) -> str:
    head = f"{title}\n| setting | " + " | ".join(f"{n} batches / pixels %" for n in names) + " |\n"
    head += "|---|" + "---:|" * len(names) + "\n"
    lines = [
        f"| {name} | " + " | ".join(f"{100 * b:.1f} / {100 * p:.2f}" for b, p in zip(batches[1:], pixels[1:])) + " |"
        for name, batches, pixels in rows
    ]
    return head + "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks patches", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer, smaller cases and 3 repeats (smoke run)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per case (default 7, quick 3)")
    parser.add_argument("--steps", type=int, default=40, help="timed training steps of the data-wait run")
    parser.add_argument("--batches", type=int, default=300, help="batches of 16 per setting of the coverage run")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--skip-wait", action="store_true")
    parser.add_argument("--skip-coverage", action="store_true")
    parser.add_argument("--floor", action="store_true", help="only the 3D time breakdown and memory floor")
    args = parser.parse_args(argv)
    start(args.threads)
    if args.floor:
        sys.stdout.write(floor_table(repeats=args.repeats or (3 if args.quick else 21)))
        return 0
    if not args.skip_speed:
        rows = run(quick=args.quick, repeats=args.repeats)
        sys.stdout.write(report(rows) + "\n")
        sys.stdout.write(cpu_time_table(quick=args.quick, repeats=args.repeats or (3 if args.quick else 7)))
    if not args.skip_wait:
        steps = 5 if args.quick else args.steps
        for workers in (1, 0):
            wait = data_wait(steps=steps, workers=workers)
            sys.stdout.write(
                f"data wait, {workers} worker(s): {1e3 * wait['wait_s']:.1f} ms per step of "
                f"{1e3 * wait['step_s']:.1f} ms compute = {100 * wait['wait_fraction']:.1f}% of the step\n"
            )
    if not args.skip_coverage:
        batches = 20 if args.quick else args.batches
        consep = _consep()
        if consep is not None:
            names = ["other", "inflammatory", "epithelial", "spindle"]
            rows = coverage(*consep, 5, batches=batches)
            sys.stdout.write(_coverage_table(f"CoNSeP train ({len(consep[1])} tiles), {batches} batches", rows, names))
        phantoms = nuclei_phantoms(16 if args.quick else 64, size=256, seed=0)
        images = [np.zeros((1, 256, 256), np.uint8)] * len(phantoms)
        rows = coverage(images, list(phantoms.target), 7, batches=batches)
        title = f"nuclei phantoms ({len(phantoms)} x 256 x 256), {batches} batches"
        sys.stdout.write(_coverage_table(title, rows, phantoms.class_names[1:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
