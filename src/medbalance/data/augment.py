"""Batch augmentation on tensors, on the training device, after the DataLoader.

Augmenting whole batches with tensor operations costs a few vectorised calls per batch
instead of a Python call per image in the workers, runs on the GPU when training does, and
keeps the input pipeline's cached arrays untouched. Every transform draws its parameters per
sample from one seeded generator, so a run is reproducible and a resumed run sees the same
augmentations (the engine seeds the generator by (seed, epoch), like its shuffling).

Spatial transforms move the image and every spatial entry of the batch (the target, weight
maps...) together: a random crop to a fixed size (seed 001's "random 224 x 224 samples" of
BreaKHis, section 4.2; the only transform that changes the shape), flips along every spatial
axis, multiples of 90 degrees in the H-W plane, and a rotation-and-zoom in the H-W plane (2D
and 3D). Images are resampled bilinearly, everything else by nearest neighbour, so labels stay
labels (``ignore_index`` included); pixels that come from outside the image are 0
(background). Intensity transforms (brightness, contrast, gamma, Gaussian noise) touch the
image only. Defaults follow nnU-Net's
(Isensee et al., Nature Methods 2021, supplementary note 4) where it sets a value; every
transform is off until its strength is set.

Example:
    >>> aug = Augment(flip=True, rotate=15, brightness=0.1)
    >>> batch = {"image": torch.rand(4, 1, 32, 32), "target": torch.randint(0, 3, (4, 32, 32))}
    >>> out = aug(batch, torch.Generator().manual_seed(0))
    >>> out["image"].shape, out["target"].dtype, bool(out["target"].max() <= 2)
    (torch.Size([4, 1, 32, 32]), torch.int64, True)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["Augment"]


class Augment(BaseModel):
    """Which transforms to apply to training batches, and how strongly (all off by default).

    Args:
        crop: crop every sample to this size at a random position drawn per sample, before
            every other transform: one side for every spatial axis, or one per axis
            (``[H, W]`` / ``[D, H, W]``); ``None``: no crop.
        flip: mirror each spatial axis with probability 0.5, per sample.
        rot90: rotate by a random multiple of 90 degrees in the H-W plane, per sample; on a
            non-square image only by 0 or 180 degrees (the shape must not change).
        rotate: largest rotation in degrees, drawn uniformly in ``[-rotate, rotate]``.
        scale: zoom factor drawn uniformly in ``[1 - scale, 1 + scale]``.
        affine_p: probability that a sample gets the rotation / zoom.
        brightness: additive shift drawn in ``[-brightness, brightness]``.
        contrast: factor drawn in ``[1 - contrast, 1 + contrast]`` around the sample's mean.
        gamma: exponent drawn in ``[1 - gamma, 1 + gamma]``, applied on the sample's range
            rescaled to [0, 1].
        noise: largest standard deviation of additive Gaussian noise (drawn in ``[0, noise]``).
        intensity_p: probability of each intensity transform, per sample.
        outside_label: the label of pixels that a rotation or zoom brings in from outside the
            image, in integer entries (label maps); 0 (background) by default, or e.g. the
            loss's ``ignore_index`` so that they do not count. Float entries get 0 there.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    crop: int | list[int] | None = None
    flip: bool = False
    rot90: bool = False
    rotate: float = Field(0.0, ge=0.0, le=180.0)
    scale: float = Field(0.0, ge=0.0, lt=1.0)
    affine_p: float = Field(0.2, ge=0.0, le=1.0)
    brightness: float = Field(0.0, ge=0.0)
    contrast: float = Field(0.0, ge=0.0, lt=1.0)
    gamma: float = Field(0.0, ge=0.0, lt=1.0)
    noise: float = Field(0.0, ge=0.0)
    intensity_p: float = Field(0.15, ge=0.0, le=1.0)
    outside_label: int = 0

    @field_validator("crop")
    @classmethod
    def _positive(cls, value: int | list[int] | None) -> int | list[int] | None:
        sizes = [value] if isinstance(value, int) else value or []
        if (isinstance(value, list) and not value) or any(s < 1 for s in sizes):
            raise ValueError(f"expected a size >= 1 or a list of them, one per spatial axis, found {value}")
        return value

    @property
    def enabled(self) -> bool:
        """Whether any transform is on."""
        affine = self.affine_p > 0 and (self.rotate > 0 or self.scale > 0)
        intensity = self.intensity_p > 0 and any(
            s > 0 for s in (self.brightness, self.contrast, self.gamma, self.noise)
        )
        return self.crop is not None or self.flip or self.rot90 or affine or intensity

    def __call__(self, batch: dict, generator: torch.Generator, *, share: tuple[int, int] = (0, 1)) -> dict:
        """Augment ``batch`` (a new dict; the input tensors are not modified).

        Args:
            batch: ``"image"`` ``(N, C, *spatial)`` float, and any other entries; those whose
                trailing dimensions equal ``spatial`` move with the image.
            generator: CPU generator all parameters are drawn from.
            share: ``(rank, world)``: parameters are drawn for a global batch of
                ``world * N`` samples and this process takes its slice, so ``world``
                processes of batch ``N`` augment like one process of batch ``world * N``
                (except the noise, drawn per process).

        Returns:
            The augmented batch.
        """
        image = batch["image"]
        if not self.enabled:
            return batch
        if not image.is_floating_point() or image.ndim not in (4, 5):
            raise ValueError(
                f"augment: expected a float image batch (N, C, H, W) or (N, C, D, H, W), "
                f"got {image.dtype} of shape {tuple(image.shape)}"
            )
        spatial = tuple(image.shape[2:])
        keys = [
            k
            for k, v in batch.items()
            if k != "image"
            and torch.is_tensor(v)
            and v.ndim >= 1 + len(spatial)
            and tuple(v.shape[-len(spatial) :]) == spatial
        ]
        draw = _Draw(generator, len(image), share)
        out = dict(batch)
        if self.crop is not None:
            out = self._crop(out, keys, spatial, draw)
            spatial = tuple(out["image"].shape[2:])
        if self.flip:
            for axis in range(-len(spatial), 0):
                chosen = draw.uniform() < 0.5
                for key in ["image", *keys]:
                    out[key] = _where(chosen, out[key].flip(axis), out[key])
        if self.rot90:
            turns = draw.integers(4) if spatial[-1] == spatial[-2] else 2 * draw.integers(2)
            for key in ["image", *keys]:
                out[key] = _rot90(out[key], turns)
        if self.affine_p > 0 and (self.rotate > 0 or self.scale > 0):
            chosen = draw.uniform() < self.affine_p
            angle = torch.deg2rad((2 * draw.uniform() - 1) * self.rotate)
            zoom = 1 + (2 * draw.uniform() - 1) * self.scale
            if chosen.any():
                grid = _grid(torch.where(chosen, angle, 0.0), torch.where(chosen, zoom, 1.0), image)
                moved = F.grid_sample(out["image"], grid, mode="bilinear", padding_mode="zeros", align_corners=False)
                # samples not chosen keep their exact values (identity resampling rounds)
                out["image"] = _where(chosen, moved, out["image"])
                for key in keys:
                    moved = _resample_nearest(out[key], grid, len(spatial), fill=self.outside_label)
                    out[key] = _where(chosen, moved, out[key])
        out["image"] = self._intensity(out["image"], draw)
        return out

    def _crop(self, batch: dict, keys: list[str], spatial: tuple[int, ...], draw: "_Draw") -> dict:
        """Every sample cut to ``crop`` at its own random offset (uniform over the valid ones)."""
        size = [self.crop] * len(spatial) if isinstance(self.crop, int) else list(self.crop)
        if len(size) != len(spatial) or any(c > s for c, s in zip(size, spatial)):
            raise ValueError(f"augment.crop {self.crop} does not fit the training images of shape {spatial}")
        starts = [draw.integers(s - c + 1).tolist() for s, c in zip(spatial, size)]
        out = dict(batch)
        for key in ["image", *keys]:
            x = batch[key]
            lead = x.ndim - len(spatial) - 1  # axes between the sample axis and the spatial ones
            out[key] = torch.stack(
                [
                    x[(i, *[slice(None)] * lead, *(slice(s[i], s[i] + c) for s, c in zip(starts, size)))]
                    for i in range(len(x))
                ]
            )
        return out

    def _intensity(self, x: torch.Tensor, draw: "_Draw") -> torch.Tensor:
        p = self.intensity_p
        if p == 0:
            return x
        if self.brightness > 0:
            chosen, shift = draw.uniform() < p, (2 * draw.uniform() - 1) * self.brightness
            x = x + _per_sample(torch.where(chosen, shift, 0.0), x)
        if self.contrast > 0:
            chosen, factor = draw.uniform() < p, 1 + (2 * draw.uniform() - 1) * self.contrast
            mean = x.mean(dim=tuple(range(1, x.ndim)), keepdim=True)
            x = (x - mean) * _per_sample(torch.where(chosen, factor, 1.0), x) + mean
        if self.gamma > 0:
            chosen, exponent = draw.uniform() < p, 1 + (2 * draw.uniform() - 1) * self.gamma
            dims = tuple(range(1, x.ndim))
            low, high = x.amin(dim=dims, keepdim=True), x.amax(dim=dims, keepdim=True)
            span = (high - low).clamp_min(1e-8)
            gammaed = ((x - low) / span).clamp(0, 1) ** _per_sample(exponent, x) * span + low
            x = _where(chosen, gammaed, x)
        if self.noise > 0:
            chosen, sigma = draw.uniform() < p, draw.uniform() * self.noise
            noise_gen = torch.Generator(device=x.device).manual_seed(draw.seed())
            noise = torch.randn(x.shape, generator=noise_gen, device=x.device, dtype=x.dtype)
            x = x + noise * _per_sample(torch.where(chosen, sigma, 0.0), x)
        return x


class _Draw:
    """Per-sample random numbers for this process's slice of a global batch."""

    def __init__(self, generator: torch.Generator, n: int, share: tuple[int, int]) -> None:
        self.generator, self.n, (self.rank, self.world) = generator, n, share

    def uniform(self) -> torch.Tensor:
        values = torch.rand(self.world * self.n, generator=self.generator, dtype=torch.float64)
        return values[self.rank * self.n : (self.rank + 1) * self.n].float()

    def integers(self, high: int) -> torch.Tensor:
        return torch.randint(high, (self.world * self.n,), generator=self.generator)[
            self.rank * self.n : (self.rank + 1) * self.n
        ]

    def seed(self) -> int:
        return int(torch.randint(2**62, (self.world,), generator=self.generator)[self.rank])


def _per_sample(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``(N,)`` values as ``(N, 1, ...)`` on ``like``'s device and dtype, for broadcasting."""
    return values.to(like.device, like.dtype).view(-1, *([1] * (like.ndim - 1)))


def _where(chosen: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.where(chosen.to(a.device).view(-1, *([1] * (a.ndim - 1))), a, b)


def _rot90(x: torch.Tensor, turns: torch.Tensor) -> torch.Tensor:
    out = x.clone()
    for k in (1, 2, 3):
        rows = (turns == k).nonzero().flatten().to(x.device)
        if len(rows):
            out[rows] = torch.rot90(x[rows], k, dims=(-2, -1))
    return out


def _grid(angle: torch.Tensor, zoom: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """Sampling grid of a rotation by ``angle`` and zoom by ``zoom`` about the centre of the
    H-W plane, per sample, in pixel units (normalised coordinates stretch a non-square image)."""
    n, spatial = len(image), image.shape[2:]
    height, width = spatial[-2], spatial[-1]
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    dim = len(spatial)
    theta = torch.zeros(n, dim, dim + 1, dtype=torch.float32)
    # rows/columns follow grid order (x = W, y = H, z = D); the depth axis is left alone
    theta[:, 0, 0], theta[:, 0, 1] = cos, -sin * height / width
    theta[:, 1, 0], theta[:, 1, 1] = sin * width / height, cos
    if dim == 3:
        theta[:, 2, 2] = 1.0
    theta = theta.to(image.device, image.dtype if image.dtype in (torch.float32, torch.float64) else torch.float32)
    return F.affine_grid(theta, [n, 1, *spatial], align_corners=False)


def _resample_nearest(x: torch.Tensor, grid: torch.Tensor, dims: int, *, fill: int = 0) -> torch.Tensor:
    """Nearest-neighbour resampling of ``(N, *extra, *spatial)`` (any dtype) on ``grid``;
    outside the input, ``fill`` for integer tensors and 0 for float ones."""
    shape = x.shape
    flat = x.reshape(shape[0], -1, *shape[-dims:]).to(grid.dtype)  # extra dims as channels
    integer = not x.dtype.is_floating_point
    shift = fill if integer and x.dtype != torch.bool else 0  # zero padding of x - fill, plus fill
    sampled = F.grid_sample(flat - shift, grid, mode="nearest", padding_mode="zeros", align_corners=False) + shift
    if integer:
        sampled = sampled.round()
    return sampled.to(x.dtype).reshape(shape)
