"""The pieces every data reader's config schema is built from, and :class:`Reader`.

A reader module (``data/readers/*.py``, ``data/folder.py``, ``data/catalog.py``) defines the
pydantic model of its ``data:`` section next to its builder from these mixins, and declares
one :class:`Reader` per ``data.kind``; :data:`medbalance.data.kinds.KINDS` lists them and
:mod:`medbalance.config` builds its ``data`` union from that list. This module imports
pydantic only, so that a schema never needs the arrays code to be defined.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = ["Reader", "SEED001_SIZE", "section_task"]

#: The network input side of seed 001's classification protocol (section 4.2).
SEED001_SIZE = 224


@dataclass(frozen=True)
class Reader:
    """One ``data.kind``: the schema of its ``data:`` section, its builder and its task.

    Args:
        schema: the pydantic model of the section (its ``kind`` field a one-value ``Literal``).
        build: ``build(data) -> Splits`` for a validated section.
        task: ``"segmentation"`` or ``"classification"``, or ``task(data) -> str`` where the
            section decides (folder's ``task`` key, a shared dataset's name).

    Example:
        >>> class Toy(_Strict):
        ...     kind: Literal["toy"] = "toy"
        >>> Reader(Toy, build=print, task="classification").task_of(Toy())
        'classification'
    """

    schema: type[BaseModel]
    build: Callable[[Any], Any]
    task: str | Callable[[Any], str]

    def task_of(self, data: BaseModel) -> str:
        """``"segmentation"`` or ``"classification"`` for a validated ``data`` section of this kind."""
        return self.task if isinstance(self.task, str) else self.task(data)


def section_task(data: Any) -> str:
    """The task a section names in its own ``task`` key (folder, python)."""
    return data.task


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class _Segmentation(_Strict):
    """Fields every segmentation source shares."""

    binary: bool = False  # collapse every foreground class into one (seed 002's binary model)
    # intensity normalisation of native-size images, fitted on the train split (medbalance.data.normalization)
    normalization: Literal["auto", "none", "uint8", "ct", "zscore"] = "auto"
    ignore_index: int | None = Field(None, ge=0, le=255)  # a mask label that is neither trained on nor scored
    train_limit: int | None = Field(None, ge=1)  # train on a seeded subset of this many training images
    # one name per class, background first; replaces the reader's names (checked against the data's classes)
    classes: list[str] | None = None
    # resample to one spacing (docs/native.md): keep (native), median (nnU-Net's rule on the train split) or
    # one value per array axis ([sy, sx] / [sz, sy, sx]; 1 per axis for data without a spacing, e.g. PNG)
    spacing: Literal["keep", "median"] | list[float] = "keep"

    @field_validator("spacing", mode="before")
    @classmethod
    def _spacing(cls, value: Any) -> Any:
        if value in ("keep", "median"):
            return value
        numbers = isinstance(value, list) and all(type(v) in (int, float) for v in value)  # not bool
        if numbers and len(value) in (2, 3) and all(0 < v < float("inf") for v in value):
            return value
        raise ValueError("expected keep, median or 2 or 3 positive spacings")

    @field_validator("classes")
    @classmethod
    def _names(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and (len(value) < 2 or len(set(value)) != len(value) or not all(v.strip() for v in value)):
            raise ValueError(f"expected at least two distinct non-empty class names, found {value}")
        return value


class _Grouping(_Strict):
    # subjects kept in one split: a regex with one capture group on each case's file stem, or a CSV `case,group`
    groups: str | None = None

    @field_validator("groups")
    @classmethod
    def _pattern(cls, value: str | None) -> str | None:
        if value is None or value.lower().endswith(".csv"):
            return value
        try:
            groups = re.compile(value).groups
        except re.error as exc:
            raise ValueError(f"expected a regular expression or a .csv path, found {value!r} ({exc})") from None
        if groups != 1:
            raise ValueError(f"expected a regular expression with one capture group, found {groups} in {value!r}")
        return value


class _Split(_Strict):
    val_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    test_fraction: float = Field(0.2, ge=0.0, lt=1.0)
    seed: int = 0


class _LongtailOption(_Strict):
    # None keeps the source's class sizes; a ratio draws a seeded long-tailed training subset
    # (classification; medbalance.data.longtail.longtail_splits) with its largest class capped at n_max.
    imbalance_ratio: float | None = Field(None, ge=1.0)
    n_max: int | None = Field(None, ge=1)
    # with a ratio: the test split subsampled to balanced classes (seed 001); false keeps it whole, so runs of
    # every seed score the same test images (paired comparisons, medbalance.experiments.stats)
    balanced_test: bool = True


class _Protocol(_Strict):
    # default: the reader's own split and square resize; seed001: seed 001's recipe (section 4.2,
    # medbalance.data.readers.classification), where `size` (then 224 by default) is the network input side
    protocol: Literal["default", "seed001"] = "default"
    eval_per_class: int = Field(80, ge=1)  # seed001: images per class of the balanced validation (and test) sets

    @model_validator(mode="before")
    @classmethod
    def _seed001_size(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("protocol") == "seed001" and "size" not in data:
            data = {**data, "size": SEED001_SIZE}
        return data

    @model_validator(mode="after")
    def _per_class_needs_protocol(self) -> "_Protocol":
        if "eval_per_class" in self.model_fields_set and self.protocol != "seed001":
            raise ValueError(f"eval_per_class applies to protocol 'seed001' only (protocol is '{self.protocol}')")
        return self
