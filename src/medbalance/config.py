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
from pathlib import Path
from typing import Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from medbalance._suggest import suggest as _suggest  # re-exported: experiments/runner.py imports it
from medbalance.data.augment import Augment
from medbalance.data.catalog import SharedData
from medbalance.data.folder import FolderData
from medbalance.data.kinds import KINDS, PythonData
from medbalance.data.readers.camus import CamusData
from medbalance.data.readers.classification import BreakhisData, ChestXrayData, MedmnistData
from medbalance.data.readers.nnunet import NnunetData
from medbalance.data.readers.nuclei import ConicData, MonusacData
from medbalance.data.readers.phantoms import (
    IntraclassPhantomData,
    LongtailPhantomData,
    NucleiPhantomData,
    Phantom3DData,
)
from medbalance.data.schema import SEED001_SIZE, _Strict
from medbalance.errors import ConfigError

__all__ = [
    "ConfigError",
    "RunConfig",
    "DataConfig",
    # each data kind's schema, defined beside its reader (medbalance.data.kinds), re-exported here
    "IntraclassPhantomData",
    "NucleiPhantomData",
    "Phantom3DData",
    "LongtailPhantomData",
    "FolderData",
    "NnunetData",
    "CamusData",
    "ConicData",
    "MonusacData",
    "BreakhisData",
    "ChestXrayData",
    "MedmnistData",
    "SharedData",
    "PythonData",
    "SEED001_SIZE",
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


DataConfig = Union[tuple(reader.schema for reader in KINDS.values())]  # discriminated by `kind`
_DATA_KINDS: dict[str, type[BaseModel]] = {kind: reader.schema for kind, reader in KINDS.items()}


class Evaluation(_Strict):
    """How validation, ``evaluate`` and ``predict`` infer and score native-size images.

    ``overlap`` and ``flip_tta`` set the sliding window (window = the run's ``patch_size``,
    Gaussian weights); ``empty`` is the per-case table's policy for a class absent from a
    case's ground truth (``skip``: left out of the means; ``one`` / ``zero``: scored so);
    ``tolerance`` is the normalised surface Dice tolerance in physical units (mm, or pixels
    without spacing); ``surface: false`` skips HD95 / NSD (they cost distance transforms).
    ``inference_copy: false`` runs the sliding window on the network as trained instead of an
    inference copy (BatchNorms folded into the convolutions, on CPU convolutions packed for
    oneDNN with their ReLU fused: the same outputs within float rounding, faster;
    :func:`medbalance.engine.fold.inference_copy`).
    ``largest_component`` / ``fill_holes`` post-process every segmentation prediction (keep
    each foreground class's largest connected component; fill its holes), as nnU-Net's
    post-processing (:mod:`medbalance.engine.postprocess`).
    """

    overlap: float = Field(0.5, ge=0.0, lt=1.0)
    flip_tta: bool = False
    inference_copy: bool = True
    empty: Literal["skip", "one", "zero"] = "skip"
    tolerance: float = Field(1.0, gt=0.0)
    surface: bool = True
    largest_component: bool = False
    fill_holes: bool = False


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
        return KINDS[self.data.kind].task_of(self.data)


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


def _check_loss(cfg: RunConfig, source: str, own: dict[str, Any]) -> None:
    """Build every loss spec once; ``own``: the method's losses, checked when the method builds them."""
    from medbalance.losses import MissingClassCounts, build_loss

    specs = [("loss", cfg.loss)] + [(f"stages[{i}].loss", s.loss) for i, s in enumerate(cfg.stages or [])]
    for key, spec in specs:
        name = spec.get("name") if isinstance(spec, dict) else spec
        if spec is None or (key != "loss" and isinstance(name, str) and name in own):
            continue
        try:
            build_loss(spec)
        except MissingClassCounts:
            pass  # the run counts the classes of its training split
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"invalid '{key}' in {source}: {exc}") from None


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
    _check_loss(cfg, source, method_of(cfg).named_losses())
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
