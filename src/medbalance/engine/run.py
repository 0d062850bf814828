"""Training, evaluation and prediction from a config: the Python API behind the CLI."""

from __future__ import annotations

import functools
import inspect
import json
import logging
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from lightning_fabric.utilities.seed import seed_everything
from torch import nn

import medbalance
from medbalance._atomic import atomic_write_text
from medbalance._malloc import tune_malloc
from medbalance.config import (
    MethodConfig,
    PythonData,
    RunConfig,
    StageConfig,
    dump_config,
    load_config,
    method_of,
    parse_config,
    read_yaml,
)
from medbalance.data.build import build_splits
from medbalance.data.datasets import ArrayDataset, Splits, as_dataset
from medbalance.data.folds import write_splits
from medbalance.data.io import write_mask
from medbalance.data.medical import Geometry, ImageInfo, write_labels
from medbalance.data.normalization import Normalization
from medbalance.data.patches import PatchDataset
from medbalance.data.samplers import bilateral, class_balanced, foreground, reversed_sampler
from medbalance.data.stats import class_counts
from medbalance.engine.checkpoint import load_checkpoint
from medbalance.engine.engine import (
    DEFAULT_PATCH_STEPS,
    Engine,
    Stage,
    infer_logits,
    inference_model,
    make_fabric,
    memory_format,
)
from medbalance.engine.hooks import Method
from medbalance.engine.native import CaseNormalizer, Numbered, resolve_patch_size
from medbalance.engine.rundir import create_run_dir
from medbalance.engine.subnormals import flush_denormals, zero_subnormals_
from medbalance.engine.tasks import make_task
from medbalance.engine.trainlog import TrainLog
from medbalance.errors import CheckpointError, ConfigError, DataError
from medbalance.losses import build_loss
from medbalance.losses.deep_supervision import DeepSupervisionLoss
from medbalance.metrics.cases import CaseTable
from medbalance.nets import build_net
from medbalance.report import environment, write_report
from medbalance.report.collect import ReportSamples

__all__ = [
    "RunResult",
    "resolve_recipe",
    "build_stages",
    "train",
    "load_run",
    "evaluate_run",
    "is_native",
    "predict_image",
    "predict_arrays",
    "in_slice_batches",
    "most_foreground_slice",
    "PredictionWriter",
]

log = logging.getLogger(__name__)

IDENTITY_3D = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
#: Slices of a volume a 2D network predicts at once: a whole volume in one batch may not fit in memory.
SLICE_BATCH = 16

_Slices = TypeVar("_Slices")
_Out = TypeVar("_Out")


@dataclass
class RunResult:
    run_dir: Path
    metrics: dict
    is_global_zero: bool = True  # False in the extra processes of a multi-device run


@dataclass
class LoadedRun:
    cfg: RunConfig
    model: nn.Module
    task: object
    meta: dict

    def engine(self) -> Engine:
        """An engine evaluating this run's model as it trained (its method), quietly, on one device."""
        quiet = self.cfg.model_copy(update={"progress": False, "devices": 1, "num_nodes": 1})
        return Engine(self.model, self.task, quiet, method=method_of(self.cfg))


def _batches(name: str, cfg: RunConfig):
    """``stages[].batches`` -> the batch-sampler factory of a stage (``None``: shuffled batches)."""
    return {
        "shuffle": None,
        "class_balanced": class_balanced,
        "reversed": reversed_sampler,
        "bilateral": bilateral(),
        "foreground": foreground(cfg.foreground_fraction),
    }[name]


def resolve_recipe(cfg: RunConfig) -> RunConfig:
    """``cfg`` with its stages listed in full: the method's default stages when it lists none,
    every stage's loss spelled out (``config.yaml`` holds this form)."""
    method = method_of(cfg)
    specs = [s.model_dump() for s in cfg.stages] if cfg.stages else method.default_stages(cfg)
    stages = []
    for spec in specs:
        spec = dict(spec)
        if spec.get("loss") is None:
            spec["loss"] = cfg.loss
        stages.append(StageConfig.model_validate(spec))  # the user's were checked by parse_config
    resolved = MethodConfig(name=cfg.method.name, **method.options.model_dump())
    return cfg.model_copy(update={"stages": stages, "method": resolved})


def build_stages(
    cfg: RunConfig, method: Method, *, class_counts, binary: bool, ignore_index: int | None
) -> list[Stage]:
    """The :class:`Stage` objects of a resolved recipe (:func:`resolve_recipe`).

    Args:
        class_counts: ``() -> (C,)`` pixel / sample counts of the training split, for losses
            that need them (called at most once).
        binary: the network has one output channel (sigmoid losses).
        ignore_index: label left out of the losses.
    """
    counts = functools.cache(class_counts)
    own = method.named_losses()
    deep = bool((cfg.model.model_extra or {}).get("deep_supervision"))
    stages = []
    for i, spec in enumerate(cfg.stages):
        loss_spec = spec.loss
        name = loss_spec.get("name") if isinstance(loss_spec, dict) else loss_spec
        try:
            if isinstance(name, str) and name in own:
                kwargs = {k: v for k, v in loss_spec.items() if k != "name"} if isinstance(loss_spec, dict) else {}
                if "ignore_index" in inspect.signature(own[name]).parameters:
                    kwargs.setdefault("ignore_index", ignore_index)
                loss = own[name](**kwargs)
            else:
                loss = build_loss(loss_spec, class_counts=counts, binary=binary, ignore_index=ignore_index)
        except (TypeError, ValueError) as exc:
            key = "loss" if spec.loss == cfg.loss else f"stages[{i}].loss"
            raise ConfigError(f"invalid '{key}' of run '{cfg.name}': {exc}") from None
        if deep:  # every output scale, weighted 1/2^i (nnU-Net); validation sees the main output only
            loss = DeepSupervisionLoss(loss)
        stages.append(
            Stage(
                spec.name,
                spec.epochs,
                method.stage_loss(loss, spec.model_dump()),
                trainable=tuple(spec.trainable) if spec.trainable is not None else None,
                frozen=tuple(spec.frozen),
                lr=spec.lr,
                monitor=spec.monitor,
                target_key=spec.target,
                sampler=_batches(spec.batches, cfg),
                select_best=spec.select_best,
            )
        )
    return stages


def _build_model(cfg: RunConfig, in_channels: int, out_channels: int) -> nn.Module:
    kwargs = dict(cfg.model.model_extra or {})
    for key, value in (("in_channels", in_channels), ("num_classes", out_channels)):
        if key in kwargs and kwargs[key] != value:
            raise ConfigError(
                f"invalid value for 'model.{key}' in the config of run '{cfg.name}': {kwargs[key]}, "
                f"but its data ({cfg.data.kind}) needs {value}; leave it out to take it from the data"
            )
        kwargs[key] = value

    def build(name: str | None = None, **overrides) -> nn.Module:
        return build_net(name or cfg.model.name, **{**kwargs, **overrides})

    num_classes = 2 if out_channels == 1 else out_channels
    return method_of(cfg).build_model(build, in_channels=in_channels, num_classes=num_classes)


def train(
    cfg: RunConfig | None = None,
    *,
    out: str | Path = "runs",
    resume: str | Path | None = None,
    progress: bool | None = None,
    folder: str | None = None,
    data=None,
) -> RunResult:
    """Train one run and write its folder (config, checkpoints, history, metrics, predictions, report).

    The run's log lines, each epoch's validation loss and per-class scores, and an error that
    stopped it go to ``train.log`` in the folder (appended to on resume).

    Args:
        cfg: the resolved config (ignored with ``resume``: the run folder's own config is used).
        out: parent folder; the run gets a new timestamped sub-folder, never an existing one.
        resume: an interrupted run folder to continue.
        progress: show progress bars (``None``: the config's ``progress``); not saved in the config.
        folder: the run folder's exact name under ``out`` (new), instead of ``<name>-<time>``.
        data: datasets given in Python instead of the config's data: ``(train, val)`` or
            ``(train, val, test)``, each an :class:`ArrayDataset` or a sequence of ``(image,
            target)`` pairs / ``{"image", "label"}`` dicts (:func:`medbalance.data.datasets.as_dataset`).
            The config's data section becomes ``kind: python`` (its ``task`` from the targets);
            a resume needs the same ``data``.
    """
    with TrainLog() as train_log:
        return _train(cfg, out=out, resume=resume, progress=progress, folder=folder, data=data, train_log=train_log)


def _given_splits(cfg: RunConfig, data) -> tuple[RunConfig, Splits | None]:
    """The config and splits of datasets given in Python (``train(..., data=...)``)."""
    if data is None:
        return cfg, None
    if not isinstance(data, (tuple, list)) or len(data) not in (2, 3):
        raise ConfigError("data must be (train, val) or (train, val, test) datasets")
    train = as_dataset(data[0])
    parts = [train] + [as_dataset(d, num_classes=train.num_classes, class_names=train.class_names) for d in data[1:]]
    task = "classification" if isinstance(train.target, np.ndarray) and train.target.ndim == 1 else "segmentation"
    section = cfg.data.model_dump() if cfg.data.kind == "python" else {}
    section.update(kind="python", task=task)
    cfg = cfg.model_copy(update={"data": PythonData.model_validate(section)})
    return cfg, Splits(parts[0], parts[1], parts[2] if len(parts) == 3 else None, info={"source": "python"})


def _train(
    cfg: RunConfig | None,
    *,
    out: str | Path,
    resume: str | Path | None,
    progress: bool | None,
    folder: str | None,
    data,
    train_log: TrainLog,
) -> RunResult:
    if resume is not None and (Path(resume) / "metrics.json").exists():
        raise CheckpointError(f"'{resume}' is a finished run (it has metrics.json); nothing to resume")
    cfg = load_config(Path(resume) / "config.yaml") if resume is not None else (cfg or RunConfig())
    if progress is not None:
        cfg = cfg.model_copy(update={"progress": progress})
    cfg, given = _given_splits(cfg, data)
    cfg = resolve_recipe(cfg)
    method = method_of(cfg)
    tune_malloc()  # reuse freed activation memory across steps (MEDBALANCE_MALLOC=default: off)
    fabric = make_fabric(cfg)
    # data and model before the run folder: bad data or model arguments leave no folder behind
    splits = build_splits(cfg, given)
    if "target_spacing" in splits.info:  # `median` resolved, written to config.yaml as the spacing inferred at
        cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"spacing": splits.info["target_spacing"]})})
    ignore_index = splits.train.ignore_index
    if cfg.task == "segmentation":
        try:
            shapes = [splits.train.shape(i) for i in range(len(splits.train))]
            patch = resolve_patch_size(cfg.patch_size, shapes)
        except ValueError as exc:
            raise ConfigError(f"invalid value for 'patch_size' in the config of run '{cfg.name}': {exc}") from None
        if patch is None and splits.train.ragged:
            raise ConfigError(
                f"run '{cfg.name}': its training images differ in size, so they cannot be batched whole; "
                "set patch_size (e.g. auto) or data.size"
            )
        cfg = cfg.model_copy(update={"patch_size": list(patch) if patch is not None else None})
    elif cfg.patch_size not in (None, "auto"):
        raise ConfigError(f"run '{cfg.name}' is a classification run; patch_size applies to segmentation")
    else:
        cfg = cfg.model_copy(update={"patch_size": None})
    task = make_task(
        cfg.task,
        splits.train.num_classes,
        threshold=cfg.threshold,
        ignore_index=ignore_index,
        largest_component=cfg.evaluation.largest_component,
        fill_holes=cfg.evaluation.fill_holes,
    )
    seed_everything(cfg.seed, verbose=False)  # initial weights depend on the seed alone
    model = _build_model(cfg, splits.train.in_channels, task.out_channels)
    if resume is not None:
        run_dir = Path(resume)
    else:
        # One folder per run, chosen by rank 0 and shared with the other processes.
        run_dir = create_run_dir(out, folder or cfg.name, stamp=folder is None) if fabric.is_global_zero else None
        run_dir = Path(fabric.broadcast(str(run_dir), src=0))
    if fabric.is_global_zero and resume is None:  # a resumed run's log opens once its checkpoint is accepted
        train_log.open(run_dir, resumed=False)
    if resume is None and fabric.is_global_zero:
        atomic_write_text(run_dir / "config.yaml", dump_config(cfg))
        if "splits_final" in splits.info:  # a cross-validation fold: every fold, as nnU-Net writes them
            write_splits(run_dir / "splits_final.json", splits.info["splits_final"])
        atomic_write_text(run_dir / "splits.json", json.dumps(_without_folds(splits.info), indent=1))
    meta = {
        "medbalance": medbalance.__version__,
        "task": cfg.task,
        "num_classes": task.num_classes,
        "in_channels": splits.train.in_channels,
        "out_channels": task.out_channels,
        "class_names": list(splits.train.class_names),
        "model": cfg.model.name,
        "spatial_dims": splits.train.spatial_dims if cfg.task == "segmentation" else None,
        "patch_size": cfg.patch_size,
        "ignore_index": ignore_index,
        "normalization": splits.info.get("normalization"),
        "target_spacing": splits.info.get("target_spacing"),
    }
    if type(method).prepare is not Method.prepare and fabric.world_size > 1:
        raise ConfigError(f"method '{cfg.method.name}' trains parts of its own first; run it on one device")
    prepared = method.prepare(Parts(run_dir, progress=cfg.progress), cfg, splits, model)
    if prepared.info != splits.info and fabric.is_global_zero:  # what the method's parts found (dual-path's maps)
        atomic_write_text(run_dir / "splits.json", json.dumps(_without_folds(prepared.info), indent=1))
    splits = prepared
    train_data = splits.train
    if cfg.patch_size is not None and cfg.task == "segmentation":
        train_data = _patch_stream(cfg, splits.train, tuple(cfg.patch_size), fabric.world_size)
    engine = Engine(model, task, cfg, run_dir=run_dir, fabric=fabric, meta=meta, method=method)
    stages = build_stages(
        cfg,
        method,
        class_counts=lambda: class_counts(splits.train, task.num_classes, ignore_index=ignore_index),
        binary=task.out_channels == 1,
        ignore_index=ignore_index,
    )
    resumed = partial(train_log.open, run_dir, resumed=True) if fabric.is_global_zero else None
    history = engine.fit(stages, train_data, splits.val, resume=resume is not None, on_resumed=resumed)

    best = load_checkpoint(run_dir / "checkpoints" / "best.pt")
    model.load_state_dict(best["model"])
    # Predictions of the test split (else validation) come from the pass that scores it.
    writer, final = None, "test" if splits.test is not None else "val"
    final_data = splits.test if splits.test is not None else splits.val
    if fabric.is_global_zero:
        writer = PredictionWriter(final_data, task, run_dir / "predictions")
        if task.name == "segmentation":  # the per-case table of the final split, in the same pass
            cases = case_table(cfg, final_data)
            samples = ReportSamples(
                cases.table,
                final_data.names,
                lambda i, y: _example(final_data, i, y),
                binary=task.out_channels == 1,
                ignore_index=ignore_index,
                seed=cfg.seed,
            )
            writer = _Both(writer, cases, samples)
        atomic_write_text(run_dir / "environment.json", json.dumps(environment(str(fabric.device)), indent=1))
    passes = {"val": engine.evaluate(splits.val, on_batch=writer if splits.test is None else None, full=True)}
    if splits.test is not None:
        passes["test"] = engine.evaluate(splits.test, on_batch=writer, full=True)
    metrics = {
        "best_epoch": best["epoch"],
        "epochs": len(history),
        "monitor": engine.monitor_of(stages[-1])[0],
        **{split: evaluation.scores for split, evaluation in passes.items()},
    }
    metrics["class_names"] = list(splits.train.class_names)
    if task.name == "classification":  # samples per class trained on (a long-tailed subset's counts)
        metrics["train_counts"] = np.bincount(splits.train.target, minlength=task.num_classes).tolist()
    samples = None
    if isinstance(writer, _Both):
        samples = writer.samples
        cases = run_dir / "evaluations" / final
        shutil.rmtree(cases, ignore_errors=True)  # an unfinished run's own table (a resume rewrites it)
        writer.cases.table.write(cases)
        metrics[final]["cases"] = writer.cases.table.summary()
        writer = writer.writer
    if writer is not None:
        examples = writer.close()
        metrics["confusion"] = {"split": final, "unit": passes[final].unit, "matrix": passes[final].confusion.tolist()}
        write_report(
            run_dir,
            metrics,
            examples=examples,
            pixels=samples.pixels if samples else None,
            worst=samples.worst_cases if samples else (),
        )
        # metrics.json last: its presence marks a finished run.
        atomic_write_text(run_dir / "metrics.json", json.dumps(metrics, indent=1))
    return RunResult(run_dir, metrics, engine.fabric.is_global_zero)


def _without_folds(info: dict) -> dict:
    """``splits.json``'s content: the split's facts without the fold list (``splits_final.json``)."""
    return {k: v for k, v in info.items() if k != "splits_final"}


def ensure_trained(folder: Path, cfg: RunConfig, *, progress: bool = False, data=None) -> None:
    """Train the recipe ``cfg`` into the run folder ``folder`` unless it finished (``metrics.json``);
    an interrupted one (``checkpoints/last.pt``) continues. A folder killed before its first
    checkpoint holds nothing worth keeping and starts again."""
    folder = Path(folder)
    if (folder / "metrics.json").is_file():
        return
    resume = folder if (folder / "checkpoints" / "last.pt").is_file() else None
    if resume is None and folder.exists():
        shutil.rmtree(folder)
    log.info("training %s%s", folder, " (resumed)" if resume else "")
    train(cfg, out=folder.parent, folder=folder.name, resume=resume, progress=progress, data=data)


class Parts:
    """The runs a method trains before its own stages (:meth:`Method.prepare`), each a run
    folder of its own under ``RUN/parts/<name>/``: finished ones are loaded, interrupted ones
    resumed, so resuming the composite run never trains a part twice."""

    def __init__(self, run_dir: Path, *, progress: bool = False) -> None:
        self.folder, self.progress = Path(run_dir) / "parts", progress

    def train(self, name: str, cfg: RunConfig, *, data=None) -> "LoadedRun":
        """Train (or load) part ``name`` from its recipe ``cfg`` (on ``data`` given in Python, as
        :func:`train` takes it); returns it with its ``best.pt`` weights."""
        ensure_trained(self.folder / name, cfg, progress=self.progress, data=data)
        return load_run(self.folder / name)

    @staticmethod
    def load(run_dir: str | Path) -> "LoadedRun":
        """A finished run used as a part (e.g. a trained U-Net as dual-path's discriminator)."""
        if not (Path(run_dir) / "metrics.json").is_file():
            raise CheckpointError(f"'{run_dir}' is not a finished run (no metrics.json); it cannot serve as a part")
        return load_run(run_dir)

    @staticmethod
    def probabilities(run: "LoadedRun", data: ArrayDataset) -> list[np.ndarray]:
        """Each image's class probabilities ``(C_out, *spatial)`` from a part, at the image's own size
        (read through the part's own normalisation)."""
        if is_native(run):
            data = data.with_normalization(Normalization.from_dict(run.meta["normalization"]))
        engine = run.engine()
        out: list[np.ndarray | None] = [None] * len(data)

        def keep(batch: dict, logits: torch.Tensor, labels: torch.Tensor) -> None:
            probs = run.task.probabilities(logits.float()).cpu().numpy()
            for i, p in zip(batch["index"].tolist(), probs):
                out[i] = p

        engine.evaluate(data, on_batch=keep)
        return out


class _Both:
    """The ``on_batch`` callbacks of one evaluation pass: predictions, the per-case table, report samples."""

    def __init__(self, writer: "PredictionWriter", cases: "CaseScores", samples: ReportSamples | None = None) -> None:
        self.writer, self.cases, self.samples = writer, cases, samples

    def __call__(self, batch: dict, logits: torch.Tensor, labels: torch.Tensor) -> None:
        self.writer(batch, logits, labels)
        self.cases(batch, logits, labels)
        if self.samples is not None:  # after the table: it ranks the cases by their rows
            self.samples(batch, logits, labels)


class PredictionWriter:
    """Writes the predictions of an evaluation pass (``Engine.evaluate(..., on_batch=writer)``).

    Segmentation: one PNG mask per sample (binary 0/255, multi-class indices). Classification:
    ``predictions.csv`` with the class probabilities, written by :meth:`close`. Along the way
    it keeps the first ``num_examples`` segmentation samples for the report's example grid (the
    pass's confusion matrix is its :class:`~medbalance.metrics.evaluation.Evaluation`'s).

    Args:
        data: the dataset being evaluated (names, images and targets).
        task: the run's task.
        folder: where the predictions go.
        num_examples: how many (name, image, target, prediction) examples to keep.
    """

    def __init__(self, data: ArrayDataset, task, folder: Path, *, num_examples: int = 6) -> None:
        self.data, self.task, self.folder, self.num_examples = data, task, Path(folder), num_examples
        self.folder.mkdir(parents=True, exist_ok=True)
        self.rows: list[str] = []
        self.examples: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]] = []

    def __call__(self, batch: dict, logits: torch.Tensor, labels: torch.Tensor) -> None:
        data = self.data
        labels = labels.cpu().numpy()
        index = batch["index"].tolist()
        if self.task.name == "segmentation":
            for i, y in zip(index, labels):
                name = data.names[i]
                if y.ndim == 3:  # a volume: NIfTI with the case's spacing
                    spacing = tuple(reversed(data.spacing_of(i)))
                    info = ImageInfo(Path(name), ".nii.gz", y.shape, Geometry(spacing, (0.0,) * 3, IDENTITY_3D))
                    write_labels(self.folder / f"{Path(name).name}.nii.gz", y, info, binary=False)
                else:
                    write_mask(self.folder / f"{Path(name).name}.png", y, binary=self.task.out_channels == 1)
                if len(self.examples) < self.num_examples:
                    self.examples.append(_example(data, i, y))
            return
        probs = self.task.probabilities(logits).cpu().tolist()
        for i, y, p in zip(index, labels, probs):
            self.rows.append(f"{data.names[i]},{int(data.target[i])},{int(y)}," + ",".join(f"{v:.6f}" for v in p))

    def close(self) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
        """Write ``predictions.csv`` (classification) and return the report examples."""
        if self.rows:
            header = "name,target,prediction," + ",".join(f"p_{c}" for c in self.data.class_names)
            atomic_write_text(self.folder / "predictions.csv", "\n".join([header, *self.rows]) + "\n")
        return self.examples


def _patch_stream(cfg: RunConfig, data: ArrayDataset, patch: tuple[int, ...], world: int) -> Numbered:
    """The training split as an endless stream of random patches (``cfg.sampler``)."""
    steps = cfg.steps_per_epoch or DEFAULT_PATCH_STEPS
    images = list(data.images)
    stream = PatchDataset(
        images,
        list(data.target),
        patch_size=patch,
        num_classes=data.num_classes,
        batch_size=cfg.batch_size,
        samples_per_epoch=steps * cfg.batch_size * world,
        sampler=cfg.sampler,
        foreground_fraction=cfg.foreground_fraction,
        power=cfg.sampler_power,
        ignore_index=data.ignore_index,
        seed=cfg.seed,
        normalize=CaseNormalizer(data),
        extras={k: list(v) for k, v in data.extras.items()} or None,
    )
    return Numbered(stream)


def _example(data: ArrayDataset, i: int, y: np.ndarray) -> tuple[str, np.ndarray, np.ndarray, np.ndarray]:
    """``(name, image, target, labels)`` of case ``i`` for a figure; a volume by its slice with the most foreground."""
    image, target = _display(data, i), _shown_target(data, i)
    if y.ndim == 3:
        k = most_foreground_slice(target)
        image, target, y = image[:, k], target[k], y[k]
    return data.names[i], image, target, y


def _display(data: ArrayDataset, i: int) -> np.ndarray:
    """Image ``i`` for a figure: stored 8-bit values as they are, anything else min-max scaled."""
    image = data.images[i]
    if image.dtype == np.uint8 or data.normalization is None:
        return image
    x = data.image(i)
    low, high = float(x.min()), float(x.max())
    return (x - low) / (high - low) if high > low else np.zeros_like(x)


def _shown_target(data: ArrayDataset, i: int) -> np.ndarray:
    """Target ``i`` for a figure, ignored pixels shown as background."""
    target = np.asarray(data.target[i])
    return target if data.ignore_index is None else np.where(target == data.ignore_index, 0, target)


def load_run(run_dir: str | Path, *, checkpoint: str = "best.pt") -> LoadedRun:
    """Rebuild a trained model from a run folder's ``config.yaml`` and checkpoint.

    Raises:
        CheckpointError: missing run folder/checkpoint, or one that does not fit the model.
    """
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise CheckpointError(f"'{run_dir}' is not a run folder (no config.yaml)")
    cfg = parse_config(read_yaml(run_dir / "config.yaml"), source=f"{run_dir.name}/config.yaml")
    state = load_checkpoint(run_dir / "checkpoints" / checkpoint)
    meta = state.get("meta") or {}
    if "task" not in meta:  # experiment runs before 0.2.0 stored no task, classes nor channels
        version = meta.get("medbalance", "0.1.0")
        raise CheckpointError(
            f"'{run_dir}' was written by medbalance {version}, whose experiment runs cannot be loaded by "
            f"{medbalance.__version__}; train it again (medbalance train or experiment --resume in a new folder)"
        )
    if meta.get("target_spacing") is not None:  # the spacing this checkpoint trained at is the one it infers at
        cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"spacing": list(meta["target_spacing"])})})
    try:
        task = make_task(
            meta["task"],
            meta["num_classes"],
            threshold=cfg.threshold,
            ignore_index=meta.get("ignore_index"),
            largest_component=cfg.evaluation.largest_component,
            fill_holes=cfg.evaluation.fill_holes,
        )
        model = _build_model(cfg, meta["in_channels"], meta["out_channels"])
        zero_subnormals_(state["model"].values())  # a slow CPU path at inference (engine.subnormals)
        model.load_state_dict(state["model"])
    except KeyError as exc:
        raise CheckpointError(f"checkpoint in '{run_dir}' lacks metadata {exc}") from None
    except RuntimeError as exc:
        first = str(exc).splitlines()[1].strip() if "\n" in str(exc) else str(exc)
        raise CheckpointError(f"checkpoint in '{run_dir}' does not fit model '{cfg.model.name}': {first}") from None
    model.eval()
    return LoadedRun(cfg, model, task, meta)


def evaluate_run(run: LoadedRun, data: ArrayDataset, *, cases: str | Path | None = None) -> dict:
    """Scores of a trained run (from :func:`load_run`) on ``data``.

    A native-geometry run reads ``data`` through its own normalisation and scores each image
    at its own size (sliding window). Segmentation scores are written per case too when
    ``cases`` names a new folder (:func:`case_table`: ``cases.csv``, ``cases.json``) and
    returned under ``"cases"`` (the summary).
    """
    if data.num_classes > run.task.num_classes:
        raise ValueError(
            f"the data has labels up to {data.num_classes - 1} but the run was trained with "
            f"{run.task.num_classes} classes"
        )
    if data.in_channels != run.meta["in_channels"]:
        raise ValueError(
            f"the data has {data.in_channels} image channels but the run expects {run.meta['in_channels']}"
        )
    if is_native(run):
        data = data.with_normalization(Normalization.from_dict(run.meta["normalization"]))
    engine = run.engine()
    table = case_table(run, data) if run.task.name == "segmentation" else None
    scores = engine.evaluate(data, on_batch=table)
    if table is not None:
        scores["cases"] = table.table.summary()
        if cases is not None:
            table.table.write(cases)
    return scores


def case_table(run_or_cfg, data: ArrayDataset) -> "CaseScores":
    """An ``on_batch`` callback filling a per-case :class:`~medbalance.metrics.cases.CaseTable`
    (Dice, IoU, precision, recall, HD95, NSD per class) with the run's ``evaluation`` settings."""
    cfg = run_or_cfg.cfg if isinstance(run_or_cfg, LoadedRun) else run_or_cfg
    settings = cfg.evaluation
    table = CaseTable(
        data.num_classes,
        class_names=data.class_names,
        ignore_index=data.ignore_index,
        tolerance=settings.tolerance,
        empty=settings.empty,
        surface=settings.surface,
    )
    return CaseScores(table, data)


class CaseScores:
    """``on_batch(batch, logits, labels)`` adding each image of an evaluation pass to ``table``."""

    def __init__(self, table: CaseTable, data: ArrayDataset) -> None:
        self.table, self.data = table, data

    def __call__(self, batch: dict, logits: torch.Tensor, labels: torch.Tensor) -> None:
        target = batch["target"].cpu().numpy()
        for i, y, t in zip(batch["index"].tolist(), labels.cpu().numpy(), target):
            self.table.update(self.data.names[i], y, t, spacing=self.data.spacing_of(i))


def is_native(run: LoadedRun) -> bool:
    """Whether ``run`` trained on native-size images (it then predicts them at their own size)."""
    return run.meta.get("normalization") is not None


def in_slice_batches(predict: Callable[[_Slices], _Out], slices: _Slices, *, batch: int = SLICE_BATCH) -> list[_Out]:
    """``predict`` of a volume's slices (first axis), ``batch`` slices at a time, in order.

    Example:
        >>> [len(part) for part in in_slice_batches(lambda x: x, np.zeros((40, 3, 3)))]
        [16, 16, 8]
    """
    return [predict(slices[i : i + batch]) for i in range(0, len(slices), batch)]


def most_foreground_slice(labels: np.ndarray) -> int:
    """Index of the slice (first axis) of ``labels`` with the most foreground (``> 0``), the first of ties:
    the slice a figure shows of a volume.

    Example:
        >>> most_foreground_slice(np.array([[[0, 1]], [[2, 2]], [[0, 3]]]))
        1
    """
    return int(np.argmax((labels > 0).reshape(len(labels), -1).sum(axis=1)))


def predict_image(
    run: LoadedRun, image: np.ndarray, *, spacing: Sequence[float] | None = None, slices: int = SLICE_BATCH
) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities and labels of one native-size image, as a native-geometry run predicts.

    The run's normalisation (fitted on its training split) is applied, then the network runs
    on the whole image or, with a ``patch_size``, as a Gaussian-weighted sliding window
    (:func:`medbalance.engine.engine.infer_logits`); a run trained at a target spacing
    (``data.spacing``) infers there and resamples the logits back to the image's shape. A 3D
    volume given to a 2D run is predicted slice by slice, ``slices`` at a time.

    Args:
        image: ``(C_in, *spatial)`` stored intensities (:func:`medbalance.data.io.read_raw`).
        spacing: the image's pixel / voxel size in array axis order (``None``: 1 per axis).

    Returns:
        float32 probabilities ``(C_out, *spatial)`` and int64 labels ``(*spatial)``.
    """
    norm = Normalization.from_dict(run.meta["normalization"]).for_image(image)
    x = torch.from_numpy(norm(image))
    dims = run.meta.get("spatial_dims") or 2
    layout = memory_format(run.cfg.channels_last, run.model, x.device)
    if layout is not None:
        run.model.to(memory_format=layout)

    def forward(model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
        return model(batch.contiguous(memory_format=layout) if layout is not None and batch.ndim == 4 else batch)

    model = inference_model(run.model, run.cfg)  # once for every slice batch
    with torch.inference_mode():
        own = tuple(spacing) if spacing is not None else (1.0,) * (x.ndim - 1)
        if x.ndim - 1 == dims:
            logits = infer_logits(model, x[None], run.cfg, forward=forward, spacing=[own])
        elif x.ndim - 1 == 3 and dims == 2:  # (C, D, H, W) through a 2D network
            stack = x.transpose(0, 1)

            def infer(part: torch.Tensor) -> torch.Tensor:
                return infer_logits(model, part, run.cfg, forward=forward, spacing=[own[1:]] * len(part))

            logits = torch.cat(in_slice_batches(infer, stack, batch=slices))
            logits = logits.transpose(0, 1)[None]
        else:
            raise DataError(f"a {x.ndim - 1}D image cannot go through this run's {dims}D network")
        probs = run.task.probabilities(logits)[0].contiguous().numpy()
        labels = run.task.predict(logits)[0].contiguous().numpy()
    return probs, labels


def predict_arrays(run: LoadedRun, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities and labels for ``(N, C_in, H, W)`` images (eval mode, no autograd).

    A run trained on data resized to (or generated at) ``data.size`` sees its input resized the same way;
    segmentation logits are then resized back (bilinear), so masks match the input image. A run of
    ``data.protocol: seed001`` sees its validation geometry
    (:func:`~medbalance.data.readers.classification.seed001_eval_image`).
    """
    if getattr(run.cfg.data, "protocol", "default") == "seed001":
        from medbalance.data.readers.classification import seed001_eval_image

        images = np.stack([seed001_eval_image(np.asarray(image, dtype=np.float32), run.cfg.data) for image in images])
    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    layout = memory_format(run.cfg.channels_last, run.model, x.device)  # as the engine trains and evaluates
    if layout is not None:
        run.model.to(memory_format=layout)
        x = x.contiguous(memory_format=layout)
    size = getattr(run.cfg.data, "size", None)  # every data kind that resizes (or generates) at a size
    with torch.inference_mode():
        with flush_denormals():  # the network only, as infer_logits (post-processing may run scipy)
            if size is None or x.shape[-2:] == (size, size):
                logits = run.model(x)
            else:
                logits = run.model(F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False))
                if logits.ndim == 4:
                    logits = F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return run.task.probabilities(logits).contiguous().numpy(), run.task.predict(logits).contiguous().numpy()
