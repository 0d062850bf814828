"""Per-dataset intensity normalisation, chosen the way nnU-Net's dataset fingerprint does.

The scheme is fitted once on the training split, stored in the run folder (``splits.json``,
every checkpoint's metadata) and in the export metadata, and applied to every image the run
reads: training patches, validation, ``evaluate`` and ``predict``.

=========  =====================================================  ==============================
scheme     what it does                                           chosen by ``auto`` when
=========  =====================================================  ==============================
``uint8``  ``x / 255``, then per channel ``(x - mean_c) / std_c``  the images are 8-bit
           with the training set's mean and std (at the /255
           scale)
``ct``     clip to the 0.5 and 99.5 percentiles of the training    integer images with values
           *foreground* intensities, then ``(x - mean) / std`` of  below -100 (Hounsfield units)
           those foreground intensities, per channel
``zscore`` per image and channel ``(x - mean) / std`` (MR and       anything else
           other modalities without a fixed scale); fixed when
           ``mean`` / ``std`` are given (:meth:`for_image`)
``none``   float32 as stored (phantoms, data already scaled)      never (set it explicitly)
=========  =====================================================  ==============================

Differences from nnU-Net: its 8-bit natural-image scheme stops at ``/ 255``; here the issue's
protocol adds the dataset's channel mean / std. nnU-Net's z-score scheme for MR may use a
non-zero mask; here every pixel of the image counts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

__all__ = ["SCHEMES", "Normalization", "fit_normalization"]

Scheme = Literal["none", "uint8", "ct", "zscore"]
SCHEMES: tuple[str, ...] = ("auto", "none", "uint8", "ct", "zscore")

# Foreground intensities sampled per training image for the CT percentiles (nnU-Net keeps 10k).
_CT_SAMPLES = 10_000
_EPS = 1e-8


@dataclass(frozen=True)
class Normalization:
    """A fitted normalisation: call it on a stored image ``(C, *spatial)`` to get float32 input.

    Attributes:
        scheme: ``"none"``, ``"uint8"``, ``"ct"`` or ``"zscore"`` (see the module table).
        mean: per-channel mean subtracted (``uint8``, ``ct``); empty otherwise.
        std: per-channel standard deviation divided by (``uint8``, ``ct``).
        clip: per-channel ``(low, high)`` clipping bounds (``ct``).

    Example:
        >>> norm = Normalization("uint8", mean=(0.5,), std=(0.25,))
        >>> norm(np.array([[[0, 255]]], np.uint8)).tolist()
        [[[-2.0, 2.0]]]
    """

    scheme: Scheme
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    clip: tuple[tuple[float, float], ...] = ()

    def __call__(self, image: np.ndarray) -> np.ndarray:
        x = np.asarray(image, dtype=np.float32)
        if self.scheme == "none":
            return x
        channels = (slice(None),) + (None,) * (x.ndim - 1)
        if self.scheme == "zscore" and not self.mean:
            axes = tuple(range(1, x.ndim))
            mean = x.mean(axis=axes, keepdims=True)
            std = x.std(axis=axes, keepdims=True)
            return ((x - mean) / np.maximum(std, _EPS)).astype(np.float32)
        if len(self.mean) != x.shape[0]:
            raise ValueError(f"image has {x.shape[0]} channels but the normalisation was fitted on {len(self.mean)}")
        if self.scheme == "uint8":
            x = x / np.float32(255.0)
        elif self.scheme == "ct":
            low, high = np.asarray(self.clip, np.float32).T
            x = np.clip(x, low[channels], high[channels])
        mean = np.asarray(self.mean, np.float32)[channels]
        std = np.asarray(self.std, np.float32)[channels]
        return ((x - mean) / std).astype(np.float32)

    def for_image(self, image: np.ndarray) -> "Normalization":
        """The fixed normalisation this one applies to ``image`` (``zscore``: with that image's
        own mean and std), so that a patch of it is normalised like the whole image."""
        if self.scheme != "zscore" or self.mean:
            return self
        x = np.asarray(image, dtype=np.float64).reshape(image.shape[0], -1)
        std = np.maximum(x.std(axis=1), _EPS)
        return Normalization("zscore", tuple(float(v) for v in x.mean(axis=1)), tuple(float(v) for v in std))

    def to_dict(self) -> dict:
        """JSON-ready form (what run folders and export metadata store)."""
        return {
            "scheme": self.scheme,
            "mean": list(self.mean),
            "std": list(self.std),
            "clip": [list(c) for c in self.clip],
        }

    @classmethod
    def from_dict(cls, raw: dict) -> "Normalization":
        """Inverse of :meth:`to_dict`.

        Raises:
            ValueError: an unknown scheme or malformed fields.
        """
        scheme = raw.get("scheme")
        if scheme not in SCHEMES or scheme == "auto":
            raise ValueError(f"normalization scheme must be one of none, uint8, ct, zscore, found {scheme!r}")
        try:
            return cls(
                scheme,
                tuple(float(v) for v in raw.get("mean", ())),
                tuple(float(v) for v in raw.get("std", ())),
                tuple((float(a), float(b)) for a, b in raw.get("clip", ())),
            )
        except (TypeError, ValueError) as exc:
            raise ValueError(f"malformed normalization {raw!r}: {exc}") from None


def _auto_scheme(images: Sequence[np.ndarray]) -> str:
    if all(im.dtype == np.uint8 for im in images):
        return "uint8"
    if all(np.issubdtype(im.dtype, np.integer) for im in images) and min(int(im.min()) for im in images) < -100:
        return "ct"
    return "zscore"


def fit_normalization(
    images: Sequence[np.ndarray],
    targets: Sequence[np.ndarray] | None = None,
    *,
    scheme: str = "auto",
    ignore_index: int | None = None,
    seed: int = 0,
) -> Normalization:
    """Fit ``scheme`` on training images (``auto``: by dtype and range, see the module table).

    Args:
        images: training images ``(C, *spatial)`` as stored (any shapes, one channel count).
        targets: their label maps; the ``ct`` scheme uses the foreground (label > 0, not
            ``ignore_index``) intensities, or every pixel when no image has foreground.
        scheme: one of :data:`SCHEMES`.
        ignore_index: label of pixels left out of the ``ct`` statistics.
        seed: seeds the subsample of foreground intensities (``ct``).

    Raises:
        ValueError: an unknown scheme, no images, or images whose channel counts differ.

    Example:
        >>> fit_normalization([np.full((1, 2, 2), 51, np.uint8), np.full((1, 1, 4), 153, np.uint8)])
        Normalization(scheme='uint8', mean=(0.4,), std=(0.2,), clip=())
    """
    if scheme not in SCHEMES:
        raise ValueError(f"normalization must be one of {', '.join(SCHEMES)}, found {scheme!r}")
    if len(images) == 0:
        raise ValueError("cannot fit a normalization on no images")
    channels = {int(im.shape[0]) for im in images}
    if len(channels) != 1:
        raise ValueError(f"images differ in channel count ({sorted(channels)}); expected one")
    if scheme == "auto":
        scheme = _auto_scheme(images)
    if scheme in ("none", "zscore"):
        return Normalization(scheme)
    c = channels.pop()
    if scheme == "uint8":
        # Exact sums in float64 over every pixel: a mean of means would weight small images up.
        total = np.zeros(c)
        squares = np.zeros(c)
        count = 0
        for im in images:
            flat = im.reshape(c, -1).astype(np.float64) / 255.0
            total += flat.sum(axis=1)
            squares += (flat * flat).sum(axis=1)
            count += flat.shape[1]
        mean = total / count
        std = np.sqrt(np.maximum(squares / count - mean * mean, 0.0))
        std = np.maximum(std, 1e-3)  # a constant channel would divide by 0
        return Normalization("uint8", tuple(round(float(v), 7) for v in mean), tuple(round(float(v), 7) for v in std))
    rng = np.random.default_rng(seed)
    samples = []
    for i, im in enumerate(images):
        flat = im.reshape(c, -1)
        fg = None
        if targets is not None:
            t = np.asarray(targets[i]).reshape(-1)
            fg = (t > 0) if ignore_index is None else (t > 0) & (t != ignore_index)
            fg = fg if fg.any() else None
        values = flat[:, fg] if fg is not None else flat
        if values.shape[1] > _CT_SAMPLES:
            values = values[:, rng.choice(values.shape[1], _CT_SAMPLES, replace=False)]
        samples.append(values.astype(np.float64))
    values = np.concatenate(samples, axis=1)
    low, high = np.percentile(values, 0.5, axis=1), np.percentile(values, 99.5, axis=1)
    clipped = np.clip(values, low[:, None], high[:, None])
    mean, std = clipped.mean(axis=1), np.maximum(clipped.std(axis=1), 1e-3)
    return Normalization(
        "ct",
        tuple(float(v) for v in mean),
        tuple(float(v) for v in std),
        tuple((float(a), float(b)) for a, b in zip(low, high)),
    )
