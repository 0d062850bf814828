"""Every ``data.kind``: its schema, builder and task (:data:`KINDS`), and the ``python`` kind.

Adding a data source means a schema class and a builder in its reader module (see
:mod:`medbalance.data.schema`) and one entry here; :mod:`medbalance.config` builds the
``data`` union and its "did you mean" list from this dict, :func:`medbalance.data.build.build_splits`
dispatches through it and :attr:`medbalance.config.RunConfig.task` asks it.

Example:
    >>> KINDS["camus"].schema.__name__, KINDS["camus"].task_of(KINDS["camus"].schema(path="x"))
    ('CamusData', 'segmentation')
"""

from __future__ import annotations

from typing import Literal

from medbalance.data.catalog import SHARED
from medbalance.data.folder import FOLDER
from medbalance.data.readers.camus import CAMUS
from medbalance.data.readers.classification import BREAKHIS, CHESTXRAY, MEDMNIST
from medbalance.data.readers.nnunet import NNUNET
from medbalance.data.readers.nuclei import CONIC, MONUSAC
from medbalance.data.readers.phantoms import INTRACLASS, LONGTAIL, NUCLEI, PHANTOM3D
from medbalance.data.schema import Reader, _Segmentation, section_task
from medbalance.errors import ConfigError

__all__ = ["KINDS", "PythonData", "PYTHON"]


class PythonData(_Segmentation):
    """Datasets given in Python (``medbalance.train(recipe, data=...)``); a resume needs them again."""

    kind: Literal["python"] = "python"
    task: Literal["segmentation", "classification"] = "segmentation"


def _given_in_python(data: PythonData):
    raise ConfigError("this run's data was given in Python (data.kind: python); pass the same data again")


PYTHON = Reader(PythonData, _given_in_python, section_task)

#: ``data.kind`` -> its :class:`~medbalance.data.schema.Reader`, in the order the docs list them.
KINDS: dict[str, Reader] = {
    "intraclass_phantom": INTRACLASS,
    "nuclei_phantom": NUCLEI,
    "phantom3d": PHANTOM3D,
    "longtail_phantom": LONGTAIL,
    "folder": FOLDER,
    "nnunet": NNUNET,
    "camus": CAMUS,
    "conic": CONIC,
    "monusac": MONUSAC,
    "breakhis": BREAKHIS,
    "chestxray": CHESTXRAY,
    "medmnist": MEDMNIST,
    "shared": SHARED,
    "python": PYTHON,
}
