"""The embedded phantom kinds (``intraclass_phantom``, ``nuclei_phantom``, ``phantom3d``,
``longtail_phantom``): their ``data:`` schemas and builders over :mod:`medbalance.data.phantoms`
and :mod:`medbalance.data.phantom3d`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from medbalance.data import phantoms
from medbalance.data.datasets import ArrayDataset, Splits
from medbalance.data.phantom3d import PHANTOM3D_CLASSES, organ_lesion_phantoms
from medbalance.data.schema import Reader, _Segmentation, _Strict
from medbalance.metrics.evaluation import RegionRecall

__all__ = [
    "IntraclassPhantomData",
    "NucleiPhantomData",
    "Phantom3DData",
    "LongtailPhantomData",
    "build_segmentation_phantoms",
    "build_phantom3d",
    "build_longtail_phantoms",
    "INTRACLASS",
    "NUCLEI",
    "PHANTOM3D",
    "LONGTAIL",
]

# Phantom splits use disjoint seed streams so that validation/test never share an image with train.
_SPLIT_OFFSETS = {"train": 0, "val": 1_000_003, "test": 2_000_003}


class _SegmentationPhantoms(_Segmentation):
    size: int = Field(96, ge=16)
    n_train: int = Field(160, ge=1)
    n_val: int = Field(32, ge=1)
    n_test: int = Field(32, ge=0)
    seed: int = 0


class IntraclassPhantomData(_SegmentationPhantoms):
    """Binary target with a faded minority sub-region (SPEC 8a)."""

    kind: Literal["intraclass_phantom"] = "intraclass_phantom"


class NucleiPhantomData(_SegmentationPhantoms):
    """Seven-class nuclei with CoNIC class fractions (SPEC 8b)."""

    kind: Literal["nuclei_phantom"] = "nuclei_phantom"
    size: int = Field(128, ge=16)


class Phantom3DData(_Segmentation):
    """3D CT-like volumes: a small lesion (<= 0.1% of voxels) inside an organ, native geometry."""

    kind: Literal["phantom3d"] = "phantom3d"
    shape: tuple[int, int, int] = (32, 64, 64)  # typical (D, H, W); each volume varies by up to 25%
    n_train: int = Field(24, ge=1)
    n_val: int = Field(6, ge=1)
    n_test: int = Field(6, ge=0)
    lesion_share: float = Field(0.8, ge=0.0, le=1.0)
    seed: int = 0


class LongtailPhantomData(_Strict):
    kind: Literal["longtail_phantom"] = "longtail_phantom"
    size: int = Field(32, ge=8)
    num_classes: int = Field(8, ge=2)
    n_max: int = Field(200, ge=1)
    imbalance_ratio: float = Field(50.0, ge=1.0)
    n_val_per_class: int = Field(20, ge=1)
    n_test_per_class: int = Field(20, ge=0)
    seed: int = 0


def _from_phantoms(ps: phantoms.PhantomSet, num_classes: int) -> ArrayDataset:
    if ps.regions is None:
        return ArrayDataset(ps.images, ps.target, num_classes=num_classes, class_names=ps.class_names)
    # the intra-class phantom scores the recall of its majority and minority sub-regions
    return ArrayDataset(
        ps.images,
        ps.target,
        num_classes=num_classes,
        class_names=ps.class_names,
        extras={"regions": ps.regions},
        scorers=(RegionRecall,),
    )


def build_segmentation_phantoms(data: IntraclassPhantomData | NucleiPhantomData) -> Splits:
    """Intra-class or nuclei phantom splits of ``data.size`` pixels, each split its own seed stream."""
    make = phantoms.intraclass_phantoms if isinstance(data, IntraclassPhantomData) else phantoms.nuclei_phantoms
    sets = {
        split: make(n, size=data.size, seed=data.seed + _SPLIT_OFFSETS[split])
        for split, n in (("train", data.n_train), ("val", data.n_val), ("test", data.n_test))
        if n > 0
    }
    num_classes = len(sets["train"].class_names)
    out = {k: _from_phantoms(v, num_classes) for k, v in sets.items()}
    return Splits(out["train"], out["val"], out.get("test"), info={"source": data.kind})


def build_phantom3d(data: Phantom3DData) -> Splits:
    """CT-like volume splits of varying shapes around ``data.shape``, with their spacings."""
    sets = {
        split: organ_lesion_phantoms(
            n, shape=data.shape, lesion_share=data.lesion_share, seed=data.seed + _SPLIT_OFFSETS[split]
        )
        for split, n in (("train", data.n_train), ("val", data.n_val), ("test", data.n_test))
        if n > 0
    }
    out = {
        k: ArrayDataset(v.images, v.target, num_classes=3, class_names=PHANTOM3D_CLASSES, spacing=v.spacing)
        for k, v in sets.items()
    }
    return Splits(out["train"], out["val"], out.get("test"), info={"source": data.kind})


def build_longtail_phantoms(data: LongtailPhantomData) -> Splits:
    """A long-tailed training split at ``data.imbalance_ratio`` and balanced validation / test splits."""
    counts = phantoms.longtail_counts(data.num_classes, data.n_max, data.imbalance_ratio)
    train = phantoms.longtail_phantoms(counts, size=data.size, seed=data.seed)
    val = phantoms.longtail_phantoms(
        [data.n_val_per_class] * data.num_classes, size=data.size, seed=data.seed + _SPLIT_OFFSETS["val"]
    )
    test = None
    if data.n_test_per_class:
        test = phantoms.longtail_phantoms(
            [data.n_test_per_class] * data.num_classes, size=data.size, seed=data.seed + _SPLIT_OFFSETS["test"]
        )
    num_classes = data.num_classes
    return Splits(
        _from_phantoms(train, num_classes),
        _from_phantoms(val, num_classes),
        _from_phantoms(test, num_classes) if test is not None else None,
        info={"source": data.kind, "class_counts": counts, "imbalance_ratio": data.imbalance_ratio},
    )


INTRACLASS = Reader(IntraclassPhantomData, build_segmentation_phantoms, "segmentation")
NUCLEI = Reader(NucleiPhantomData, build_segmentation_phantoms, "segmentation")
PHANTOM3D = Reader(Phantom3DData, build_phantom3d, "segmentation")
LONGTAIL = Reader(LongtailPhantomData, build_longtail_phantoms, "classification")
