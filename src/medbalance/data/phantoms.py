"""Procedural phantoms: the embedded-default datasets (SPEC section 8).

Three numpy-only generators let every command run with no download:

- :func:`intraclass_phantoms` -- binary segmentation with intra-class imbalance, imitating an
  echocardiographic left ventricle whose wall drops out over a sector (seed 000).
- :func:`nuclei_phantoms` -- multi-class H&E-like "nuclei" with CoNIC's class order and
  expected pixel fractions (seed 002).
- :func:`longtail_phantoms` with :func:`longtail_counts` -- long-tailed classification with a
  chosen imbalance ratio (SPEC section 6, seed 001).

Every generator is deterministic given ``seed`` and image ``i`` depends only on ``(seed, i)``
(through ``np.random.default_rng([seed, stream, i])``), so a set of ``n`` images is the prefix
of any larger set with the same seed. See ``docs/phantoms.md`` for what makes each task hard.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "CONIC_CLASS_NAMES",
    "CONIC_FRACTIONS",
    "LONGTAIL_PATTERNS",
    "PhantomSet",
    "intraclass_phantoms",
    "longtail_counts",
    "longtail_phantoms",
    "nuclei_phantoms",
]

# Independent random streams per generator, so equal seeds do not reuse the same numbers.
_STREAM_INTRACLASS, _STREAM_NUCLEI, _STREAM_LONGTAIL = 1, 2, 3
# Images are rendered in chunks to bound memory while keeping numpy's work vectorised.
_CHUNK = 64


@dataclass(frozen=True)
class PhantomSet:
    """A generated dataset.

    Attributes:
        images: float32 ``(N, C_in, H, W)`` in ``[0, 1]``.
        target: segmentation: uint8 class map ``(N, H, W)``; classification: int64 ``(N,)``.
        class_names: one name per class, index = label.
        regions: intra-class phantoms only: uint8 ``(N, H, W)`` with 0 background,
            1 majority and 2 minority part of the target; ``None`` otherwise.
    """

    images: np.ndarray
    target: np.ndarray
    class_names: tuple[str, ...]
    regions: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.images.shape[0])


# ----------------------------------------------------------------------------- helpers


def _check_count(n: object) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")
    return int(n)


def _check_seed(seed: object) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    return int(seed)


def _check_size(size: object, minimum: int) -> tuple[int, int]:
    hw = (size, size) if isinstance(size, (int, np.integer)) and not isinstance(size, bool) else size
    if (
        not isinstance(hw, (tuple, list))
        or len(hw) != 2
        or not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s >= minimum for s in hw)
    ):
        raise ValueError(f"size must be an int or an (H, W) pair of ints >= {minimum}, got {size!r}")
    return int(hw[0]), int(hw[1])


def _check_range(name: str, value: float, low: float, high: float) -> float:
    if not low <= value <= high:
        raise ValueError(f"{name} must be in [{low}, {high}], got {value!r}")
    return float(value)


def _check_interval(name: str, value: Sequence[float], low: float, high: float) -> tuple[float, float]:
    if len(value) != 2 or not low <= value[0] <= value[1] <= high:
        raise ValueError(f"{name} must be a (min, max) pair with {low} <= min <= max <= {high}, got {value!r}")
    return float(value[0]), float(value[1])


def _image_rngs(seed: int, stream: int, start: int, stop: int) -> list[np.random.Generator]:
    return [np.random.default_rng([seed, stream, i]) for i in range(start, stop)]


def _interp_matrix(n_out: int, n_in: int) -> np.ndarray:
    """Gaussian-kernel interpolation from ``n_in`` to ``n_out`` samples, unit output variance.

    Rows are normalised so that white unit-variance input gives unit-variance output at every
    position; a Gaussian kernel (not linear interpolation) avoids visible grid creases.
    """
    pos = np.linspace(0.0, n_in - 1.0, n_out)
    w = np.exp(-0.5 * ((pos[:, None] - np.arange(n_in)[None, :]) / 0.6) ** 2)
    return w / np.sqrt((w**2).sum(axis=1, keepdims=True))


def _smooth_noise(rngs: Sequence[np.random.Generator], hw: tuple[int, int], cell: float) -> np.ndarray:
    """Per-image Gaussian random fields ``(B, H, W)`` (zero mean, unit variance, correlation ~cell px)."""
    h, w = hw
    lh, lw = max(2, round(h / cell) + 2), max(2, round(w / cell) + 2)
    low = np.stack([rng.standard_normal((lh, lw)) for rng in rngs]) if rngs else np.zeros((0, lh, lw))
    # Two plain 2-D products (one BLAS call each) rather than a broadcast batched matmul.
    t = (low.reshape(-1, lw) @ _interp_matrix(w, lw).T).reshape(-1, lh, w)
    t = np.swapaxes(t, 1, 2).reshape(-1, lh) @ _interp_matrix(h, lh).T
    return np.swapaxes(t.reshape(-1, w, h), 1, 2)


def _speckle(rngs: Sequence[np.random.Generator], hw: tuple[int, int], cell: float) -> np.ndarray:
    """Fully developed speckle amplitude (Rayleigh, normalised to mean 1) of grain ~cell px."""
    re, im = _smooth_noise(rngs, hw, cell), _smooth_noise(rngs, hw, cell)
    return np.hypot(re, im) / np.sqrt(np.pi / 2)


def _box_blur(x: np.ndarray, radius: int) -> np.ndarray:
    """Separable box blur of width ``2 * radius + 1`` over the last two axes (edge padded)."""
    if radius <= 0:
        return x
    k = 2 * radius + 1
    for axis in (-2, -1):
        pad = [(0, 0)] * x.ndim
        pad[axis] = (radius + 1, radius)
        c = np.cumsum(np.pad(x, pad, mode="edge"), axis=axis)
        n = x.shape[axis]
        x = (np.take(c, np.arange(k, k + n), axis=axis) - np.take(c, np.arange(n), axis=axis)) / k
    return x


def _uniform(rngs: Sequence[np.random.Generator], low: float, high: float) -> np.ndarray:
    return np.array([rng.uniform(low, high) for rng in rngs])


def _wrap_angle(a: np.ndarray) -> np.ndarray:
    return (a + np.pi) % (2 * np.pi) - np.pi


# ----------------------------------------------------------------------------- (a) intra-class


def intraclass_phantoms(
    n: int,
    *,
    size: int | tuple[int, int] = 128,
    seed: int = 0,
    minority_contrast: float = 0.15,
    minority_sector: tuple[float, float] = (0.3, 0.5),
    minority_band: float = 0.3,
    speckle: float = 0.6,
) -> PhantomSet:
    """Binary segmentation phantoms with intra-class imbalance (an echo LV with a dropout wall).

    Each image holds one smooth irregular blob (random centre, radii and rotation; the radius is
    perturbed by harmonics 2-4) that is brighter and finer-grained than the coarse speckled
    background, under a smooth multiplicative gain field. Over one angular sector of the blob
    (a random position, ``minority_sector`` of a full turn wide) the outer boundary band
    (``minority_band`` of the radius thick) fades to ``minority_contrast`` of the blob's
    contrast and takes the background's speckle texture -- the echo dropout of seed 000. Those
    pixels are the **minority** part of the target (``regions == 2``); a plain network
    under-segments them because only the shape of the rest of the blob tells where the
    boundary lies.

    Args:
        n: number of images.
        size: ``H`` (square) or ``(H, W)``, each at least 16.
        seed: non-negative random seed.
        minority_contrast: fraction of the target/background contrast kept in the dropout
            sector, in ``[0, 1]`` (0: invisible, 1: no dropout).
        minority_sector: ``(min, max)`` width of the dropout sector as a fraction of a turn.
        minority_band: thickness of the boundary band that drops out, as a fraction of the
            blob radius, in ``(0, 1]``.
        speckle: speckle strength in ``[0, 1]`` (0: flat regions, 1: full Rayleigh speckle).

    Returns:
        ``PhantomSet`` with images ``(n, 1, H, W)``, target uint8 ``(n, H, W)`` in ``{0, 1}``,
        class names ``("background", "target")`` and regions uint8 ``(n, H, W)``. With the
        defaults the minority is about 18% of the target pixels on average.

    Example:
        >>> ps = intraclass_phantoms(4, size=64, seed=1)
        >>> ps.images.shape, ps.target.shape, ps.regions.max()
        ((4, 1, 64, 64), (4, 64, 64), np.uint8(2))
        >>> bool(((ps.regions > 0) == (ps.target == 1)).all())
        True
    """
    n, seed = _check_count(n), _check_seed(seed)
    hw = _check_size(size, 16)
    contrast = _check_range("minority_contrast", minority_contrast, 0.0, 1.0)
    sector = _check_interval("minority_sector", minority_sector, 0.0, 1.0)
    band = _check_range("minority_band", minority_band, 0.0, 1.0)
    if band == 0.0:
        raise ValueError("minority_band must be in (0, 1], got 0.0")
    strength = _check_range("speckle", speckle, 0.0, 1.0)

    images = np.empty((n, 1, *hw), np.float32)
    regions = np.empty((n, *hw), np.uint8)
    for start in range(0, n, _CHUNK):
        stop = min(n, start + _CHUNK)
        img, reg = _render_intraclass(_image_rngs(seed, _STREAM_INTRACLASS, start, stop), hw, contrast, sector, band, strength)
        images[start:stop, 0], regions[start:stop] = img, reg
    return PhantomSet(images, (regions > 0).astype(np.uint8), ("background", "target"), regions)


def _render_intraclass(
    rngs: list[np.random.Generator],
    hw: tuple[int, int],
    contrast: float,
    sector: tuple[float, float],
    band: float,
    strength: float,
) -> tuple[np.ndarray, np.ndarray]:
    h, w = hw
    m = min(h, w)
    col = lambda v: np.asarray(v)[:, None, None]  # noqa: E731  (per-image scalar -> (B, 1, 1))
    cy, cx = col(_uniform(rngs, 0.4, 0.6) * h), col(_uniform(rngs, 0.4, 0.6) * w)
    ra, rb = col(_uniform(rngs, 0.2, 0.32) * m), col(_uniform(rngs, 0.14, 0.24) * m)
    rot = col(_uniform(rngs, 0.0, np.pi))
    harm_amp = np.array([rng.uniform(-0.07, 0.07, 3) for rng in rngs])
    harm_phase = np.array([rng.uniform(0.0, 2 * np.pi, 3) for rng in rngs])
    sec_centre = col(_uniform(rngs, -np.pi, np.pi))
    sec_half = col(_uniform(rngs, *sector) * np.pi)
    bg_level, fg_level = col(_uniform(rngs, 0.12, 0.22)), col(_uniform(rngs, 0.5, 0.65))

    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    dy, dx = yy - cy, xx - cx
    u = (dx * np.cos(rot) + dy * np.sin(rot)) / ra
    v = (-dx * np.sin(rot) + dy * np.cos(rot)) / rb
    r, phi = np.hypot(u, v), np.arctan2(v, u)
    radius = 1.0 + sum(
        harm_amp[:, k, None, None] * np.cos((k + 2) * phi + harm_phase[:, k, None, None]) for k in range(3)
    )
    inside = r <= radius
    minority = inside & (r >= (1.0 - band) * radius) & (np.abs(_wrap_angle(phi - sec_centre)) <= sec_half)
    regions = inside.astype(np.uint8) + minority

    # Visibility of the target: 1 on the majority, `contrast` in the dropout; blurred so that
    # edges are soft like a beam-formed boundary rather than pixel-sharp.
    vis = _box_blur(np.where(minority, contrast, inside.astype(np.float64)), max(1, m // 64))
    fine, coarse = _speckle(rngs, hw, 1.2), _speckle(rngs, hw, 3.0)
    texture = 1.0 + strength * (vis * fine + (1.0 - vis) * coarse - 1.0)
    gain = 1.0 + 0.15 * _smooth_noise(rngs, hw, m / 3.0)
    img = gain * (bg_level + vis * (fg_level - bg_level)) * texture
    return np.clip(img, 0.0, 1.0), regions


# ----------------------------------------------------------------------------- (b) nuclei

CONIC_CLASS_NAMES: tuple[str, ...] = (
    "background",
    "neutrophil",
    "epithelial",
    "lymphocyte",
    "plasma",
    "eosinophil",
    "connective",
)
#: Pixel fraction of each class in CoNIC (seed 002, section 3), in ``CONIC_CLASS_NAMES`` order.
CONIC_FRACTIONS: tuple[float, ...] = (0.83975, 0.00126, 0.10308, 0.01855, 0.00551, 0.00103, 0.03081)


@dataclass(frozen=True)
class _NucleusKind:
    label: int
    semi_major: tuple[float, float]  # px, uniform range
    semi_minor: tuple[float, float]
    hematoxylin: tuple[float, float]  # stain concentration (optical density units), uniform range


# Painting order: later kinds are drawn over earlier ones, rarest last so they stay visible.
_NUCLEUS_KINDS: tuple[_NucleusKind, ...] = (
    _NucleusKind(2, (6.0, 8.5), (4.5, 6.5), (0.55, 0.85)),  # epithelial: large, pale, vesicular
    _NucleusKind(6, (8.0, 12.0), (1.8, 2.8), (0.9, 1.3)),  # connective: spindle
    _NucleusKind(3, (3.5, 4.5), (3.2, 4.2), (1.25, 1.65)),  # lymphocyte: small, round, dense
    _NucleusKind(4, (4.5, 5.5), (3.8, 4.8), (0.9, 1.25)),  # plasma: clock-face chromatin
    _NucleusKind(1, (4.5, 5.5), (4.0, 5.0), (0.95, 1.3)),  # neutrophil: 3 lobes
    _NucleusKind(5, (4.5, 5.5), (3.5, 4.5), (0.95, 1.3)),  # eosinophil: 2 lobes, red granules
)
_HARMONIC_AMP = 0.08  # boundary harmonics 2 and 3, amplitude ~ U(-A, A)
_EOSIN_HALO = 1.9  # eosinophil granular cytoplasm, in nucleus radii
# Ruifrok & Johnston optical-density vectors of haematoxylin and eosin (RGB).
_OD_HEMATOXYLIN = np.array([0.650, 0.704, 0.286])
_OD_EOSIN = np.array([0.072, 0.990, 0.105])
_NUCLEUS_PARAMS = 14  # uniform draws per nucleus, see _render_nuclei_kind


def _nucleus_margin(kind: _NucleusKind) -> int:
    halo = _EOSIN_HALO if kind.label == 5 else 1.0
    return int(np.ceil(kind.semi_major[1] * (1 + 2 * _HARMONIC_AMP) * halo)) + 1


def _nucleus_densities() -> np.ndarray:
    """Coverage density rho_k (expected nucleus area per pixel) of each kind in painting order.

    Centres form a stationary Poisson process (they extend past the border by the kind's
    margin), so with painting order 1..K the visible fraction of kind k is
    ``(1 - exp(-rho_k)) * exp(-sum_{j>k} rho_j)``; solving from the last kind backwards makes
    the expected class fractions equal ``CONIC_FRACTIONS``.
    """
    rho = np.zeros(len(_NUCLEUS_KINDS))
    covered_later = 0.0
    for k in reversed(range(len(_NUCLEUS_KINDS))):
        visible = CONIC_FRACTIONS[_NUCLEUS_KINDS[k].label]
        rho[k] = -np.log1p(-visible / np.exp(-covered_later))
        covered_later += rho[k]
    return rho


def _nucleus_mean_area(kind: _NucleusKind) -> float:
    # Area of r <= 1 + sum c_k cos(k phi + p_k) is pi * (1 + sum c_k^2 / 2); E[c^2] = A^2 / 3.
    return float(np.pi * np.mean(kind.semi_major) * np.mean(kind.semi_minor) * (1 + _HARMONIC_AMP**2 / 3))


_NUCLEUS_RHO = _nucleus_densities()


def nuclei_phantoms(n: int, *, size: int | tuple[int, int] = 128, seed: int = 0) -> PhantomSet:
    """Multi-class H&E-like nuclei phantoms with CoNIC's classes and expected class fractions.

    Background is pink eosin-stained stroma (fibrous texture, a few pale gaps); nuclei are
    haematoxylin-stained ellipses with perturbed outlines, coloured through Beer-Lambert
    stain mixing with per-image stain jitter, a slight blur and pixel noise. The classes
    differ by size, elongation, stain density and texture but overlap in each:

    - neutrophil: medium, three dark lobes in a paler nucleus;
    - epithelial: large, pale, vesicular (darker rim, one nucleolus);
    - lymphocyte: small, round, dense and homogeneous;
    - plasma: medium, "clock-face" chromatin spokes at the rim;
    - eosinophil: medium, two lobes, surrounded by red granular cytoplasm (labelled background);
    - connective: spindle-shaped (elongation 3-6).

    Nucleus counts are Poisson with means chosen so that the expected pixel fractions equal
    ``CONIC_FRACTIONS`` (background ~84%, neutrophil 0.126%, eosinophil 0.103%) at any image
    size; nucleus sizes are in pixels (CoNIC's 20x scale) and do not scale with ``size``.

    Args:
        n: number of images.
        size: ``H`` (square) or ``(H, W)``, each at least 16.
        seed: non-negative random seed.

    Returns:
        ``PhantomSet`` with images float32 ``(n, 3, H, W)`` (RGB), target uint8 ``(n, H, W)``
        in ``[0, 7)`` and ``CONIC_CLASS_NAMES``.

    Example:
        >>> ps = nuclei_phantoms(2, size=(64, 96), seed=3)
        >>> ps.images.shape, ps.target.dtype, ps.class_names[2]
        ((2, 3, 64, 96), dtype('uint8'), 'epithelial')
    """
    n, seed = _check_count(n), _check_seed(seed)
    hw = _check_size(size, 16)
    images = np.empty((n, 3, *hw), np.float32)
    target = np.empty((n, *hw), np.uint8)
    for start in range(0, n, _CHUNK):
        stop = min(n, start + _CHUNK)
        images[start:stop], target[start:stop] = _render_nuclei(_image_rngs(seed, _STREAM_NUCLEI, start, stop), hw)
    return PhantomSet(images, target, CONIC_CLASS_NAMES)


def _render_nuclei(rngs: list[np.random.Generator], hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    h, w = hw
    b = len(rngs)
    # Per-image nucleus parameters, drawn in a fixed order per image (prefix property).
    params: list[list[np.ndarray]] = [[] for _ in _NUCLEUS_KINDS]
    for i, rng in enumerate(rngs):
        for k, kind in enumerate(_NUCLEUS_KINDS):
            m = _nucleus_margin(kind)
            mean = _NUCLEUS_RHO[k] * (h + 2 * m) * (w + 2 * m) / _nucleus_mean_area(kind)
            p = rng.random((rng.poisson(mean), _NUCLEUS_PARAMS + 1))
            p[:, -1] = i
            params[k].append(p)
    stain_jitter = np.array([rng.uniform(0.9, 1.1, (2, 3)) for rng in rngs])  # (B, 2, 3)
    eosin_level = _uniform(rngs, 0.2, 0.35)[:, None, None]
    fine = _smooth_noise(rngs, hw, 1.0)
    fibres = _smooth_noise(rngs, hw, 2.0) * 0.5 + _smooth_noise(rngs, hw, 6.0) * 0.5
    gaps = _smooth_noise(rngs, hw, 12.0)

    hema = 0.05 + 0.02 * fine
    eosin = eosin_level * (1.0 + 0.3 * fibres) * np.where(gaps > 1.6, 0.25, 1.0)
    halo = np.zeros(b * h * w)
    prio = np.full(b * h * w, -1, np.int64)
    pieces = []
    offset = 0
    for kind, plist in zip(_NUCLEUS_KINDS, params):
        p = np.concatenate(plist) if plist else np.zeros((0, _NUCLEUS_PARAMS + 1))
        idx, hv, ev, halo_idx, halo_v = _render_nuclei_kind(kind, p, hw, fine.reshape(-1))
        np.maximum.at(halo, halo_idx, halo_v)
        # Nuclei are numbered in painting order; a pixel shows the highest-numbered nucleus.
        order = offset + idx[1]
        pieces.append((idx[0], order, np.full(idx[0].shape, kind.label, np.uint8), hv, ev))
        offset += len(p)
    flat, order, label, hv, ev = (np.concatenate(a) for a in zip(*pieces))
    np.maximum.at(prio, flat, order)
    win = prio[flat] == order
    target = np.zeros(b * h * w, np.uint8)
    target[flat[win]] = label[win]
    hema, eosin = hema.reshape(-1), (eosin.reshape(-1) + halo)
    hema[flat[win]], eosin[flat[win]] = hv[win], ev[win]

    # Slight optical blur, then Beer-Lambert colour: I = 10^-(c_H * od_H + c_E * od_E).
    conc = np.stack([hema.reshape(b, h, w), eosin.reshape(b, h, w)], axis=1)  # (B, 2, H, W)
    conc = 0.6 * conc + 0.4 * _box_blur(conc, 1)
    od = np.einsum("bshw,bsc->bchw", conc, stain_jitter * np.stack([_OD_HEMATOXYLIN, _OD_EOSIN]))
    noise = np.stack([rng.standard_normal((3, h, w)) for rng in rngs]) if rngs else 0.0
    rgb = 10.0 ** (-od) + 0.015 * noise
    return np.clip(rgb, 0.0, 1.0), target.reshape(b, h, w)


def _render_nuclei_kind(
    kind: _NucleusKind, p: np.ndarray, hw: tuple[int, int], fine: np.ndarray
) -> tuple[tuple[np.ndarray, np.ndarray], np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Rasterise all nuclei of one kind (rows of ``p``: uniform draws, last column = image index).

    Returns ``((flat pixel index, nucleus index), haematoxylin, eosin, halo index, halo value)``
    for every covered pixel; flat indices address a ``(B, H, W)`` array.
    """
    h, w = hw
    m = _nucleus_margin(kind)
    lerp = lambda col, lo, hi: (lo + (hi - lo) * p[:, col])[:, None, None]  # noqa: E731
    cy, cx = lerp(0, -m, h + m), lerp(1, -m, w + m)
    a, bm = lerp(2, *kind.semi_major), lerp(3, *kind.semi_minor)
    rot = lerp(4, 0.0, np.pi)
    c2, c3 = lerp(5, -_HARMONIC_AMP, _HARMONIC_AMP), lerp(6, -_HARMONIC_AMP, _HARMONIC_AMP)
    p2, p3 = lerp(7, 0.0, 2 * np.pi), lerp(8, 0.0, 2 * np.pi)
    h0, e0 = lerp(9, *kind.hematoxylin), lerp(10, 0.12, 0.3)
    t1, t2, t3 = lerp(11, 0.0, 2 * np.pi), lerp(12, -1.0, 1.0), lerp(13, -1.0, 1.0)
    image = p[:, -1].astype(np.int64)[:, None, None]

    d = np.arange(-m, m + 1, dtype=np.float64)
    rows = np.floor(cy) + d[None, :, None]
    cols = np.floor(cx) + d[None, None, :]
    dy, dx = rows - cy, cols - cx
    u = (dx * np.cos(rot) + dy * np.sin(rot)) / a
    v = (-dx * np.sin(rot) + dy * np.cos(rot)) / bm
    r, phi = np.hypot(u, v), np.arctan2(v, u)
    rel = r / (1.0 + c2 * np.cos(2 * phi + p2) + c3 * np.cos(3 * phi + p3))  # < 1 inside
    in_image = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
    flat = (image * h + rows.clip(0, h - 1).astype(np.int64)) * w + cols.clip(0, w - 1).astype(np.int64)
    nucleus = np.broadcast_to(np.arange(len(p))[:, None, None], rel.shape)
    tex = fine[flat]

    if kind.label == 2:  # vesicular: pale centre, darker rim, one nucleolus
        nucleolus = np.exp(-((u - 0.4 * t2) ** 2 + (v - 0.4 * t3) ** 2) / 0.04)
        hv = h0 * (0.7 + 0.5 * rel**4) + 0.6 * nucleolus + 0.12 * tex
    elif kind.label == 6:  # spindle, tapering stain
        hv = h0 * (1.0 - 0.25 * u**2) + 0.12 * tex
    elif kind.label == 3:  # dense, homogeneous
        hv = h0 * (1.0 - 0.1 * rel**2) + 0.08 * tex
    elif kind.label == 4:  # clock-face: dark spokes at the rim
        hv = h0 * (0.8 + 0.5 * np.maximum(0.0, np.cos(5 * phi + t1)) * rel**2) + 0.12 * tex
    else:  # lobed: 3 lobes (neutrophil) or 2 (eosinophil)
        n_lobes = 3 if kind.label == 1 else 2
        angles = (t1 + 2 * np.pi * j / n_lobes for j in range(n_lobes))
        lobes = sum(np.exp(-((u - 0.5 * np.cos(t)) ** 2 + (v - 0.5 * np.sin(t)) ** 2) / 0.12) for t in angles)
        hv = h0 * (0.3 + 0.9 * np.minimum(lobes, 1.0)) + 0.12 * tex
    ev = e0 + (0.35 if kind.label == 5 else 0.0) + np.zeros_like(rel)

    inside = in_image & (rel < 1.0)
    covered = (flat[inside], nucleus[inside])
    if kind.label == 5:
        ring = in_image & (rel < _EOSIN_HALO)
        granules = 0.6 + 0.4 * np.clip(tex[ring], -1.0, 2.0)
        halo = (flat[ring], 0.9 * granules)
    else:
        halo = (np.zeros(0, np.int64), np.zeros(0))
    return covered, hv[inside], ev[inside], *halo
