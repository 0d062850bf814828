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

import functools
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


@functools.lru_cache(maxsize=32)
def _interp_taps(n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian-kernel interpolation from ``n_in`` to ``n_out`` samples as 5 taps per output.

    Returns source indices and weights, each ``(5, n_out)``; weights are normalised so that
    white unit-variance input gives unit-variance output everywhere. A Gaussian kernel (not
    linear interpolation) avoids visible grid creases.
    """
    pos = np.linspace(0.0, n_in - 1.0, n_out)
    idx = np.round(pos).astype(np.int64)[None, :] + np.arange(-2, 3)[:, None]
    weight = np.exp(-0.5 * ((pos[None, :] - idx) / 0.6) ** 2) * ((idx >= 0) & (idx < n_in))
    weight = (weight / np.sqrt((weight**2).sum(axis=0, keepdims=True))).astype(np.float32)
    idx = np.clip(idx, 0, n_in - 1)
    idx.flags.writeable = weight.flags.writeable = False
    return idx, weight


def _upsample_rows(x: np.ndarray, n_out: int) -> np.ndarray:
    idx, weight = _interp_taps(n_out, x.shape[1])
    out = x[:, idx[0], :] * weight[0][:, None]
    for k in range(1, len(idx)):
        out += x[:, idx[k], :] * weight[k][:, None]
    return out


def _smooth_noise(rngs: Sequence[np.random.Generator], hw: tuple[int, int], cell: float) -> np.ndarray:
    """Per-image Gaussian random fields, float32 ``(B, H, W)``: zero mean, unit variance, grain ~cell px.

    Element-wise arithmetic only (no BLAS), so an image's bits do not depend on how many
    images share the batch -- the prefix property holds exactly.
    """
    h, w = hw
    low = _white_noise(rngs, (max(2, round(h / cell) + 2), max(2, round(w / cell) + 2)))
    t = np.ascontiguousarray(_upsample_rows(low, h).transpose(0, 2, 1))
    return _upsample_rows(t, w).transpose(0, 2, 1)


def _white_noise(rngs: Sequence[np.random.Generator], shape: tuple[int, ...]) -> np.ndarray:
    if not rngs:
        return np.zeros((0, *shape), np.float32)
    return np.stack([rng.standard_normal(shape, dtype=np.float32) for rng in rngs])


def _speckle(rngs: Sequence[np.random.Generator], hw: tuple[int, int], cell: float) -> np.ndarray:
    """Fully developed speckle amplitude (Rayleigh, normalised to mean 1) of grain ~cell px."""
    re, im = _smooth_noise(rngs, hw, cell), _smooth_noise(rngs, hw, cell)
    return np.hypot(re, im) * np.float32(1.0 / np.sqrt(np.pi / 2))


def _box_blur(x: np.ndarray, radius: int) -> np.ndarray:
    """Separable box blur of width ``2 * radius + 1`` over the last two axes (edge padded)."""
    for axis in (x.ndim - 2, x.ndim - 1):
        pad = [(0, 0)] * x.ndim
        pad[axis] = (radius, radius)
        padded = np.pad(x, pad, mode="edge")
        n, lead = x.shape[axis], (slice(None),) * axis
        x = sum(padded[(*lead, slice(i, i + n))] for i in range(2 * radius + 1)) / np.float32(2 * radius + 1)
    return x


def _angular_harmonics(c1: np.ndarray, s1: np.ndarray, k_max: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``[(cos k phi, sin k phi) for k = 0..k_max]`` from ``cos phi``, ``sin phi`` (no trig calls)."""
    out = [(np.ones_like(c1), np.zeros_like(s1)), (c1, s1)]
    for _ in range(2, k_max + 1):
        ck, sk = out[-1]
        out.append((ck * c1 - sk * s1, sk * c1 + ck * s1))
    return out


def _shifted_cos(cos_sin_k: tuple[np.ndarray, np.ndarray], phase: np.ndarray) -> np.ndarray:
    """``cos(k phi + phase)`` from ``(cos k phi, sin k phi)``."""
    return cos_sin_k[0] * np.cos(phase) - cos_sin_k[1] * np.sin(phase)


def _uniform(rngs: Sequence[np.random.Generator], low: float, high: float) -> np.ndarray:
    """One uniform draw per image, float32 ``(B, 1, 1)`` ready to broadcast over ``(B, H, W)``."""
    return np.array([rng.uniform(low, high) for rng in rngs], np.float32).reshape(-1, 1, 1)


# ----------------------------------------------------------------------------- (a) intra-class


def intraclass_phantoms(
    n: int,
    *,
    size: int | tuple[int, int] = 128,
    seed: int = 0,
    minority_contrast: float = 0.1,
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
        defaults the minority is about 20% of the target pixels on average.

    Example:
        >>> ps = intraclass_phantoms(4, size=64, seed=1)
        >>> ps.images.shape, ps.target.shape, int(ps.regions.max())
        ((4, 1, 64, 64), (4, 64, 64), 2)
        >>> bool(((ps.regions > 0) == (ps.target == 1)).all())
        True
    """
    n, seed = _check_count(n), _check_seed(seed)
    hw = _check_size(size, 16)
    contrast = _check_range("minority_contrast", minority_contrast, 0.0, 1.0)
    sector = _check_interval("minority_sector", minority_sector, 0.0, 1.0)
    if not 0.0 < minority_band <= 1.0:
        raise ValueError(f"minority_band must be in (0, 1], got {minority_band!r}")
    strength = _check_range("speckle", speckle, 0.0, 1.0)

    images = np.empty((n, 1, *hw), np.float32)
    regions = np.empty((n, *hw), np.uint8)
    for start in range(0, n, _CHUNK):
        stop = min(n, start + _CHUNK)
        rngs = _image_rngs(seed, _STREAM_INTRACLASS, start, stop)
        img, reg = _render_intraclass(rngs, hw, contrast, sector, float(minority_band), strength)
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
    cy, cx = _uniform(rngs, 0.4, 0.6) * h, _uniform(rngs, 0.4, 0.6) * w
    ra, rb = _uniform(rngs, 0.2, 0.32) * m, _uniform(rngs, 0.14, 0.24) * m
    rot = _uniform(rngs, 0.0, np.pi)
    harmonics = [(_uniform(rngs, -0.07, 0.07), _uniform(rngs, 0.0, 2 * np.pi)) for _ in range(3)]
    sec_centre = _uniform(rngs, -np.pi, np.pi)
    sec_half = _uniform(rngs, *sector) * np.float32(np.pi)
    bg_level, fg_level = _uniform(rngs, 0.12, 0.22), _uniform(rngs, 0.5, 0.65)

    dy = np.arange(h, dtype=np.float32)[None, :, None] - cy
    dx = np.arange(w, dtype=np.float32)[None, None, :] - cx
    u = (dx * np.cos(rot) + dy * np.sin(rot)) / ra
    v = (dy * np.cos(rot) - dx * np.sin(rot)) / rb
    r = np.hypot(u, v)
    c1, s1 = u / np.maximum(r, 1e-6), v / np.maximum(r, 1e-6)
    cs = _angular_harmonics(c1, s1, 4)
    radius = 1.0 + sum(amp * _shifted_cos(cs[k], ph) for k, (amp, ph) in enumerate(harmonics, start=2))
    inside = r <= radius
    # |phi - sec_centre| <= sec_half, written as cos(phi - sec_centre) >= cos(sec_half).
    in_sector = c1 * np.cos(sec_centre) + s1 * np.sin(sec_centre) >= np.cos(sec_half)
    minority = inside & (r >= (1.0 - band) * radius) & in_sector
    regions = inside.astype(np.uint8) + minority

    # Visibility of the target: 1 on the majority, `contrast` in the dropout; blurred so that
    # edges are soft like a beam-formed boundary rather than pixel-sharp.
    vis = _box_blur(np.where(minority, np.float32(contrast), inside.astype(np.float32)), max(1, m // 64))
    fine, coarse = _speckle(rngs, hw, 1.5), _speckle(rngs, hw, 3.5)
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


# Expected number of nuclei of each kind per pixel of the (margin-extended) frame.
_NUCLEUS_COUNT_DENSITY = _nucleus_densities() / np.array([_nucleus_mean_area(k) for k in _NUCLEUS_KINDS])


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
        >>> ps.images.shape, str(ps.target.dtype), ps.class_names[2]
        ((2, 3, 64, 96), 'uint8', 'epithelial')
    """
    n, seed = _check_count(n), _check_seed(seed)
    hw = _check_size(size, 16)
    images = np.empty((n, 3, *hw), np.float32)
    target = np.empty((n, *hw), np.uint8)
    for start in range(0, n, _CHUNK):
        stop = min(n, start + _CHUNK)
        rngs = _image_rngs(seed, _STREAM_NUCLEI, start, stop)
        images[start:stop], target[start:stop] = _render_nuclei(rngs, hw)
    return PhantomSet(images, target, CONIC_CLASS_NAMES)


def _render_nuclei(rngs: list[np.random.Generator], hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    h, w = hw
    b = len(rngs)
    # Per-image nucleus parameters, drawn in a fixed order per image (prefix property).
    params: list[list[np.ndarray]] = [[] for _ in _NUCLEUS_KINDS]
    for i, rng in enumerate(rngs):
        for k, kind in enumerate(_NUCLEUS_KINDS):
            m = _nucleus_margin(kind)
            count = rng.poisson(_NUCLEUS_COUNT_DENSITY[k] * (h + 2 * m) * (w + 2 * m))
            p = rng.random((count, _NUCLEUS_PARAMS + 1), dtype=np.float32)
            p[:, -1] = i
            params[k].append(p)
    stain = np.array([rng.uniform(0.9, 1.1, (2, 3)) for rng in rngs], np.float32).reshape(b, 2, 3)
    stain *= np.stack([_OD_HEMATOXYLIN, _OD_EOSIN]).astype(np.float32)
    eosin_level = _uniform(rngs, 0.2, 0.35)
    fine = _white_noise(rngs, hw)
    fibres = 0.5 * (_smooth_noise(rngs, hw, 2.0) + _smooth_noise(rngs, hw, 6.0))
    gaps = _smooth_noise(rngs, hw, 12.0)
    pixel_noise = _white_noise(rngs, hw)

    hema = (0.05 + 0.02 * fine).reshape(-1)
    pale_gaps = np.where(gaps > 1.6, np.float32(0.25), np.float32(1.0))
    eosin = (eosin_level * (1.0 + 0.3 * fibres) * pale_gaps).reshape(-1)
    halo = np.zeros(b * h * w, np.float32)
    pieces = []
    offset = 0
    for kind, plist in zip(_NUCLEUS_KINDS, params):
        p = np.concatenate(plist) if plist else np.zeros((0, _NUCLEUS_PARAMS + 1), np.float32)
        flat, nucleus, hv, ev, halo_flat, halo_v = _render_nuclei_kind(kind, p, hw, fine.reshape(-1))
        np.maximum.at(halo, halo_flat, halo_v)
        # Nuclei are numbered in painting order; a pixel shows the highest-numbered nucleus.
        pieces.append((flat, offset + nucleus, np.full(flat.shape, kind.label, np.uint8), hv, ev))
        offset += len(p)
    flat, order, label, hv, ev = (np.concatenate(a) for a in zip(*pieces))
    top = np.full(b * h * w, -1, np.int64)
    np.maximum.at(top, flat, order)
    win = top[flat] == order
    target = np.zeros(b * h * w, np.uint8)
    target[flat[win]] = label[win]
    eosin += halo
    hema[flat[win]], eosin[flat[win]] = hv[win], ev[win]

    # Slight optical blur, then Beer-Lambert colour: I = 10^-(c_H * od_H + c_E * od_E).
    conc = np.stack([hema.reshape(b, h, w), eosin.reshape(b, h, w)], axis=1)  # (B, 2, H, W)
    conc = 0.6 * conc + 0.4 * _box_blur(conc, 1)
    od = conc[:, :1] * stain[:, 0, :, None, None] + conc[:, 1:] * stain[:, 1, :, None, None]  # (B, 3, H, W)
    rgb = np.exp(np.float32(-np.log(10.0)) * od) + 0.015 * pixel_noise[:, None]
    return np.clip(rgb, 0.0, 1.0), target.reshape(b, h, w)


def _render_nuclei_kind(
    kind: _NucleusKind, p: np.ndarray, hw: tuple[int, int], fine: np.ndarray
) -> tuple[np.ndarray, ...]:
    """Rasterise all nuclei of one kind (rows of ``p``: uniform draws, last column = image index).

    Returns, for every covered pixel, its flat index into ``(B, H, W)``, the nucleus index (row
    of ``p``) and the haematoxylin and eosin concentrations; then the flat indices and eosin
    values of the granular halo (eosinophils only, empty otherwise).
    """
    h, w = hw
    m = _nucleus_margin(kind)

    def draw(col: int, lo: float, hi: float) -> np.ndarray:
        return (lo + (hi - lo) * p[:, col])[:, None, None]

    cy, cx = draw(0, -m, h + m), draw(1, -m, w + m)
    a, bm = draw(2, *kind.semi_major), draw(3, *kind.semi_minor)
    rot = draw(4, 0.0, np.pi)
    c2, c3 = draw(5, -_HARMONIC_AMP, _HARMONIC_AMP), draw(6, -_HARMONIC_AMP, _HARMONIC_AMP)
    p2, p3 = draw(7, 0.0, 2 * np.pi), draw(8, 0.0, 2 * np.pi)
    h0, e0 = draw(9, *kind.hematoxylin), draw(10, 0.12, 0.3)
    t1, t2, t3 = draw(11, 0.0, 2 * np.pi), draw(12, -1.0, 1.0), draw(13, -1.0, 1.0)
    image = p[:, -1].astype(np.int64)[:, None, None]

    d = np.arange(-m, m + 1, dtype=np.float32)
    rows, cols = np.floor(cy) + d[None, :, None], np.floor(cx) + d[None, None, :]
    dy, dx = rows - cy, cols - cx
    u = (dx * np.cos(rot) + dy * np.sin(rot)) / a
    v = (dy * np.cos(rot) - dx * np.sin(rot)) / bm
    r = np.hypot(u, v)
    cs = _angular_harmonics(u / np.maximum(r, 1e-6), v / np.maximum(r, 1e-6), 5)
    outline = 1.0 + c2 * _shifted_cos(cs[2], p2) + c3 * _shifted_cos(cs[3], p3)
    rel = r / outline  # < 1 inside the nucleus
    in_image = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
    flat = (image * h + rows.clip(0, h - 1).astype(np.int64)) * w + cols.clip(0, w - 1).astype(np.int64)
    tex = fine[flat]

    if kind.label == 2:  # vesicular: pale centre, darker rim, one nucleolus
        nucleolus = np.exp(-((u - 0.4 * t2) ** 2 + (v - 0.4 * t3) ** 2) / 0.04)
        hv = h0 * (0.7 + 0.5 * rel**4) + 0.6 * nucleolus + 0.12 * tex
    elif kind.label == 6:  # spindle, stain tapering to the tips
        hv = h0 * (1.0 - 0.25 * u**2) + 0.12 * tex
    elif kind.label == 3:  # dense, homogeneous
        hv = h0 * (1.0 - 0.1 * rel**2) + 0.08 * tex
    elif kind.label == 4:  # clock-face: dark spokes at the rim
        hv = h0 * (0.8 + 0.5 * np.maximum(0.0, _shifted_cos(cs[5], t1)) * rel**2) + 0.12 * tex
    else:  # lobed: 3 lobes (neutrophil) or 2 (eosinophil) around the centre
        n_lobes = 3 if kind.label == 1 else 2
        angles = (t1 + 2 * np.pi * j / n_lobes for j in range(n_lobes))
        lobes = sum(np.exp(-((u - 0.5 * np.cos(t)) ** 2 + (v - 0.5 * np.sin(t)) ** 2) / 0.12) for t in angles)
        hv = h0 * (0.3 + 0.9 * np.minimum(lobes, 1.0)) + 0.12 * tex
    ev = np.broadcast_to(e0 + (0.35 if kind.label == 5 else 0.0), rel.shape)

    inside = in_image & (rel < 1.0)
    nucleus = np.broadcast_to(np.arange(len(p))[:, None, None], rel.shape)
    covered = (flat[inside], nucleus[inside], hv[inside].astype(np.float32), ev[inside].astype(np.float32))
    if kind.label != 5:
        return *covered, np.zeros(0, np.int64), np.zeros(0, np.float32)
    ring = in_image & (rel < _EOSIN_HALO)
    return *covered, flat[ring], (0.9 * (0.6 + 0.4 * np.clip(tex[ring], -1.0, 2.0))).astype(np.float32)


# ----------------------------------------------------------------------------- (c) long tail


def _box(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.maximum(np.abs(u), np.abs(v))


def _triangle(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    normals = np.pi / 2 + 2 * np.pi / 3 * np.arange(3)
    return np.maximum.reduce([u * np.cos(t) + v * np.sin(t) for t in normals]) - 0.45


# Approximate signed distance (negative inside) of each pattern in coordinates normalised by
# its scale; the order is the class order of the long-tail phantoms.
_PATTERN_SDF = {
    "disc": lambda u, v: np.hypot(u, v) - 0.9,
    "square": lambda u, v: _box(u, v) - 0.7,
    "ring": lambda u, v: np.abs(np.hypot(u, v) - 0.72) - 0.2,
    "cross": lambda u, v: np.minimum(
        np.maximum(np.abs(u) - 0.25, np.abs(v) - 0.9), np.maximum(np.abs(v) - 0.25, np.abs(u) - 0.9)
    ),
    "triangle": _triangle,
    "two_blobs": lambda u, v: np.minimum(np.hypot(u - 0.5, v), np.hypot(u + 0.5, v)) - 0.38,
    "bar": lambda u, v: np.maximum(np.abs(u) - 0.95, np.abs(v) - 0.22),
    "frame": lambda u, v: np.abs(_box(u, v) - 0.68) - 0.17,
    "stripes": lambda u, v: np.maximum(np.hypot(u, v) - 0.95, -np.cos(2.6 * np.pi * u) / (2.6 * np.pi)),
    "checker": lambda u, v: np.maximum(
        _box(u, v) - 0.85, -np.sin(2.4 * np.pi * u) * np.sin(2.4 * np.pi * v) / (2.4 * np.pi)
    ),
    "crescent": lambda u, v: np.maximum(np.hypot(u, v) - 0.9, 0.75 - np.hypot(u - 0.45, v)),
    "four_dots": lambda u, v: np.hypot(np.abs(u) - 0.48, np.abs(v) - 0.48) - 0.3,
}
#: Pattern family of each long-tail class, index = label (the first ``C`` are used).
LONGTAIL_PATTERNS: tuple[str, ...] = tuple(_PATTERN_SDF)


def longtail_counts(num_classes: int, n_max: int, imbalance_ratio: float) -> list[int]:
    """Class sizes of a long-tailed subset: ``N_i = N_max * IR^(-i / (C - 1))`` (SPEC section 6).

    Class 0 is the head. Sizes are rounded half up and at least 1; with two classes the
    minority is ``N_max / IR``.

    Args:
        num_classes: ``C >= 2``.
        n_max: size of the head class, ``>= 1``.
        imbalance_ratio: ``IR = N_max / N_min >= 1``.

    Returns:
        ``C`` non-increasing class sizes.

    Example:
        >>> longtail_counts(5, 1000, 100)
        [1000, 316, 100, 32, 10]
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
    if isinstance(n_max, bool) or not isinstance(n_max, (int, np.integer)) or n_max < 1:
        raise ValueError(f"n_max must be an int >= 1, got {n_max!r}")
    is_number = isinstance(imbalance_ratio, (int, float, np.integer, np.floating))
    if not (is_number and 1.0 <= imbalance_ratio < np.inf):
        raise ValueError(f"imbalance_ratio must be a finite number >= 1, got {imbalance_ratio!r}")
    return [
        max(1, int(np.floor(n_max * float(imbalance_ratio) ** (-i / (num_classes - 1)) + 0.5)))
        for i in range(num_classes)
    ]


def longtail_phantoms(counts: Sequence[int], *, size: int | tuple[int, int] = 32, seed: int = 0) -> PhantomSet:
    """Long-tailed classification phantoms: ``counts[c]`` images of pattern family ``c``.

    Each class is one pattern family (``LONGTAIL_PATTERNS``: disc, square, ring, cross, ...)
    drawn at a random position, scale (radius 22-38% of the image), rotation and contrast on a
    smoothly varying background with Gaussian noise of random strength, so the task is
    learnable but not trivial. Labels come in a shuffled order fixed by ``seed``; a balanced
    validation or test set is ``longtail_phantoms([k] * C, seed=other_seed)``.

    Args:
        counts: number of images per class (from :func:`longtail_counts` for a long tail),
            2 to ``len(LONGTAIL_PATTERNS)`` (12) classes.
        size: ``H`` (square) or ``(H, W)``, each at least 8.
        seed: non-negative random seed.

    Returns:
        ``PhantomSet`` with images float32 ``(sum(counts), 1, H, W)``, target int64
        ``(sum(counts),)`` and class names ``LONGTAIL_PATTERNS[:C]``.

    Example:
        >>> ps = longtail_phantoms(longtail_counts(3, 20, 10), size=16, seed=0)
        >>> len(ps), ps.class_names, np.bincount(ps.target).tolist()
        (28, ('disc', 'square', 'ring'), [20, 6, 2])
    """
    seed = _check_seed(seed)
    hw = _check_size(size, 8)
    counts = list(counts)
    if not 2 <= len(counts) <= len(LONGTAIL_PATTERNS):
        raise ValueError(f"counts must have 2 to {len(LONGTAIL_PATTERNS)} classes, got {len(counts)}")
    if any(isinstance(c, bool) or not isinstance(c, (int, np.integer)) or c < 0 for c in counts):
        raise ValueError(f"counts must be non-negative ints, got {counts!r}")
    labels = np.repeat(np.arange(len(counts)), counts)
    labels = np.random.default_rng([seed, _STREAM_LONGTAIL, 0]).permutation(labels)
    images = np.empty((len(labels), 1, *hw), np.float32)
    for start in range(0, len(labels), 4 * _CHUNK):  # small images: larger chunks
        stop = min(len(labels), start + 4 * _CHUNK)
        rngs = [np.random.default_rng([seed, _STREAM_LONGTAIL, 1, i]) for i in range(start, stop)]
        images[start:stop, 0] = _render_longtail(rngs, labels[start:stop], hw)
    return PhantomSet(images, labels.astype(np.int64), LONGTAIL_PATTERNS[: len(counts)])


def _render_longtail(rngs: list[np.random.Generator], labels: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    h, w = hw
    cy, cx = _uniform(rngs, 0.35, 0.65) * h, _uniform(rngs, 0.35, 0.65) * w
    scale = _uniform(rngs, 0.22, 0.38) * min(h, w)
    rot = _uniform(rngs, 0.0, 2 * np.pi)
    contrast = _uniform(rngs, 0.25, 0.6)
    level = _uniform(rngs, 0.15, 0.35)
    sigma = _uniform(rngs, 0.04, 0.14)
    shading = _smooth_noise(rngs, hw, min(h, w) / 2.0)
    noise = _white_noise(rngs, hw)

    dy = np.arange(h, dtype=np.float32)[None, :, None] - cy
    dx = np.arange(w, dtype=np.float32)[None, None, :] - cx
    u = (dx * np.cos(rot) + dy * np.sin(rot)) / scale
    v = (dy * np.cos(rot) - dx * np.sin(rot)) / scale
    alpha = np.empty_like(u)
    for c in np.unique(labels):
        sel = labels == c
        # Anti-aliased fill: the distance in pixels decides the coverage of the boundary pixel.
        sdf = _PATTERN_SDF[LONGTAIL_PATTERNS[c]](u[sel], v[sel])
        alpha[sel] = np.clip(0.5 - sdf * scale[sel], 0.0, 1.0)
    img = level + 0.06 * shading + contrast * alpha + sigma * noise
    return np.clip(img, 0.0, 1.0)
