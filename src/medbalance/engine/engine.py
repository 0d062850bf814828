"""The one training loop of medbalance, on Lightning Fabric.

A run is a list of :class:`Stage` objects executed in order by :meth:`Engine.fit`; each stage
says which parameters train, which are frozen, the loss and the number of epochs, and gets a
fresh optimiser and cosine schedule (SPEC 5.6: "cosine annealing to 0 within each step").
Multi-stage methods (dual-path: paths, then fusion, then everything) are data passed to this
loop, never a copy of it. A recipe's ``method`` (:class:`~medbalance.engine.hooks.Method`) changes
how a batch goes through the network and the loss; the loop stays this one. Training batches are augmented on the device
by ``cfg.augment`` (:mod:`medbalance.data.augment`), seeded like the shuffling.

Every epoch ends with a validation pass, a row in ``history.csv`` and an atomic
``checkpoints/last.pt`` holding model, optimiser, scheduler, stage/epoch counters, the best
score so far and every RNG state; ``best.pt`` is written when the monitored validation score
improves. Shuffling is seeded by (seed, epoch), so a run resumed from ``last.pt`` after a kill
ends with the same weights as an uninterrupted run (CPU, ``deterministic: true``).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from lightning_fabric import Fabric
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler, SequentialSampler
from tqdm.auto import tqdm

from medbalance._atomic import remove_stale_temporaries
from medbalance._paths import check_links_inside
from medbalance.config import RunConfig
from medbalance.data.samplers import BatchSamplerFactory, uniform
from medbalance.data.spacing import resample_image, resample_logits, resampled_shape
from medbalance.engine.checkpoint import (
    check_resume_state,
    check_weights,
    load_checkpoint,
    nonfinite_tensors,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from medbalance.engine.fold import inference_copy
from medbalance.engine.hooks import Method
from medbalance.engine.layout import memory_format
from medbalance.engine.native import AugmentingCollate, StreamBatches
from medbalance.engine.rundir import HistoryLog
from medbalance.engine.sliding_window import sliding_window_inference
from medbalance.engine.subnormals import flush_denormals, zero_subnormals_
from medbalance.engine.trainlog import log_epoch, per_class_columns
from medbalance.errors import ConfigError, TrainingError
from medbalance.losses.dynamic import set_progress
from medbalance.metrics.evaluation import Evaluation

__all__ = [
    "Stage",
    "Engine",
    "TrainingError",
    "make_fabric",
    "memory_format",
    "infer_logits",
    "inference_model",
    "widen_target",
    "target_spacing",
    "window_of",
]

log = logging.getLogger(__name__)

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

#: Patch batches per epoch when ``steps_per_epoch`` is not set.
DEFAULT_PATCH_STEPS = 100


@dataclass(frozen=True)
class Stage:
    """One step of a (possibly multi-step) recipe.

    Args:
        name: shown in the progress bar and ``history.csv``.
        epochs: epochs of this stage.
        loss: ``loss(outputs, target) -> scalar``.
        trainable: parameter-name prefixes to train (``None``: every parameter not in ``frozen``).
        frozen: parameter-name prefixes to freeze; their BatchNorm statistics are frozen too.
        lr: learning rate of this stage (``None``: the config's ``lr``).
        monitor: validation score that selects ``best.pt`` (``None``: config / task default).
            Scores are maximised, except names ending in ``loss``.
        target_key: batch entry the loss compares against; ``None`` passes the whole batch
            dict instead (a loss over several targets, e.g. dual-path's soft weight maps and GT).
        sampler: batch-sampler factory ``sampler(dataset, batch_size, generator)`` for this
            stage's training batches (:mod:`medbalance.data.samplers`); ``None``: shuffling.
        select_best: whether this stage's validation scores compete for ``best.pt``. The best
            checkpoint is the best epoch over *all* selecting stages (those whose outputs are the
            final model's), compared by the stage's monitor; a stage whose monitor differs from
            the best so far starts a new comparison. ``False`` for a stage whose outputs are not
            the final model's yet (dual-path step 1 trains the paths under an untrained fusion).
    """

    name: str
    epochs: int
    loss: LossFn
    trainable: tuple[str, ...] | None = None
    frozen: tuple[str, ...] = ()
    lr: float | None = None
    monitor: str | None = None
    target_key: str | None = "target"
    sampler: BatchSamplerFactory | None = None
    select_best: bool = True


class _RankBatches(Sampler):
    """This process's share of a batch sampler that every process draws identically.

    All processes seed the sampler alike, so they draw the same batch list. With ``chunk``,
    every batch is a global batch of ``world * chunk`` items and rank ``r`` trains on its
    ``r``-th slice: the gradient all-reduce then averages exactly the gradients of the global
    batch, so ``devices: 2`` with ``batch_size: B`` follows ``devices: 1`` with ``batch_size: 2B``
    (per-sample normalisation and a loss that is a mean over samples). Without ``chunk``,
    rank ``r`` takes every ``world``-th batch (samplers whose batches have a structure, e.g.
    bilateral halves).
    """

    def __init__(self, inner: Sampler, rank: int, world: int, chunk: int | None = None) -> None:
        self.inner, self.rank, self.world, self.chunk = inner, rank, world, chunk

    def __len__(self) -> int:
        return len(self.inner) if self.chunk else max(1, len(self.inner) // self.world)

    def __iter__(self):
        if self.chunk:
            for batch in self.inner:
                yield batch[self.rank * self.chunk : (self.rank + 1) * self.chunk]
            return
        for i, batch in enumerate(self.inner):
            if i // self.world >= len(self):
                return
            if i % self.world == self.rank:
                yield batch


def make_fabric(cfg: RunConfig) -> Fabric:
    """Fabric from the config's device / precision / devices / num_nodes / strategy."""
    accelerator = "cuda" if cfg.device == "gpu" else cfg.device
    precision = "32-true" if cfg.precision == "32" else cfg.precision
    try:
        fabric = Fabric(
            accelerator=accelerator,
            precision=precision,
            devices=cfg.devices,
            num_nodes=cfg.num_nodes,
            strategy=cfg.strategy,
        )
    except (RuntimeError, TypeError, ValueError) as exc:  # device: cuda without a GPU; devices: -1 on CPU
        reason = str(exc).splitlines()[0].replace("`", "'")
        raise ConfigError(
            f"cannot run with device={cfg.device}, precision={cfg.precision}, devices={cfg.devices}, "
            f"num_nodes={cfg.num_nodes}, strategy={cfg.strategy}: {reason}"
        ) from None
    # Several devices on one machine: Fabric re-launches this command once per extra process.
    fabric.launch()
    return fabric


def _matches(name: str, prefixes: Sequence[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


class Engine:
    """Trains and evaluates ``model`` for one run folder.

    Args:
        model: the network; outputs logits ``(N, C, *spatial)`` or ``(N, C)``.
        task: a :mod:`medbalance.engine.tasks` task (labels and scores from logits).
        cfg: resolved run config (optimiser, schedule, batch size, device, seed...).
        run_dir: the run folder (``checkpoints/`` and ``history.csv`` go there); ``None``
            trains without writing anything.
        fabric: an existing Fabric (default: :func:`make_fabric` of ``cfg``).
        meta: facts stored in every checkpoint to rebuild the model (task, classes, channels).
        method: the recipe's method hooks (default: plain training).

    Example:
        >>> from medbalance.config import parse_config
        >>> from medbalance.data.phantoms import intraclass_phantoms
        >>> from medbalance.data.datasets import ArrayDataset
        >>> from medbalance.engine.tasks import SegmentationTask
        >>> from medbalance.losses import DiceCELoss
        >>> from medbalance.nets import UNet
        >>> ps = intraclass_phantoms(8, size=32)
        >>> data = ArrayDataset(ps.images, ps.target, num_classes=2)
        >>> cfg = parse_config({"progress": False, "batch_size": 4})
        >>> engine = Engine(UNet(1, 1, base_channels=4, depth=2), SegmentationTask(2), cfg)
        >>> rows = engine.fit([Stage("warm-up", 1, DiceCELoss())], data, data)
        >>> rows[0]["epoch"], rows[0]["stage"]
        (1, 'warm-up')
    """

    def __init__(
        self,
        model: nn.Module,
        task: Any,
        cfg: RunConfig,
        *,
        run_dir: str | Path | None = None,
        fabric: Fabric | None = None,
        meta: dict | None = None,
        method: Method | None = None,
    ) -> None:
        self.model = model
        self.method = method if method is not None else Method()
        self.task = task
        self.cfg = cfg
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.meta = dict(meta or {})
        self.fabric = fabric or make_fabric(cfg)
        self.stage: Stage | None = None  # the stage being trained, for hooks that depend on it
        self._epoch = 0  # the global epoch being trained (patch streams draw by it)
        self._augment_in_loader = False  # patch streams are augmented where they are collated
        self._augment_generator = torch.Generator()
        self._augment_share = (0, 1)
        if cfg.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
        self.fabric.seed_everything(cfg.seed, workers=True, verbose=False)
        self.memory_format = memory_format(cfg.channels_last, model, self.fabric.device)
        if self.memory_format is not None:
            self.model.to(memory_format=self.memory_format)

    # ----------------------------------------------------------------------------- hooks
    def run_module(self, module: nn.Module, image: torch.Tensor) -> torch.Tensor:
        """``module(image)`` in the run's memory layout."""
        if self.memory_format is not None and image.ndim == 4:
            image = image.contiguous(memory_format=self.memory_format)
        return module(image)

    def forward(self, module: nn.Module, batch: dict) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """Outputs of a batch: the method's :meth:`~medbalance.engine.hooks.Method.forward`."""
        return self.method.forward(self, module, batch)

    def augment(self, batch: dict) -> dict:
        """A training batch augmented on the device by ``cfg.augment`` (unchanged when it is off).

        Batches of a patch stream come augmented from the loader (:class:`AugmentingCollate`).
        """
        if self._augment_in_loader:
            return batch
        return self.cfg.augment(batch, self._augment_generator, share=self._augment_share)

    def infer(self, module: nn.Module, batch: dict) -> torch.Tensor:
        """Logits of a whole evaluation batch (:func:`infer_logits`: one forward pass, or a
        sliding window of the run's patch size)."""
        image, spacing = batch["image"], batch.get("spacing")  # spacing: to resample to the run's target spacing
        return infer_logits(
            module, image, self.cfg, forward=lambda m, x: self.forward(m, {"image": x}), spacing=spacing
        )

    def compute_loss(self, stage: Stage, outputs: torch.Tensor | tuple[torch.Tensor, ...], batch: dict) -> torch.Tensor:
        """The stage's loss of a batch: the method's :meth:`~medbalance.engine.hooks.Method.compute_loss`."""
        return self.method.compute_loss(self, stage, outputs, batch)

    # ----------------------------------------------------------------------------- data
    def _loader(
        self, data: Dataset, *, train: bool, sampler: BatchSamplerFactory | None = None
    ) -> tuple[DataLoader, torch.Generator | None]:
        common = {
            "num_workers": self.cfg.num_workers,
            "pin_memory": self.fabric.device.type == "cuda",
            "persistent_workers": self.cfg.num_workers > 0,
        }
        if not train:
            # native sizes (ragged) and sliding windows: one image per batch
            one = getattr(data, "ragged", False) or self.cfg.patch_size not in (None, "auto")
            batch = 1 if one else self.cfg.eval_batch_size or self.cfg.batch_size
            loader = DataLoader(data, batch_size=batch, sampler=SequentialSampler(data), **common)
            return self.fabric.setup_dataloaders(loader, use_distributed_sampler=False), None
        generator = torch.Generator()
        world, rank, batch = self.fabric.world_size, self.fabric.global_rank, self.cfg.batch_size
        self._augment_in_loader = hasattr(data, "epoch_indices")
        if self._augment_in_loader:  # a patch stream: its own randomness, augmented in the workers
            steps = self.cfg.steps_per_epoch or DEFAULT_PATCH_STEPS
            batches = StreamBatches(data.epoch_indices, steps, batch, lambda: self._epoch, rank=rank, world=world)
            collate = AugmentingCollate(self.cfg.augment, self.cfg.seed)
            # batch_size=None: the stream gets each batch's index list and cuts the batch at once
            loader = DataLoader(data, sampler=batches, batch_size=None, collate_fn=collate, **common)
            return self.fabric.setup_dataloaders(loader, use_distributed_sampler=False), generator
        if sampler is None:  # shuffled global batches of world * batch_size, one slice per process
            batches = _RankBatches(uniform(data, world * batch, generator), rank, world, chunk=batch)
        else:
            batches = sampler(data, batch, generator)
            if world > 1:
                batches = _RankBatches(batches, rank, world)
        loader = DataLoader(data, batch_sampler=batches, **common)
        return self.fabric.setup_dataloaders(loader, use_distributed_sampler=False), generator

    def _seed_epoch(self, generator: torch.Generator, epoch: int) -> None:
        # Order and augmentation depend on (seed, epoch) only, so a resumed run sees the same
        # batches. Processes that share global batches draw the augmentation of the whole
        # global batch and take their slice; others draw their own.
        self._epoch = epoch
        generator.manual_seed(self.cfg.seed * 1_000_003 + epoch)
        own = 0 if self._augment_share[1] > 1 else self.fabric.global_rank
        self._augment_generator.manual_seed((self.cfg.seed * 1_000_003 + epoch) * 8_191 + own)

    # ----------------------------------------------------------------------------- stages
    def _prepare_stage(self, stage: Stage) -> list[nn.Parameter]:
        params = []
        for name, p in self.model.named_parameters():
            train = (stage.trainable is None or _matches(name, stage.trainable)) and not _matches(name, stage.frozen)
            p.requires_grad_(train)
            if train:
                params.append(p)
        if not params:
            raise ValueError(
                f"stage '{stage.name}' trains no parameter (trainable={stage.trainable}, frozen={stage.frozen})"
            )
        return params

    def train_mode(self) -> None:
        """Put the model in training mode for the current stage (:attr:`stage`), then the method's hook."""
        self.model.train()
        # A frozen part keeps its BatchNorm statistics: otherwise "frozen" would still drift.
        for module in self.model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                own = list(module.parameters(recurse=False))
                if own and not any(p.requires_grad for p in own):
                    module.eval()
        self.method.train_mode(self)

    def _optimizer(self, params: list[nn.Parameter], lr: float) -> torch.optim.Optimizer:
        cfg = self.cfg
        if cfg.optimizer == "sgd":
            return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
        return cls(params, lr=lr, betas=(cfg.momentum, 0.999), weight_decay=cfg.weight_decay)

    def monitor_of(self, stage: Stage) -> tuple[str, bool]:
        """The validation score that selects ``best.pt`` in ``stage``, and whether higher is better."""
        key = stage.monitor or self.cfg.monitor or self.task.default_monitor
        return key, not key.endswith("loss")

    # ----------------------------------------------------------------------------- fit
    def fit(
        self,
        stages: Sequence[Stage],
        train_data: Dataset,
        val_data: Dataset,
        *,
        resume: bool = False,
        on_resumed: Callable[[], None] | None = None,
    ) -> list[dict]:
        """Run ``stages`` in order; with ``resume`` continue from ``run_dir/checkpoints/last.pt``.

        ``on_resumed()`` is called once the checkpoint passed every check (a refused resume
        leaves the run folder as it was, so nothing may be written before).

        Returns:
            The rows of ``history.csv``.
        """
        if resume and self.run_dir is None:
            raise ValueError("resume needs a run_dir")
        if not any(s.select_best for s in stages):
            raise ValueError("no stage selects the best checkpoint (every stage has select_best=False)")
        fabric = self.fabric
        history = HistoryLog(self.run_dir / "history.csv" if self.run_dir else None)
        total_epochs, run_epochs, fit_start = sum(s.epochs for s in stages), 0, time.perf_counter()
        start_stage, start_epoch, global_epoch, best, state = (
            self._restore(stages, history) if resume else (0, 0, 0, None, None)
        )
        if resume and on_resumed is not None:
            on_resumed()
        val_loader, _ = self._loader(val_data, train=False)

        for si in range(start_stage, len(stages)):
            stage = self.stage = stages[si]
            train_loader, generator = self._loader(train_data, train=True, sampler=stage.sampler)
            chunked = stage.sampler is None  # global batches sliced per process (_loader)
            self._augment_share = (self.fabric.global_rank, self.fabric.world_size) if chunked else (0, 1)
            params = self._prepare_stage(stage)
            module = fabric.setup_module(self.model)
            optimizer = fabric.setup_optimizers(self._optimizer(params, stage.lr or self.cfg.lr))
            steps = max(1, len(train_loader)) * stage.epochs
            scheduler = (
                torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps, eta_min=self.cfg.lr_min)
                if self.cfg.scheduler == "cosine"
                else None
            )
            monitor, maximise = self.monitor_of(stage)
            if state is not None:  # resuming inside this stage
                optimizer.load_state_dict(state["optimizer"])
                if scheduler is not None and state.get("scheduler") is not None:
                    scheduler.load_state_dict(state["scheduler"])
                set_rng_state(state["rng"])
                state = None
            value = None
            for epoch in range(start_epoch, stage.epochs):
                self._seed_epoch(generator, global_epoch)
                t0 = time.perf_counter()
                shown = {} if value is None else {f"val_{monitor}": f"{value:.4f}"}  # last epoch's validation score
                train_loss = self._train_epoch(module, optimizer, scheduler, train_loader, stage, epoch, shown)
                # the intra-op threads ignore the training thread's flush flag (engine.subnormals)
                zero_subnormals_([*self.model.parameters(), *_state_tensors(optimizer)])
                scores = self.evaluate(val_loader, stage=stage)
                global_epoch += 1
                if monitor not in scores:
                    raise ValueError(
                        f"monitor '{monitor}' is not a validation score (have: {', '.join(sorted(scores))})"
                    )
                value = scores[monitor]
                improved = stage.select_best and (
                    best is None
                    or best.get("monitor") != monitor
                    or (value > best["value"] if maximise else value < best["value"])
                )
                if improved:
                    best = {"value": float(value), "epoch": global_epoch, "stage": si, "monitor": monitor}
                row = {
                    "epoch": global_epoch,
                    "stage": stage.name,
                    "stage_epoch": epoch + 1,
                    "lr": optimizer.param_groups[0]["lr"],
                    "train_loss": train_loss,
                    **{f"val_{k}": v for k, v in _scalars(scores).items()},
                    **per_class_columns(scores, self.meta.get("class_names") or []),
                    "seconds": round(time.perf_counter() - t0, 3),
                }
                ckpt = {
                    "format": 1,
                    "model": self.model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict() if scheduler is not None else None,
                    "stage_index": si,
                    "stage_name": stage.name,
                    "stage_epoch": epoch + 1,
                    "epoch": global_epoch,
                    "best": best,
                    "rng": rng_state(),
                    "scores": _scalars(scores),
                    "meta": self.meta,
                }
                self._end_epoch(ckpt, row, history, improved=improved)
                run_epochs += 1
                left = total_epochs - global_epoch
                eta = (time.perf_counter() - fit_start) / run_epochs * left
                log.info(
                    "%s epoch %d/%d  loss %.4f  val %s %.4f%s  [%d/%d epochs, ETA %s]",
                    stage.name,
                    epoch + 1,
                    stage.epochs,
                    train_loss,
                    monitor,
                    value,
                    "  (best)" if improved else "",
                    global_epoch,
                    total_epochs,
                    _duration(eta),
                )
                log_epoch(global_epoch, scores, self.meta.get("class_names") or [])
            start_epoch = 0
        return history.rows

    def _restore(self, stages: Sequence[Stage], history: HistoryLog) -> tuple[int, int, int, dict | None, dict | None]:
        """Load ``last.pt``: weights now, optimiser/scheduler/RNG once its stage is set up.

        Every field is checked (:func:`check_resume_state`) before the run folder is touched,
        so a crafted or foreign ``last.pt`` changes nothing; the history then loses only the
        rows past the checkpoint's epoch.
        """
        ckpt_dir = self.run_dir / "checkpoints"
        path = ckpt_dir / "last.pt"
        state = load_checkpoint(path)
        check_resume_state(
            state,
            path=path,
            stages=[(s.name, s.epochs, s.select_best) for s in stages],
            model=self.model.state_dict(),
            params=lambda si: self._prepare_stage(stages[si]),
            scheduler=self.cfg.scheduler == "cosine",
            meta=self.meta,
        )
        best_path = ckpt_dir / "best.pt"  # loaded once training ends: refused now, not after the work
        if state["best"] is not None:  # None: no stage so far selects (dual-path step 1)
            check_weights(load_checkpoint(best_path), path=best_path, model=self.model.state_dict())
        check_links_inside(self.run_dir)
        for folder in (self.run_dir, ckpt_dir):  # writes a kill cut short
            remove_stale_temporaries(folder)
        self.model.load_state_dict(state["model"])
        stage, epoch, global_epoch, best = state["stage_index"], state["stage_epoch"], state["epoch"], state["best"]
        history.truncate(global_epoch)
        log.info("resuming %s at stage '%s' epoch %d", self.run_dir, stages[stage].name, epoch)
        if epoch >= stages[stage].epochs:  # the checkpoint closed its stage: start the next one afresh
            return stage + 1, 0, global_epoch, best, None
        return stage, epoch, global_epoch, best, state

    def _end_epoch(self, ckpt: dict, row: dict, history: HistoryLog, *, improved: bool) -> None:
        """History row first, then checkpoints, ``last.pt`` last.

        A kill anywhere in between leaves ``last.pt`` at the previous epoch; resuming truncates
        the history to it and replays this epoch, which gives the same row and checkpoints.
        Non-finite weights or validation loss stop the run before anything of this epoch is
        written, so ``best.pt`` and ``last.pt`` only ever hold finite weights.
        """
        where = f"in stage '{ckpt['stage_name']}' epoch {ckpt['stage_epoch']}"
        bad = nonfinite_tensors(ckpt["model"])
        if bad:
            raise TrainingError(f"weights became non-finite ({bad[0]}) {where}; stopped, {_kept(self.run_dir)}")
        for key in ("train_loss", "val_loss"):
            if key in row and not math.isfinite(row[key]):
                raise TrainingError(f"{key} became {row[key]} {where}; stopped, {_kept(self.run_dir)}")
        if self.fabric.is_global_zero:
            history.append(row)
            if self.run_dir is not None:
                ckpt_dir = self.run_dir / "checkpoints"
                if improved:
                    save_checkpoint(ckpt_dir / "best.pt", ckpt)
                save_checkpoint(ckpt_dir / "last.pt", ckpt)
        self.fabric.barrier()

    def _train_epoch(self, module, optimizer, scheduler, loader, stage: Stage, epoch: int, shown: dict) -> float:
        self.train_mode()
        total = torch.zeros((), device=self.fabric.device)
        shown_at = time.monotonic()
        bar = tqdm(
            loader,
            desc=f"{stage.name} {epoch + 1}/{stage.epochs}",
            leave=False,
            disable=None if self.cfg.progress and self.fabric.is_global_zero else True,  # None: off without a TTY
            dynamic_ncols=True,
        )
        tracks_progress = isinstance(stage.loss, nn.Module)
        for step, batch in enumerate(bar):
            if tracks_progress:  # T / T_max for losses that change over training (DFLCE, LDAM-DRW)
                set_progress(stage.loss, (epoch * len(loader) + step) / (stage.epochs * max(1, len(loader))))
            batch = self.augment(widen_target(batch))
            with flush_denormals():  # torch code only: scipy misbehaves under the flag (engine.subnormals)
                with self.fabric.autocast():
                    outputs = self.forward(module, batch)
                loss = self.compute_loss(stage, outputs, batch)
                self.fabric.backward(loss)
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if scheduler is not None:
                scheduler.step()
            total += loss.detach()
            # Read the loss back (a device sync) at most twice a second, and at the end.
            if step + 1 == len(loader) or time.monotonic() - shown_at > 0.5:
                shown_at = time.monotonic()
                running = total.item() / (step + 1)
                if not math.isfinite(running):
                    raise TrainingError(
                        f"loss became {running} in stage '{stage.name}' epoch {epoch + 1} by step {step + 1}; "
                        "stopped, the last good checkpoint is kept"
                    )
                bar.set_postfix(loss=f"{running:.4f}", lr=f"{optimizer.param_groups[0]['lr']:.2e}", **shown)
        bar.close()
        steps = torch.tensor(float(max(1, len(loader))), device=self.fabric.device)
        return float(self.fabric.all_reduce(total / steps, reduce_op="mean"))

    # ----------------------------------------------------------------------------- evaluation
    def _eval_module(self) -> nn.Module:
        return self.model.to(self.fabric.device).eval()

    @torch.no_grad()
    def evaluate(
        self,
        loader: DataLoader | Dataset,
        *,
        stage: Stage | None = None,
        on_batch: Callable[[dict, torch.Tensor, torch.Tensor], None] | None = None,
        full: bool = False,
    ) -> dict | Evaluation:
        """Scores of the model on ``loader`` (a DataLoader or a Dataset); adds ``loss`` with a stage.

        With ``full`` the whole :class:`~medbalance.metrics.evaluation.Evaluation` of the pass:
        the same scores, the pooled confusion matrix and (segmentation) the per-image matrices,
        so nothing after the pass counts them again. The dataset's own ``scorers`` (e.g. the
        intra-class phantom's region recall) add their keys to the scores.

        ``on_batch(batch, logits, labels)`` sees every batch of the same pass (e.g. to write
        predictions), so scoring and predicting a set costs one forward pass.

        Every process evaluates the whole set with the unwrapped model (no distributed sampler,
        which would pad it with repeated samples, and no collective call), so the scores need no
        gathering and are the same on every rank.
        """
        if isinstance(loader, Dataset):
            loader, _ = self._loader(loader, train=False)
        module = inference_model(self._eval_module(), self.cfg)  # prepared once per pass, not per batch
        evaluator = self.task.evaluator(scorers=getattr(loader.dataset, "scorers", ()))
        loss_sum = torch.zeros((), device=self.fabric.device)
        for batch in loader:
            batch = widen_target(batch)
            with self.fabric.autocast():
                outputs = self.infer(module, batch)
            if stage is not None:
                loss_sum += self.compute_loss(stage, outputs, batch).detach()
            labels = self.task.predict(outputs)
            evaluator.update(labels, batch, outputs)
            if on_batch is not None:
                on_batch(batch, outputs, labels)
        evaluation = evaluator.compute()
        if stage is not None:
            evaluation.scores["loss"] = float(loss_sum / max(1, len(loader)))
        return evaluation if full else evaluation.scores


def widen_target(batch: dict) -> dict:
    """``batch`` with its integer ``"target"`` in int64, the dtype the losses, metrics and methods
    take: patch streams cut targets in uint8 / int16 (:func:`medbalance.data.patches.target_dtype`)
    and the training step widens the whole batch once, where the batch is computed on.

    Example:
        >>> widen_target({"target": torch.zeros(2, 3, dtype=torch.uint8)})["target"].dtype
        torch.int64
    """
    target = batch.get("target")
    if isinstance(target, torch.Tensor) and target.dtype in _NARROW_INTEGERS:
        return {**batch, "target": target.long()}
    return batch


_NARROW_INTEGERS = (torch.uint8, torch.int8, torch.int16, torch.int32)


def window_of(patch_size, spatial_dims: int) -> tuple[int, ...] | None:
    """The sliding window of a config's ``patch_size`` (``None``: whole images; ``auto`` is
    resolved by ``train`` before any inference, and left unresolved means whole images)."""
    if patch_size is None or patch_size == "auto":
        return None
    return (int(patch_size),) * spatial_dims if isinstance(patch_size, int) else tuple(int(s) for s in patch_size)


def target_spacing(cfg: RunConfig) -> tuple[float, ...] | None:
    """The spacing a run trains and infers at (``data.spacing`` as ``train`` resolves it), or ``None``."""
    value = getattr(cfg.data, "spacing", "keep")
    return tuple(float(v) for v in value) if isinstance(value, list) else None


def inference_model(model: nn.Module | Callable, cfg: RunConfig) -> nn.Module | Callable:
    """The network :func:`infer_logits` runs: with a sliding window (a ``patch_size``) and
    ``cfg.evaluation.inference_copy``, a faster copy of ``model`` computing the same outputs
    (BatchNorms folded, CPU convolutions packed: :func:`medbalance.engine.fold.inference_copy`);
    else ``model`` itself.

    A caller that infers many batches with one network makes it once and passes it on
    (``infer_logits`` then finds nothing left to change).
    """
    if cfg.patch_size in (None, "auto") or not cfg.evaluation.inference_copy or not isinstance(model, nn.Module):
        return model
    return inference_copy(model)


def infer_logits(
    model: nn.Module | Callable[[torch.Tensor], torch.Tensor],
    image: torch.Tensor,
    cfg: RunConfig,
    *,
    forward: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None = None,
    spacing: torch.Tensor | Sequence[Sequence[float]] | None = None,
) -> torch.Tensor:
    """Logits of ``image`` ``(N, C, *spatial)``: ``forward(model, image)``, or with a ``patch_size`` a
    sliding window of that size with Gaussian weights, ``cfg.evaluation``'s overlap and flip
    test-time augmentation, windows batched by ``eval_batch_size`` (else ``batch_size``).

    The sliding window runs an inference copy of ``model`` (:func:`inference_model`; ``model`` is
    not changed) unless ``cfg.evaluation.inference_copy`` is false.

    With a target spacing (:func:`target_spacing`) each image is resampled from its own
    ``spacing`` (one row per image in array axis order; ``None``: 1 per axis) to it, inferred
    there, and its logits resampled linearly back to its own shape (:mod:`medbalance.data.spacing`),
    so the logits always have the input's shape.

    The one inference path of validation, ``evaluate``, ``predict`` and the experiments.

    Args:
        model: the network, or any callable of a batch (then it runs as given).
        image: ``(N, C, *spatial)`` input.
        cfg: the run's config.
        forward: how to run the network on a batch, ``forward(model, batch)`` (a method's hook,
            a memory layout); ``None``: ``model(batch)``.
        spacing: per-image spacing (see above).
    """
    window = window_of(cfg.patch_size, image.ndim - 2)
    model = inference_model(model, cfg)

    def predict(x: torch.Tensor) -> torch.Tensor:
        with flush_denormals():  # the network only: resampling and scoring (scipy) run outside
            return model(x) if forward is None else forward(model, x)

    target = target_spacing(cfg)
    if target is None:
        return _infer_at(predict, image, cfg, window)
    native, dims = tuple(image.shape[2:]), image.ndim - 2
    if len(target) != dims:
        raise ValueError(f"the run infers at spacing {list(target)} but the image has {dims} spatial axes")
    out = []
    for k in range(len(image)):
        own = tuple(float(s) for s in spacing[k]) if spacing is not None else (1.0,) * dims
        shape = resampled_shape(native, own, target)
        x = image[k : k + 1]
        if shape != native:
            x = torch.from_numpy(resample_image(x[0].float().cpu().numpy(), shape)[None]).to(image.device)
        out.append(resample_logits(_infer_at(predict, x, cfg, window), native))
    return torch.cat(out)


def _infer_at(
    predict: Callable[[torch.Tensor], torch.Tensor], image: torch.Tensor, cfg: RunConfig, window: tuple[int, ...] | None
) -> torch.Tensor:
    if window is None:
        return predict(image)
    return sliding_window_inference(
        image,
        predict,
        patch_size=window,
        overlap=cfg.evaluation.overlap,
        batch_size=cfg.eval_batch_size or cfg.batch_size,
        flip_axes=tuple(range(image.ndim - 2)) if cfg.evaluation.flip_tta else (),
    )


def _state_tensors(optimizer: torch.optim.Optimizer) -> Iterator[torch.Tensor]:
    """The optimiser's per-parameter state tensors (Adam's moments, SGD's momentum)."""
    for state in optimizer.state.values():
        yield from (v for v in state.values() if isinstance(v, torch.Tensor))


def _duration(seconds: float) -> str:
    """``1h02m``, ``3m05s`` or ``12s``."""
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def _kept(run_dir: Path | None) -> str:
    """What a stopped run keeps, for its error line."""
    if run_dir is None or not (run_dir / "checkpoints" / "last.pt").is_file():
        return "no checkpoint was written (no epoch ended with finite weights)"
    return f"the last good checkpoint '{run_dir / 'checkpoints' / 'last.pt'}' is kept"


def _scalars(scores: dict) -> dict:
    return {k: v for k, v in scores.items() if isinstance(v, (int, float))}
