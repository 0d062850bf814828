"""Run configuration: a YAML file validated into pydantic models with one-line errors.

A config has flat training settings at the top level (``epochs``, ``lr``, ``device``...) and
three sections: ``data`` (which dataset and how to split it), ``model`` (a network name from
:data:`medbalance.nets.NETS` plus its keyword arguments) and ``loss`` (anything
:func:`medbalance.losses.build_loss` accepts).  Every run folder stores the fully resolved
config as ``config.yaml`` so that the run can be repeated, resumed or used for prediction.
"""

from __future__ import annotations

import copy
import inspect
import re
from pathlib import Path
from typing import Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from medbalance._suggest import suggest as _suggest  # re-exported: methods/experiment.py imports it
from medbalance.data.augment import Augment
from medbalance.errors import ConfigError

__all__ = [
    "ConfigError",
    "RunConfig",
    "DataConfig",
    "ModelConfig",
    "MethodConfig",
    "StageConfig",
    "method_of",
    "Evaluation",
    "CrossValidation",
    "load_config",
    "parse_config",
    "apply_overrides",
    "parse_override",
    "dump_config",
]


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


class PythonData(_Segmentation):
    """Datasets given in Python (``medbalance.train(recipe, data=...)``); a resume needs them again."""

    kind: Literal["python"] = "python"
    task: Literal["segmentation", "classification"] = "segmentation"


class _LongtailOption(_Strict):
    # None keeps the source's class sizes; a ratio draws a seeded long-tailed training subset
    # (classification; medbalance.data.longtail.longtail_splits) with its largest class capped at n_max.
    imbalance_ratio: float | None = Field(None, ge=1.0)
    n_max: int | None = Field(None, ge=1)


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


class FolderData(_Segmentation, _Grouping, _LongtailOption):
    """A folder in the generic layout of SPEC section 8.

    Segmentation: ``images/`` and ``masks/`` matched by file stem. Classification: one
    sub-folder per class. ``val_fraction`` / ``test_fraction`` split it with ``seed`` (by
    subject when ``groups`` is set).
    """

    kind: Literal["folder"] = "folder"
    path: str
    task: Literal["segmentation", "classification"] = "segmentation"
    size: int | None = Field(None, ge=8)
    channels: Literal[1, 3] = 1
    val_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    test_fraction: float = Field(0.0, ge=0.0, lt=1.0)
    seed: int = 0
    cache: bool = True  # decoded + resized arrays memory-mapped from $MEDBALANCE_CACHE (medbalance.data.cache)


class CamusData(_Segmentation, _Split):
    """CAMUS echocardiography in its published per-patient layout (seed 000); split by patient."""

    kind: Literal["camus"] = "camus"
    path: str
    views: list[Literal["2CH", "4CH"]] = ["2CH", "4CH"]
    phases: list[Literal["ED", "ES"]] = ["ED", "ES"]
    label: int = Field(1, ge=1, le=3)  # 1 LV endocardium, 2 myocardium, 3 left atrium
    size: int | None = Field(None, ge=8)  # None: native frames (aspect and spacing kept)
    scale: float = Field(1.0, gt=0.0, le=4.0)  # resample native frames by this factor (aspect kept)
    val_fraction: float = Field(0.1, gt=0.0, lt=1.0)


class ConicData(_Segmentation, _Split):
    """CoNIC / Lizard: ``images.npy`` (N, 256, 256, 3) and ``labels.npy`` (instance, class)."""

    kind: Literal["conic"] = "conic"
    path: str
    size: int | None = Field(None, ge=8)
    val_fraction: float = Field(0.1, gt=0.0, lt=1.0)
    test_fraction: float = Field(0.1, ge=0.0, lt=1.0)


class MonusacData(_Segmentation, _Split):
    """MoNuSAC: per-image XML polygons, rasterised once into ``cache``."""

    kind: Literal["monusac"] = "monusac"
    path: str
    cache: str | None = None
    size: int | None = Field(None, ge=8)  # None: native size (the seed resized to 512)
    val_fraction: float = Field(0.1, gt=0.0, lt=1.0)
    test_fraction: float = Field(0.1, ge=0.0, lt=1.0)


class NnunetData(_Segmentation, _Grouping):
    """nnU-Net v2's raw layout: ``imagesTr/<case>_<XXXX>``, ``labelsTr/<case>``, ``dataset.json``.

    Split seeded by ``val_fraction`` / ``test_fraction`` (by subject with ``groups``), or fold
    ``fold`` of the dataset folder's ``splits_final.json`` (its train / val; no test split).
    """

    kind: Literal["nnunet"] = "nnunet"
    path: str
    val_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    test_fraction: float = Field(0.0, ge=0.0, lt=1.0)
    seed: int = 0
    fold: int | None = Field(None, ge=0)
    cache: bool = True  # decoded arrays memory-mapped from $MEDBALANCE_CACHE (medbalance.data.cache)


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


#: The network input side of seed 001's classification protocol (section 4.2).
SEED001_SIZE = 224


class BreakhisData(_LongtailOption, _Split, _Protocol):
    """BreaKHis folder tree (8 tumour types); split by patient (``protocol: seed001``: by image,
    80 per class for validation and test, random 224 x 224 training crops of 350 x 230 images)."""

    kind: Literal["breakhis"] = "breakhis"
    path: str
    magnification: Literal["all", "40X", "100X", "200X", "400X"] = "all"
    size: int = Field(64, ge=8)
    channels: Literal[1, 3] = 3
    val_fraction: float = Field(0.1, gt=0.0, lt=1.0)


class ChestXrayData(_LongtailOption, _Protocol):
    """Kermany chest X-ray layout ``chest_xray/{train,val,test}/{NORMAL,PNEUMONIA}`` (``protocol:
    seed001``: 1/4 scale, centre crop, 1/2 scale to 224 x 224, the whole official test split)."""

    kind: Literal["chestxray"] = "chestxray"
    path: str
    size: int = Field(64, ge=8)
    channels: Literal[1, 3] = 1
    seed: int = 0


class MedmnistData(_LongtailOption):
    """A MedMNIST ``.npz`` file with its own train / val / test split."""

    kind: Literal["medmnist"] = "medmnist"
    path: str
    seed: int = 0


class SharedData(_Segmentation, _Split, _LongtailOption):
    """A dataset of ``../shared/data`` (or ``$MEDBALANCE_DATA``) by folder name."""

    kind: Literal["shared"] = "shared"
    name: str
    size: int | None = Field(None, ge=8)
    channels: Literal[1, 3] | None = None


DataConfig = Union[
    IntraclassPhantomData,
    NucleiPhantomData,
    Phantom3DData,
    LongtailPhantomData,
    FolderData,
    NnunetData,
    CamusData,
    ConicData,
    MonusacData,
    BreakhisData,
    ChestXrayData,
    MedmnistData,
    SharedData,
    PythonData,
]
_DATA_KINDS: dict[str, type[BaseModel]] = {
    "intraclass_phantom": IntraclassPhantomData,
    "nuclei_phantom": NucleiPhantomData,
    "phantom3d": Phantom3DData,
    "longtail_phantom": LongtailPhantomData,
    "folder": FolderData,
    "nnunet": NnunetData,
    "camus": CamusData,
    "conic": ConicData,
    "monusac": MonusacData,
    "breakhis": BreakhisData,
    "chestxray": ChestXrayData,
    "medmnist": MedmnistData,
    "shared": SharedData,
    "python": PythonData,
}
_CLASSIFICATION_KINDS = (LongtailPhantomData, BreakhisData, ChestXrayData, MedmnistData)


class Evaluation(_Strict):
    """How validation, ``evaluate`` and ``predict`` infer and score native-size images.

    ``overlap`` and ``flip_tta`` set the sliding window (window = the run's ``patch_size``,
    Gaussian weights); ``empty`` is the per-case table's policy for a class absent from a
    case's ground truth (``skip``: left out of the means; ``one`` / ``zero``: scored so);
    ``tolerance`` is the normalised surface Dice tolerance in physical units (mm, or pixels
    without spacing); ``surface: false`` skips HD95 / NSD (they cost distance transforms).
    """

    overlap: float = Field(0.5, ge=0.0, lt=1.0)
    flip_tta: bool = False
    empty: Literal["skip", "one", "zero"] = "skip"
    tolerance: float = Field(1.0, gt=0.0)
    surface: bool = True


DEFAULT_FOLDS = 5


class CrossValidation(_Strict):
    """k-fold cross-validation over the data's train + val pool (docs/cross-validation.md).

    The pool is cut into ``folds`` folds (by group where the data has groups), seeded by
    ``seed``, or read from ``splits``: an nnU-Net ``splits_final.json``. ``fold`` is the fold
    a run trains (its validation split; ``--fold K``); ``None`` trains them all.
    """

    folds: int | None = Field(None, ge=2)  # None: 5, or as many as `splits` lists
    seed: int = 0
    splits: str | None = None
    fold: int | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _fold_exists(self) -> "CrossValidation":
        folds = self.folds or DEFAULT_FOLDS
        if self.fold is not None and self.splits is None and self.fold >= folds:  # a file's count is known later
            raise ValueError(f"fold {self.fold} does not exist: {folds} folds are 0 to {folds - 1}")
        return self


class StageConfig(_Strict):
    """One stage of a recipe (``stages:``): what trains, with which loss, for how long.

    ``loss`` defaults to the run's ``loss``; ``trainable`` / ``frozen`` are parameter-name
    prefixes (``None``: every parameter not frozen); ``batches`` picks the training batches
    of whole images (``shuffle``; ``class_balanced``; ``reversed``: inverse class frequency;
    ``bilateral``: a shuffled half then a reversed half, BBN; ``foreground``: nnU-Net's
    ``foreground_fraction`` of each batch holding foreground; patch training draws its batches
    by ``sampler`` instead); ``select_best: false`` keeps the stage's epochs
    out of ``best.pt`` (its outputs are not the final model's yet); ``target`` is the batch key
    the loss compares against (``null``: the whole batch, for a method's multi-target loss).
    """

    name: str
    epochs: int = Field(ge=1)
    loss: Any = None
    trainable: list[str] | None = None
    frozen: list[str] = []
    lr: float | None = Field(None, gt=0.0)
    monitor: str | None = None
    batches: Literal["shuffle", "class_balanced", "reversed", "bilateral", "foreground"] = "shuffle"
    select_best: bool = True
    target: str | None = "target"


class MethodConfig(BaseModel):
    """``name`` picks a method of :data:`medbalance.methods.METHODS`; every other key is its option."""

    model_config = ConfigDict(extra="allow")
    name: str = "plain"


class ModelConfig(BaseModel):
    """``name`` picks the network; every other key is passed to its constructor."""

    model_config = ConfigDict(extra="allow")
    name: str = "unet"


class RunConfig(_Strict):
    """Everything one training run needs. Defaults follow SPEC section 5.6 (Adam, cosine)."""

    name: str = "run"
    seed: int = 0
    deterministic: bool = True
    epochs: int = Field(20, ge=1)
    batch_size: int = Field(8, ge=1)
    eval_batch_size: int | None = Field(None, ge=1)
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = Field(1e-3, gt=0.0)
    lr_min: float = Field(0.0, ge=0.0)
    weight_decay: float = Field(1e-4, ge=0.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    scheduler: Literal["cosine", "none"] = "cosine"
    monitor: str | None = None
    threshold: float = Field(0.5, gt=0.0, lt=1.0)
    device: Literal["auto", "cpu", "cuda", "gpu", "mps"] = "auto"
    precision: Literal["32", "32-true", "bf16-mixed", "16-mixed"] = "32"
    devices: int | str = 1
    num_nodes: int = Field(1, ge=1)
    strategy: str = "auto"
    num_workers: int = Field(0, ge=0)
    # memory layout of a 2D network and its inputs; auto: the network's prefers_channels_last on CPU
    channels_last: Literal["auto", True, False] = "auto"
    progress: bool = True
    # native geometry: random patches for training, sliding windows for inference (segmentation).
    # auto: whole images when every training image has one shape within the cap (128 px 2D,
    # 64 voxels 3D), else patches of the median shape clipped to the cap; null: whole images.
    patch_size: Literal["auto"] | int | list[int] | None = "auto"
    sampler: Literal["uniform", "foreground", "rare_class"] = "foreground"  # patch centres (docs/native.md)
    foreground_fraction: float = Field(0.33, ge=0.0, le=1.0)  # forced share of each batch
    sampler_power: float = Field(0.5, ge=0.0)  # rare_class: P(class) ~ frequency^-power
    steps_per_epoch: int | None = Field(None, ge=1)  # patch batches per epoch (None: 100)
    evaluation: Evaluation = Field(default_factory=Evaluation)
    cv: CrossValidation | None = None  # k-fold cross-validation (None: the data's own split)
    data: DataConfig = Field(default_factory=IntraclassPhantomData, discriminator="kind")
    model: ModelConfig = Field(default_factory=ModelConfig)
    loss: Any = "dice_ce"
    # a recipe: the method's hooks and the ordered stages (none listed: the method's default stages)
    method: MethodConfig = Field(default_factory=MethodConfig)
    stages: list[StageConfig] | None = None
    augment: Augment = Field(default_factory=Augment)  # training batches only; all off by default

    @model_validator(mode="before")
    @classmethod
    def _seed001_crop(cls, raw: Any) -> Any:
        # BreaKHis under seed 001 trains on random size x size crops of its 350 x 230 images
        # (section 4.2): the batch augmentation's crop, unless the config sets one (or null).
        if not isinstance(raw, dict):
            return raw
        data = raw.get("data")
        fields = data if isinstance(data, dict) else getattr(data, "__dict__", {})
        if fields.get("kind") != "breakhis" or fields.get("protocol") != "seed001":
            return raw
        augment = raw.get("augment", {})
        if isinstance(augment, Augment):
            augment = augment.model_dump(exclude_unset=True)
        if not isinstance(augment, dict) or "crop" in augment:
            return raw
        return {**raw, "augment": {**augment, "crop": fields.get("size", SEED001_SIZE)}}

    @field_validator("precision", mode="before")
    @classmethod
    def _precision_as_text(cls, value: Any) -> Any:
        # YAML reads `precision: 32` as an int.
        return str(value) if isinstance(value, int) else value

    @property
    def task(self) -> str:
        if isinstance(self.data, (FolderData, PythonData)):
            return self.data.task
        if isinstance(self.data, SharedData):
            from medbalance.data.catalog import shared_task

            return shared_task(self.data.name)
        return "classification" if isinstance(self.data, _CLASSIFICATION_KINDS) else "segmentation"


def _check_keys(raw: dict, model: type[BaseModel], source: str, section: str) -> None:
    fields = list(model.model_fields)
    where = f" under '{section}'" if section else ""
    for key in raw:
        if key not in fields:
            raise ConfigError(f"unknown key '{key}'{where} in {source}{_suggest(str(key), fields)}")


def _check_unknown_keys(raw: dict, source: str) -> None:
    """Reject unknown keys before pydantic so the message can name the key and a suggestion."""
    _check_keys(raw, RunConfig, source, "")
    if isinstance(raw.get("augment"), dict):
        _check_keys(raw["augment"], Augment, source, "augment")
    if isinstance(raw.get("evaluation"), dict):
        _check_keys(raw["evaluation"], Evaluation, source, "evaluation")
    if isinstance(raw.get("cv"), dict):
        _check_keys(raw["cv"], CrossValidation, source, "cv")
    for i, stage in enumerate(raw.get("stages") or []):
        if isinstance(stage, dict):
            _check_keys(stage, StageConfig, source, f"stages[{i}]")
    data = raw.get("data")
    if isinstance(data, dict):
        kind = data.get("kind", "intraclass_phantom")
        if kind not in _DATA_KINDS:
            raise ConfigError(
                f"invalid value for 'data.kind' in {source}: got '{kind}'{_suggest(str(kind), list(_DATA_KINDS))}"
            )
        _check_keys(data, _DATA_KINDS[kind], source, "data")


def _format_validation_error(err: ValidationError, source: str) -> str:
    first = err.errors()[0]
    loc = ".".join(str(part) for part in first["loc"] if part not in _DATA_KINDS)
    got = first.get("input")
    got_text = f", got {got!r}" if not isinstance(got, dict) else ""
    return f"invalid value for '{loc}' in {source}: {first['msg'].lower()}{got_text}"


def _check_model_kwargs(cfg: RunConfig, source: str) -> None:
    from medbalance.nets import NETS

    name = cfg.model.name
    if name not in NETS:
        raise ConfigError(f"unknown model '{name}' in {source}{_suggest(name, list(NETS))}")
    params = inspect.signature(NETS[name]).parameters
    for key in cfg.model.model_extra or {}:
        if key not in params:
            raise ConfigError(f"unknown key '{key}' under 'model' in {source}{_suggest(key, list(params))}")


def _check_loss(cfg: RunConfig, source: str) -> None:
    from medbalance.losses import MissingClassCounts, build_loss

    specs = [("loss", cfg.loss)] + [(f"stages[{i}].loss", s.loss) for i, s in enumerate(cfg.stages or [])]
    for key, spec in specs:
        if spec is None or (key != "loss" and _method_loss(cfg, spec)):
            continue
        try:
            build_loss(spec)
        except MissingClassCounts:
            pass  # the run counts the classes of its training split
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"invalid '{key}' in {source}: {exc}") from None


def _method_loss(cfg: RunConfig, spec: Any) -> bool:
    """Whether ``spec`` names a loss of the run's method (checked when the method builds it)."""
    name = spec.get("name") if isinstance(spec, dict) else spec
    return isinstance(name, str) and name in method_of(cfg).named_losses()


def method_of(cfg: RunConfig):
    """The :class:`~medbalance.engine.hooks.Method` of a recipe, options validated.

    Raises:
        ConfigError: an unknown method name (with a suggestion) or an invalid option.
    """
    from medbalance.methods import METHODS, method_class

    name = cfg.method.name
    if name not in METHODS:
        raise ConfigError(f"unknown method '{name}'{_suggest(name, list(METHODS))}")
    cls = method_class(name)
    options = dict(cfg.method.model_extra or {})
    _check_keys(options, cls.Options, "the recipe", "method")
    try:
        return cls(cls.Options.model_validate(options))
    except ValidationError as err:
        first = err.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        raise ConfigError(
            f"invalid value for 'method.{key}': {first['msg'].lower()}, got {first.get('input')!r}"
        ) from None


def parse_config(raw: dict | None, *, source: str = "config") -> RunConfig:
    """Validate a plain dict (as read from YAML) into a :class:`RunConfig`.

    Raises:
        ConfigError: one line naming the key, what was expected and what was found.
    """
    raw = dict(raw or {})
    if not all(isinstance(k, str) for k in raw):
        raise ConfigError(f"{source} must be a mapping of names to values")
    _check_unknown_keys(raw, source)
    try:
        cfg = RunConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err, source)) from None
    _check_model_kwargs(cfg, source)
    method_of(cfg)
    _check_loss(cfg, source)
    return cfg


def read_yaml(path: str | Path) -> dict:
    """Read a YAML mapping safely (``yaml.safe_load``: no object construction)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file '{path}' does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file '{path}': {exc}") from None
    try:
        raw = yaml.safe_load(text)
    except RecursionError:
        raise ConfigError(f"{path.name} is nested too deeply to be a config") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path.name} is not valid YAML{where}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path.name} must hold a mapping of keys to values, found {type(raw).__name__}")
    return raw


def parse_override(item: str) -> tuple[str, Any]:
    """Split one ``--set`` item ``key=value`` into the key and its value read as YAML.

    Example:
        >>> parse_override("train.epochs=3"), parse_override("nets=[unet, cenet]")
        (('train.epochs', 3), ('nets', ['unet', 'cenet']))

    Raises:
        ConfigError: no ``=``, an empty key, or a value YAML cannot read.
    """
    key, sep, text = item.partition("=")
    if not sep or not key:
        raise ConfigError(f"--set expects key=value, got '{item}'")
    try:
        return key, yaml.safe_load(text)
    except (yaml.YAMLError, RecursionError):  # deeply nested brackets overflow the YAML parser
        raise ConfigError(f"--set {key}: cannot parse value '{text}'") from None


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Apply ``key=value`` / ``section.key=value`` overrides; values are parsed as YAML scalars."""
    out = copy.deepcopy(raw) or {}
    for item in overrides:
        key, value = parse_override(item)
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"--set {key}: '{part}' is not a section")
            node = child
        node[leaf] = value
    return out


def load_config(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """Read, override and validate a YAML config file."""
    raw = apply_overrides(read_yaml(path), overrides or [])
    return parse_config(raw, source=Path(path).name)


def dump_config(cfg: RunConfig) -> str:
    """The fully resolved config as YAML text (what ``config.yaml`` in a run folder holds)."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
