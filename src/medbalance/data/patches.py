"""Random patches from images of any size (2D or 3D): uniform, foreground (nnU-Net) and rare-class sampling.

:class:`PatchDataset` is an infinite, deterministic stream of patches: item ``k`` (any
``0 <= k < 2**64``) is drawn from random numbers keyed by ``(seed, k)`` alone (SplitMix64 started
at a hash of the two: :class:`_ItemDraws`), so it does not depend on the DataLoader worker that
computes it, the number of workers, or where a run resumes. An epoch
is the ``samples_per_epoch`` consecutive items ``epoch_indices(epoch)``; a loader batches them
in order (``batch_size`` equal to the dataset's), e.g.
``DataLoader(ds, batch_size=ds.batch_size, sampler=ds.epoch_indices(epoch), num_workers=2)``,
so that cropping runs in the workers.

Sampling rules (exact):

* **Forced positions.** Item ``k`` has batch position ``j = (k % samples_per_epoch) %
  batch_size``. For ``foreground`` and ``rare_class`` it is *forced* when ``j >=
  round(batch_size * (1 - foreground_fraction))`` (nnU-Net's ``_oversample_last_XX_percent``
  rule, Python's ``round``). The number of forced items per batch is therefore exact, not
  random: ``batch_size - round(batch_size * (1 - foreground_fraction))``, e.g. 5 of 16 and 1 of 2
  at the default 0.33 (the per-batch semantics, not a per-patch probability). A last partial
  batch of an epoch keeps those positions, as far as it reaches. The loader must batch the
  epoch's items in order, not shuffled (the patches are random already).
* **uniform** (every item of the ``uniform`` sampler and every unforced item): case uniform over
  the cases, patch position uniform over the valid positions.
* **foreground**, forced item: case uniform; then a class uniform among the foreground classes
  present in that case; then one of that class's stored locations uniform (all its voxels, or a
  uniform subsample of 10,000 when it has more: :func:`class_locations`); the patch is centred
  on it (start ``location - patch // 2``), shifted to stay inside the image. A case with no
  foreground gives a uniform patch.
* **rare_class**, forced item: a class ``c`` among the dataset's foreground classes (present in at
  least one case) with probability proportional to ``frequency_c ** -power`` (``frequency_c`` =
  voxels of ``c`` in the dataset over all foreground voxels, counted fully, not from the
  subsample; ``power`` 0: uniform over classes, 1: inverse frequency); then a case containing
  ``c`` uniform; then a location and centring as above. A dataset with no foreground gives
  uniform patches. :attr:`PatchDataset.class_probabilities` holds these probabilities.
* **Padding.** On an axis where a case is shorter than the patch the window covers the whole
  axis and the rest is padding: uniform patches place the case uniformly in the window, centred
  patches as near the centre as the window allows. Padding is 0 in the image (added after
  ``normalize``, which sees only image voxels), ``ignore_index`` (else 0) in the target and 0 in
  the extras. Elsewhere patches stay inside the image.

Background (class 0) and ``ignore_index`` voxels are never centres of forced patches; classes
absent from a case (or from every case) are never drawn, with no warning.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = ["PATCH_SAMPLERS", "DEFAULT_POWER", "Patch", "PatchDataset", "class_locations", "target_dtype"]

PATCH_SAMPLERS = ("uniform", "foreground", "rare_class")
#: Default ``power`` of the ``rare_class`` sampler (see benchmarks/RESULTS.md, "Patch sampling").
DEFAULT_POWER = 0.5


_MASK64 = (1 << 64) - 1
_GAMMA = 0x9E3779B97F4A7C15  # SplitMix64's increment, 2**64 over the golden ratio (odd)


def _mix64(z: int) -> int:
    """SplitMix64's output function: a bijection of ``[0, 2**64)`` in which every input bit
    flips about half of the output bits."""
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


class _ItemDraws:
    """The random numbers of one stream item: SplitMix64 (Steele, Lea & Flood, OOPSLA 2014)
    started at ``mix64(key ^ k)``, ``key`` a 64-bit hash of the stream seed.

    A few Python integer operations per draw instead of a NumPy ``Generator`` built per item (a
    2D plan: 6 us against 21-26 us; benchmarks/RESULTS.md, "Patch sampler vs MONAI: where the
    time goes"). ``mix64`` is a bijection, so different ``k`` start at different states; two
    items' draws (at most 4 each) overlap only if their starts lie fewer than 4 increments apart,
    a chance below 1e-18 per pair.

    Example:
        >>> draws = _ItemDraws(0, 5)
        >>> 0 <= draws.below(10) < 10 and 0.0 <= draws.random() < 1.0
        True
    """

    __slots__ = ("state",)

    def __init__(self, key: int, k: int) -> None:
        self.state = _mix64(key ^ k)

    def next64(self) -> int:
        """The next 64-bit output."""
        self.state = (self.state + _GAMMA) & _MASK64
        return _mix64(self.state)

    def below(self, n: int) -> int:
        """A uniform int in ``[0, n)`` (multiply-shift: each value's probability is off by less
        than ``n / 2**64`` relative)."""
        return (self.next64() * n) >> 64

    def random(self) -> float:
        """A uniform float in ``[0, 1)`` with 53 random bits (as NumPy's ``random()``)."""
        return (self.next64() >> 11) * 2.0**-53


def _scan(
    target: np.ndarray, num_classes: int, *, max_per_class: int, ignore_index: int | None, seed
) -> tuple[dict[int, np.ndarray], np.ndarray]:
    """Stored locations per foreground class and the full voxel count of every class."""
    target = np.asarray(target)
    if target.dtype == bool:
        target = target.view(np.uint8)
    if not np.issubdtype(target.dtype, np.integer):
        raise ValueError(f"target must hold integers, got dtype {target.dtype}")
    flat = target.ravel()
    keep = flat != 0
    if ignore_index is not None:
        keep &= flat != ignore_index
    index = np.flatnonzero(keep)
    labels = flat[index]
    if labels.size and (labels.min() < 1 or labels.max() >= num_classes):
        raise ValueError(
            f"target values must be in [0, {num_classes}) or ignore_index, found {labels.min()}..{labels.max()}"
        )
    counts = np.bincount(labels, minlength=num_classes).astype(np.int64)
    counts[0] = flat.size - labels.size - (0 if ignore_index is None else int(np.count_nonzero(flat == ignore_index)))
    # One stable sort by label (a radix sort for small integer types) groups every class's voxels.
    order = np.argsort(labels, kind="stable")
    stops = np.cumsum(counts[1:])
    rng = np.random.default_rng(seed)
    locations = {}
    for c in range(1, num_classes):
        n = int(counts[c])
        if n == 0:
            continue
        voxels = index[order[stops[c - 1] - n : stops[c - 1]]]
        if n > max_per_class:
            voxels = voxels[np.sort(rng.choice(n, max_per_class, replace=False))]
        locations[c] = np.stack(np.unravel_index(voxels, target.shape), axis=1).astype(np.int32)
    return locations, counts


def target_dtype(num_classes: int, ignore_index: int | None = None) -> np.dtype:
    """The smallest integer dtype of a patch target: ``uint8`` when every label (``0 ..
    num_classes - 1`` and ``ignore_index``) fits in ``[0, 255]``, else ``int16`` when they fit
    in it, else ``int64``.

    Patches are cut in it (an eighth of the int64 bytes for uint8) and the training step widens
    the whole batch to int64 once (:func:`medbalance.engine.engine.widen_target`).

    Example:
        >>> target_dtype(2, 255), target_dtype(300), target_dtype(3, -100)
        (dtype('uint8'), dtype('int16'), dtype('int16'))
    """
    labels = [0, num_classes - 1] + ([] if ignore_index is None else [int(ignore_index)])
    for dtype in (np.uint8, np.int16):
        info = np.iinfo(dtype)
        if info.min <= min(labels) and max(labels) <= info.max:
            return np.dtype(dtype)
    return np.dtype(np.int64)


def class_locations(
    target: np.ndarray,
    num_classes: int,
    *,
    max_per_class: int = 10_000,
    ignore_index: int | None = None,
    seed=0,
) -> dict[int, np.ndarray]:
    """Coordinates of (a uniform subsample of) every foreground class's voxels, as nnU-Net stores them.

    Args:
        target: integer (or boolean) class map ``(*spatial)``, values in ``[0, num_classes)`` or
            ``ignore_index``.
        num_classes: number of classes including background 0.
        max_per_class: at most this many locations per class; a class with more voxels keeps a
            uniform subsample without replacement (in raster order).
        ignore_index: label whose voxels are never listed (may be a class id or a value outside).
        seed: seed of the subsample (anything ``np.random.default_rng`` accepts).

    Returns:
        ``{class: int32 (k, target.ndim)}`` for every class ``1..num_classes-1`` present (other than
        ``ignore_index``), ``1 <= k <= max_per_class``; absent classes have no key.

    Example:
        >>> t = np.array([[0, 2, 2], [1, 0, 2]], dtype=np.uint8)
        >>> {c: v.tolist() for c, v in class_locations(t, 3).items()}
        {1: [[1, 0]], 2: [[0, 1], [0, 2], [1, 2]]}
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
    if isinstance(max_per_class, bool) or not isinstance(max_per_class, (int, np.integer)) or max_per_class < 1:
        raise ValueError(f"max_per_class must be an int >= 1, got {max_per_class!r}")
    return _scan(target, int(num_classes), max_per_class=int(max_per_class), ignore_index=ignore_index, seed=seed)[0]


class Patch(NamedTuple):
    """Where item ``k`` of a :class:`PatchDataset` comes from.

    Attributes:
        case: case index.
        start: patch origin per spatial axis, in image coordinates (negative or past the end
            where a short axis is padded).
        label: class the patch is centred on, or -1 for a uniform patch.
        location: the centred voxel (image coordinates), or None for a uniform patch.
    """

    case: int
    start: tuple[int, ...]
    label: int
    location: tuple[int, ...] | None


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


class PatchDataset(Dataset):
    """Random patches from cases of any size; see the module docstring for the exact rules.

    Args:
        images: per case an array ``(C, *spatial_i)`` of any numeric dtype (same ``C``).
        targets: per case an integer array ``(*spatial_i)``.
        patch_size: patch side per spatial axis (an int: the same on every axis).
        num_classes: number of classes including background 0.
        batch_size: the loader's batch size (sets the forced positions).
        samples_per_epoch: ``len(self)``.
        sampler: ``"uniform"``, ``"foreground"`` or ``"rare_class"``.
        foreground_fraction: fraction of each batch that is forced, in ``[0, 1]``.
        power: ``rare_class`` exponent, ``>= 0``.
        ignore_index: label never used as a centre, and the target's padding value.
        seed: stream seed (a non-negative int).
        normalize: ``(case_index, float32 image patch) -> float32 patch`` applied before padding;
            must pickle (a module-level function or object) for DataLoader workers.
        extras: ``{name: per case arrays (*spatial_i)}`` cropped like the target.
        locations: per case :func:`class_locations` output (else computed here, once).

    Shape:
        Item: ``{"image": float32 (C, *patch), "target": (*patch), "index": int64 (), **extras}``;
        the target in :attr:`target_dtype` (uint8 for up to 256 labels incl. ``ignore_index``:
        widen the batch with ``.long()`` where a loss takes it); extras are int64 if integer,
        else float32.

    Example:
        >>> images = [np.zeros((1, 40, 50), np.uint8), np.ones((1, 20, 30), np.uint8)]
        >>> targets = [np.zeros((40, 50), np.uint8), np.ones((20, 30), np.uint8)]
        >>> ds = PatchDataset(images, targets, patch_size=(32, 32), num_classes=2, batch_size=4,
        ...                   samples_per_epoch=8)
        >>> item = ds[5]
        >>> tuple(item["image"].shape), item["target"].dtype, len(ds), ds.epoch_indices(1)
        ((1, 32, 32), torch.uint8, 8, range(8, 16))
    """

    def __init__(
        self,
        images: Sequence[np.ndarray],
        targets: Sequence[np.ndarray],
        *,
        patch_size: int | Sequence[int],
        num_classes: int,
        batch_size: int,
        samples_per_epoch: int,
        sampler: str = "foreground",
        foreground_fraction: float = 0.33,
        power: float = DEFAULT_POWER,
        ignore_index: int | None = None,
        seed: int = 0,
        normalize: Callable[[int, np.ndarray], np.ndarray] | None = None,
        extras: Mapping[str, Sequence[np.ndarray]] | None = None,
        locations: Sequence[Mapping[int, np.ndarray]] | None = None,
    ) -> None:
        if len(images) != len(targets) or len(images) == 0:
            raise ValueError(
                f"images and targets must be equally long and non-empty, got {len(images)} and {len(targets)}"
            )
        self.images = [np.asarray(image) for image in images]
        self.targets = [np.asarray(target) for target in targets]
        ndim = np.ndim(self.targets[0])
        if isinstance(patch_size, (int, np.integer)) and not isinstance(patch_size, bool):
            patch_size = (patch_size,) * ndim
        if (
            ndim < 1
            or len(patch_size) != ndim
            or any(isinstance(p, bool) or not isinstance(p, (int, np.integer)) or p < 1 for p in patch_size)
        ):
            raise ValueError(f"patch_size must be {ndim} positive ints (one per spatial axis), got {patch_size!r}")
        self.patch_size = tuple(int(p) for p in patch_size)
        channels = np.shape(self.images[0])[0]
        for i, (image, target) in enumerate(zip(self.images, self.targets)):
            if np.ndim(image) != ndim + 1 or np.shape(image)[1:] != np.shape(target) or np.shape(image)[0] != channels:
                raise ValueError(
                    f"case {i}: image must be ({channels}, *spatial) matching its target, "
                    f"got image {np.shape(image)} and target {np.shape(target)}"
                )
        self.num_classes = _positive_int("num_classes", num_classes)
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes!r}")
        self.batch_size = _positive_int("batch_size", batch_size)
        self.samples_per_epoch = _positive_int("samples_per_epoch", samples_per_epoch)
        if sampler not in PATCH_SAMPLERS:
            raise ValueError(f"sampler must be one of {PATCH_SAMPLERS}, got {sampler!r}")
        if not 0.0 <= foreground_fraction <= 1.0:
            raise ValueError(f"foreground_fraction must be in [0, 1], got {foreground_fraction!r}")
        if not (np.isfinite(power) and power >= 0):
            raise ValueError(f"power must be finite and >= 0, got {power!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        self.sampler, self.foreground_fraction, self.power = sampler, float(foreground_fraction), float(power)
        self.ignore_index, self.seed, self.normalize = ignore_index, int(seed), normalize
        self._key = int(np.random.SeedSequence(self.seed).generate_state(1, np.uint64)[0])
        self.extras = {name: [np.asarray(a) for a in arrays] for name, arrays in (extras or {}).items()}
        for name, arrays in self.extras.items():
            if name in ("image", "target", "index") or len(arrays) != len(self.targets):
                raise ValueError(
                    f"extras[{name!r}] must be a new key with one array per case, got {len(arrays)} arrays"
                )
            for i, (array, target) in enumerate(zip(arrays, self.targets)):
                if np.shape(array) != np.shape(target):
                    raise ValueError(f"extras[{name!r}][{i}] must have shape {np.shape(target)}, got {np.shape(array)}")
        self.unforced = round(self.batch_size * (1 - self.foreground_fraction))
        #: dtype of the items' targets (:func:`target_dtype`); ``_scan`` checks every label fits.
        self.target_dtype = target_dtype(self.num_classes, ignore_index)

        counts = np.zeros((len(self.targets), self.num_classes), np.int64)
        if locations is None:
            scans = [
                _scan(t, self.num_classes, max_per_class=10_000, ignore_index=ignore_index, seed=[self.seed, i])
                for i, t in enumerate(self.targets)
            ]
            self.locations = [dict(loc) for loc, _ in scans]
            counts[:] = [c for _, c in scans]
        else:
            if len(locations) != len(self.targets):
                raise ValueError(f"locations must have one entry per case ({len(self.targets)}), got {len(locations)}")
            self.locations = [{int(c): np.asarray(v) for c, v in loc.items() if len(v)} for loc in locations]
            for i, target in enumerate(self.targets):
                counts[i] = _scan(target, self.num_classes, max_per_class=1, ignore_index=ignore_index, seed=0)[1]
                found = {int(c) for c in np.flatnonzero(counts[i, 1:]) + 1}
                if set(self.locations[i]) != found:
                    raise ValueError(
                        f"locations[{i}] must list the classes {sorted(found)}, got {sorted(self.locations[i])}"
                    )
        #: Full voxel count of every class in every case ``(cases, num_classes)`` (ignore_index excluded).
        self.class_counts = counts
        self._case_classes = [np.array(sorted(loc), np.int64) for loc in self.locations]
        self._class_cases = {
            c: np.array([i for i, loc in enumerate(self.locations) if c in loc], np.int64)
            for c in range(1, self.num_classes)
        }
        self._probabilities = self._class_probabilities()
        self._cumulative = np.cumsum(self._probabilities)

    def _class_probabilities(self) -> np.ndarray:
        probabilities = np.zeros(self.num_classes)
        if self.sampler == "foreground":
            for classes in self._case_classes:
                if len(classes):
                    probabilities[classes] += 1.0 / (len(classes) * len(self.locations))
        elif self.sampler == "rare_class":
            present = np.array([c for c, cases in self._class_cases.items() if len(cases)], np.int64)
            if len(present):
                totals = self.class_counts[:, present].sum(axis=0).astype(np.float64)
                weights = (totals / totals.sum()) ** -self.power
                probabilities[present] = weights / weights.sum()
        return probabilities

    @property
    def class_probabilities(self) -> np.ndarray:
        """float64 ``(num_classes,)``: probability that a forced item is centred on each class.

        ``rare_class``: as specified (sums to 1, or all zero without foreground); ``foreground``:
        the mean over cases of ``1 / (classes present)`` for the classes a case contains (sums to
        the fraction of cases with foreground; the rest are uniform patches); ``uniform``: zeros.
        """
        return self._probabilities.copy()

    def __len__(self) -> int:
        return self.samples_per_epoch

    def epoch_indices(self, epoch: int) -> range:
        """The stream items of ``epoch`` (0-based), in batch order."""
        if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or epoch < 0:
            raise ValueError(f"epoch must be a non-negative int, got {epoch!r}")
        return range(epoch * self.samples_per_epoch, (epoch + 1) * self.samples_per_epoch)

    def is_forced(self, k: int) -> bool:
        """Whether item ``k`` is centred on a class (``foreground`` / ``rare_class`` forced position)."""
        return self.sampler != "uniform" and (k % self.samples_per_epoch) % self.batch_size >= self.unforced

    def plan(self, k: int) -> Patch:
        """Case, class and position of item ``k`` (no cropping); ``self[k]`` crops exactly this."""
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 0 <= k <= _MASK64:
            raise ValueError(f"k must be an int in [0, 2**64), got {k!r}")
        k = int(k)
        rng = _ItemDraws(self._key, k)
        case, label = -1, -1
        if self.is_forced(k):
            if self.sampler == "foreground":
                case = rng.below(len(self.targets))
                classes = self._case_classes[case]
                if len(classes):
                    label = int(classes[rng.below(len(classes))])
            elif self._cumulative[-1] > 0:
                # Scaling by the total (1 up to rounding) keeps u below it: zero-probability classes are never hit.
                label = int(np.searchsorted(self._cumulative, rng.random() * self._cumulative[-1], side="right"))
                cases = self._class_cases[label]
                case = int(cases[rng.below(len(cases))])
        if case < 0:
            case = rng.below(len(self.targets))
        shape = np.shape(self.targets[case])
        if label < 0:
            # Valid starts: [0, s - p] on long axes, [s - p, 0] (the window covers the axis) on short ones.
            start = tuple(min(0, s - p) + rng.below(abs(s - p) + 1) for s, p in zip(shape, self.patch_size))
            return Patch(case, start, -1, None)
        stored = self.locations[case][label]
        location = tuple(int(x) for x in stored[rng.below(len(stored))])
        start = tuple(
            min(max(x - p // 2, min(0, s - p)), max(0, s - p)) for x, s, p in zip(location, shape, self.patch_size)
        )
        return Patch(case, start, label, location)

    def _window(self, spatial: tuple[int, ...], start: tuple[int, ...]) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
        """Slices of the case inside the patch window, and where they go in the patch."""
        source = tuple(slice(max(a, 0), min(a + p, s)) for a, p, s in zip(start, self.patch_size, spatial))
        return source, tuple(slice(sl.start - a, sl.stop - a) for sl, a in zip(source, start))

    def batch(self, ks: Sequence[int]) -> dict[str, torch.Tensor]:
        """Items ``ks`` as one batch, exactly ``default_collate([self[k] for k in ks])``, written
        straight into the batch arrays: each patch is copied (and cast) once, with no per-item
        tensors to stack afterwards.

        Returns:
            ``{"image": float32 (B, C, *patch), "target": target_dtype (B, *patch), "index":
            int64 (B,), **extras (B, *patch)}``.
        """
        ks = list(ks)
        if not ks:
            raise ValueError("ks must name at least one item")
        n, channels, patch = len(ks), self.images[0].shape[0], self.patch_size
        pad_label = 0 if self.ignore_index is None else self.ignore_index
        image = np.empty((n, channels, *patch), np.float32)
        target = np.empty((n, *patch), self.target_dtype)
        extras = {
            name: np.empty(
                (n, *patch), np.int64 if all(np.issubdtype(a.dtype, np.integer) for a in arrays) else np.float32
            )
            for name, arrays in self.extras.items()
        }
        cases = np.empty(n, np.int64)
        for i, k in enumerate(ks):
            case, start, _, _ = self.plan(k)
            cases[i] = case
            source, placed = self._window(self.targets[case].shape, start)
            if any(sl.stop - sl.start != p for sl, p in zip(placed, patch)):  # padded: fill first
                image[i], target[i] = 0.0, pad_label
                for out in extras.values():
                    out[i] = 0
            region = (slice(None), *source)
            if self.normalize is None:
                image[i][(slice(None), *placed)] = self.images[case][region]
            else:
                cut = np.array(self.images[case][region], dtype=np.float32)
                image[i][(slice(None), *placed)] = self.normalize(case, cut)
            target[i][placed] = self.targets[case][source]  # every label fits (checked by _scan)
            for name, out in extras.items():
                out[i][placed] = self.extras[name][case][source]
        batch = {"image": image, "target": target, "index": cases, **extras}
        return {key: torch.from_numpy(value) for key, value in batch.items()}

    def __getitem__(self, k: int) -> dict[str, torch.Tensor]:
        return {key: value[0] for key, value in self.batch([k]).items()}
