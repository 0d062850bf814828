"""The real public datasets of ``../shared/data`` by folder name (``data: {kind: shared, name: ...}``).

The folder is ``$MEDBALANCE_DATA`` when set, else ``shared/data`` beside the checkout or the
current folder. Nothing is copied: every loader reads the files where they lie.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Literal

from pydantic import Field

from medbalance.data.datasets import Splits
from medbalance.data.schema import Reader, _LongtailOption, _Segmentation, _Split
from medbalance.errors import DataError

__all__ = ["SHARED_LOADERS", "SHARED_TASKS", "SharedData", "SHARED", "shared_data_dir", "shared_task", "build_shared"]


class SharedData(_Segmentation, _Split, _LongtailOption):
    """A dataset of ``../shared/data`` (or ``$MEDBALANCE_DATA``) by folder name."""

    kind: Literal["shared"] = "shared"
    name: str
    size: int | None = Field(None, ge=8)
    channels: Literal[1, 3] | None = None


# folder name -> "module:function"; each function is ``load(root, data: SharedData) -> Splits``.
SHARED_LOADERS: dict[str, str] = {
    "drive": "medbalance.data.readers.binary_sets:load_drive",
    "isbi2012_em_membrane": "medbalance.data.readers.binary_sets:load_isbi2012_em_membrane",
    "hc18_subset": "medbalance.data.readers.binary_sets:load_hc18_subset",
    "kvasir_seg_mini": "medbalance.data.readers.binary_sets:load_kvasir_seg_mini",
    "consep_patches256": "medbalance.data.readers.nuclei:load_consep",
    "pneumoniamnist": "medbalance.data.readers.classification:load_medmnist_shared",
    "breastmnist": "medbalance.data.readers.classification:load_medmnist_shared",
}
SHARED_TASKS: dict[str, str] = {
    "drive": "segmentation",
    "isbi2012_em_membrane": "segmentation",
    "hc18_subset": "segmentation",
    "kvasir_seg_mini": "segmentation",
    "consep_patches256": "segmentation",
    "pneumoniamnist": "classification",
    "breastmnist": "classification",
}


def shared_data_dir() -> Path | None:
    """Where the shared datasets are, or ``None`` when there are none on this machine."""
    env = os.environ.get("MEDBALANCE_DATA")
    candidates = [Path(env)] if env else []
    candidates += [Path(__file__).resolve().parents[4] / "shared" / "data", Path.cwd().parent / "shared" / "data"]
    return next((c for c in candidates if c.is_dir()), None)


def _known(name: str) -> None:
    if name not in SHARED_LOADERS:
        raise DataError(f"unknown shared dataset '{name}' (expected one of: {', '.join(sorted(SHARED_LOADERS))})")


def shared_task(name: str) -> str:
    """``"segmentation"`` or ``"classification"`` for a shared dataset name."""
    _known(name)
    return SHARED_TASKS[name]


def build_shared(data: SharedData) -> Splits:
    """Splits of the shared dataset ``data.name``.

    Raises:
        DataError: unknown name, or the shared data folder / this dataset is absent.
    """
    _known(data.name)
    base = shared_data_dir()
    if base is None or not (base / data.name).is_dir():
        where = base if base is not None else "../shared/data"
        raise DataError(f"shared dataset '{data.name}' not found under {where} (set MEDBALANCE_DATA)")
    module, _, function = SHARED_LOADERS[data.name].partition(":")
    return getattr(importlib.import_module(module), function)(base / data.name, data)


SHARED = Reader(SharedData, build_shared, lambda data: shared_task(data.name))
