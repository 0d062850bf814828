"""``medbalance`` command line: a thin layer over :mod:`medbalance.engine`.

Exit codes: 0 success, 2 bad input (one ``error: ...`` line, no traceback), 1 a bug.

Importing this module and building the parser load no torch (nor the config models, which
import the data package and with it torch): ``medbalance --version`` and ``--help`` answer at
once; each command imports what it needs.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import textwrap
import time
from contextlib import nullcontext
from functools import partial
from pathlib import Path

from tqdm.contrib.logging import logging_redirect_tqdm

from medbalance import __version__
from medbalance._atomic import atomic_write_text, remove_stale_temporaries
from medbalance._malloc import tune_malloc
from medbalance._paths import check_links_inside, check_out_folder
from medbalance.configs import BUILTIN_CONFIGS, config_path
from medbalance.errors import USER_ERRORS, CheckpointError, ConfigError, DataError

log = logging.getLogger("medbalance")

#: ``--format`` of ``export``: medbalance.export's EXPORT_FORMATS and FORMAT_ALIASES (a test keeps them
#: equal), written out because importing medbalance.export imports torch.
EXPORT_CHOICES = ("onnx", "pt2", "torchscript")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2 (argparse prints usage + prog name)
        sys.stderr.write(f"error: {message} (see '{self.prog} --help')\n")
        raise SystemExit(2)


def _print_summary(result) -> None:
    if not result.is_global_zero:
        return
    metrics = result.metrics
    split = "test" if "test" in metrics else "val"
    scores = metrics[split]
    keys = [
        k
        for k in (
            "mean_dice_fg",
            "mean_iou_fg",
            "recall_majority",
            "recall_minority",
            "accuracy",
            "macro_precision",
            "macro_recall",
        )
        if k in scores
    ]
    print(f"run folder: {result.run_dir}")
    print(f"report: {result.run_dir / 'report.html'} (figures and tables; report.md beside it)")
    print(f"{split} scores (best epoch {metrics['best_epoch']}): " + "  ".join(f"{k} {scores[k]:.4f}" for k in keys))


def cmd_demo(args: argparse.Namespace) -> None:
    from medbalance.config import load_config
    from medbalance.engine import train

    cfg = load_config(config_path("demo"), args.set)

    log.info(
        "demo: U-Net on intra-class phantoms (%d train images of %dpx, %d epochs)",
        cfg.data.n_train,
        cfg.data.size,
        cfg.epochs,
    )
    _print_summary(train(cfg, out=args.out, progress=False if args.quiet else None))


def cmd_train(args: argparse.Namespace) -> None:
    from medbalance.config import load_config
    from medbalance.data.folds import is_cv_dir, with_fold

    cross_validation = False
    if args.resume:
        if args.set or args.config or args.fold is not None:
            raise ConfigError("--resume continues a run with its own config.yaml; drop CONFIG, --set and --fold")
        cross_validation = is_cv_dir(args.resume)
        if not cross_validation and not Path(args.resume, "checkpoints", "last.pt").is_file():
            raise CheckpointError(f"'{args.resume}' has no checkpoints/last.pt to resume from")
        cfg = None
    elif args.config:
        cfg = load_config(config_path(args.config), args.set)
        if args.fold is not None:
            cfg = with_fold(cfg, args.fold)
        cross_validation = cfg.cv is not None and cfg.cv.fold is None
    else:
        raise ConfigError(
            "train needs CONFIG (a YAML file or one of: " + ", ".join(BUILTIN_CONFIGS) + ") or --resume RUN_DIR"
        )
    progress = False if args.quiet else None
    if cross_validation:  # every fold, then the out-of-fold scores
        from medbalance.engine.folds import resume_cv, train_cv

        with _resume_lock(args.resume):
            if args.resume:
                result = resume_cv(args.resume, progress=progress)
            else:
                result = train_cv(cfg, out=args.out, progress=progress)
        _print_cv_summary(result)
        return
    from medbalance.engine import train  # heavy (torch, Fabric): only once the input is known to be good

    with _resume_lock(args.resume):
        _print_summary(train(cfg, out=args.out, resume=args.resume, progress=progress))


def _print_cv_summary(result) -> None:
    folds = result.summary["folds"]
    print(f"cross-validation folder: {result.cv_dir} ({folds} folds: fold_0 ... fold_{folds - 1})")
    _print_out_of_fold(result.summary, result.cv_dir / "cv_results")


def _print_out_of_fold(summary: dict, folder: Path) -> None:
    oof = summary["out_of_fold"]
    if "mean" in oof:  # segmentation: the per-case table's summary
        scores = {f"mean {k}": v for k, v in oof["mean"].items() if k in ("dice", "iou")}
        scores.update({f"pooled {k}": v for k, v in oof["pooled_mean"].items() if k == "dice"})
        print(f"out-of-fold cases: {oof['num_cases']} (table: {folder / 'cases.csv'})")
    else:
        scores = {k: v for k, v in oof.items() if k in ("accuracy", "macro_precision", "macro_recall")}
    print("out-of-fold scores: " + "  ".join(f"{k} {v:.4f}" for k, v in scores.items()))
    print(f"scores written to {folder / 'summary.json'}")


def _fold_arg(text: str) -> int | str:
    if text == "all":
        return text
    if text.isdigit():
        return int(text)
    raise argparse.ArgumentTypeError(f"expected a fold number (0, 1, ...) or 'all', got '{text}'")


def _resume_lock(folder: str | None):
    """The lock of a folder being resumed (``nullcontext`` for a new run)."""
    from medbalance.engine.rundir import run_lock

    # Fabric re-launches this command for its extra processes: only the first one takes the lock.
    if folder and Path(folder).is_dir() and os.environ.get("LOCAL_RANK", "0") == "0":
        return run_lock(folder)
    return nullcontext()


def cmd_predict(args: argparse.Namespace) -> None:
    import numpy as np
    from tqdm.auto import tqdm

    from medbalance.data.folds import is_cv_dir
    from medbalance.data.io import image_stem
    from medbalance.data.medical import claim_outputs, list_inputs, mask_path, read_native, read_slices, write_labels
    from medbalance.data.readers.nnunet import channel_cases, read_case
    from medbalance.engine.folds import ensemble_arrays, ensemble_image, load_folds
    from medbalance.engine.run import (
        in_slice_batches,
        is_native,
        load_run,
        most_foreground_slice,
        predict_arrays,
        predict_image,
    )
    from medbalance.report.plots import save_overlay

    folds = load_folds(args.run_dir) if is_cv_dir(args.run_dir) else None  # an ensemble: mean probabilities
    run = folds[0] if folds else load_run(args.run_dir)
    files = list_inputs(Path(args.input))
    out = Path(args.out)
    segmentation = run.meta["task"] == "segmentation"
    names = run.meta["class_names"]
    binary = run.task.out_channels == 1
    # an nnU-Net run reads <case>_<XXXX> channel files and names each mask <case>, as nnU-Net does
    nnunet = run.cfg.data.kind == "nnunet"
    cases = channel_cases(files) if nnunet else [(f, [f]) for f in files]
    files = [case for case, _ in cases]
    if segmentation:
        # every output is named up front, so a clash stops before any work
        targets = [mask_path(out, f) for f in files]
        targets += [out / f"{image_stem(f)}_overlay.png" for f in files] if args.overlay else []
    else:
        targets = [out / "predictions.csv"]
    claim_outputs(out, targets, args.input)
    rows = ["name,prediction,label," + ",".join(f"p_{c}" for c in names)]
    bar = tqdm(cases, desc="predict", unit="image", disable=True if args.quiet else None, dynamic_ncols=True)
    for path, channel_files in bar:
        bar.set_postfix_str(path.name)
        if is_native(run):  # native size and stored intensities, the run's normalisation
            channels = run.meta["in_channels"]
            if nnunet:
                image, info = read_case(channel_files, channels=channels)
            else:
                image, info = read_native(path, channels=channels)
            spacing = tuple(reversed(info.geometry.spacing)) if info.geometry is not None else None  # array order
            predict = partial(ensemble_image, folds) if folds else partial(predict_image, run)
            _, labels = predict(image, spacing=spacing)  # segmentation
            volume = image.ndim == 4
            labels, slices = (labels, image.swapaxes(0, 1)) if volume else (labels[None], image[None])
        else:
            slices, info = read_slices(path, channels=run.meta["in_channels"])
            predict = (lambda x: ensemble_arrays(folds, x)) if folds else (lambda x: predict_arrays(run, x))
            parts = in_slice_batches(predict, slices)
            probs = np.concatenate([p for p, _ in parts])
            labels = np.concatenate([y for _, y in parts])
        if segmentation:
            write_labels(mask_path(out, path), labels, info, binary=binary)
            if args.overlay:
                k = most_foreground_slice(labels)
                save_overlay(out / f"{image_stem(path)}_overlay.png", slices[k], labels[k], run.task.num_classes)
        else:
            for k, (y, p) in enumerate(zip(labels, probs)):
                name = path.name if len(labels) == 1 else f"{path.name}#{k}"  # slices of a volume
                rows.append(f"{name},{int(y)},{names[int(y)]}," + ",".join(f"{v:.6f}" for v in p))
    if not segmentation:
        atomic_write_text(out / "predictions.csv", "\n".join(rows) + "\n")
    print(f"wrote {len(files)} prediction(s) to {out}")


def cmd_evaluate(args: argparse.Namespace) -> None:
    from medbalance.config import load_config
    from medbalance.data.build import build_splits
    from medbalance.data.folder import read_folder
    from medbalance.data.folds import is_cv_dir
    from medbalance.engine.folds import evaluate_ensemble, load_folds, write_out_of_fold
    from medbalance.engine.run import evaluate_run, load_run

    folds = load_folds(args.run_dir) if is_cv_dir(args.run_dir) else None  # an ensemble: mean probabilities
    run = folds[0] if folds else load_run(args.run_dir)
    folder = (
        Path(args.run_dir) / "evaluations" / f"eval-{time.strftime('%Y%m%d-%H%M%S')}-{time.time_ns() % 1_000_000:06d}"
    )
    if args.data is None:
        if not folds:
            raise DataError("--data is needed for a run folder (only a cross-validation folder is scored without it)")
        _print_out_of_fold(write_out_of_fold(args.run_dir, folder), folder)
        return
    source = Path(args.data)
    if source.suffix in (".yaml", ".yml"):
        splits = build_splits(load_config(source))
        data, split = (splits.test, "test") if splits.test is not None else (splits.val, "val")
    elif (source / "dataset.json").is_file():  # nnU-Net's raw layout: every labelled case
        from medbalance.data.readers.nnunet import read_nnunet

        data, split = read_nnunet(source), "nnunet"
    elif source.is_dir():
        size = getattr(run.cfg.data, "size", None)
        ignore = run.meta.get("ignore_index")
        data = read_folder(
            source, task=run.meta["task"], channels=run.meta["in_channels"], size=size, ignore_index=ignore
        )
        if data.num_classes == len(run.meta["class_names"]):  # the run's names (data.classes) over class1, class2 ...
            data.class_names = tuple(run.meta["class_names"])
        split = "folder"
    else:
        raise DataError(f"--data must be a folder or a YAML config, got '{source}'")
    scores = evaluate_ensemble(folds, data, cases=folder) if folds else evaluate_run(run, data, cases=folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "scores.json"
    atomic_write_text(path, json.dumps({"data": str(source), "split": split, "scores": scores}, indent=1))
    scalars = {k: v for k, v in scores.items() if isinstance(v, float) and math.isfinite(v)}
    for key, value in scalars.items():
        print(f"{key:>20s}  {value:.4f}")
    print(f"scores written to {path}")


INSPECT_SPLITS = ("train", "val", "test", "all")


def _inspect_splits(source: str, overrides: list[str], split: str) -> tuple[str, dict]:
    """The task and the wanted splits of ``source``: a data folder, a YAML config or a built-in name."""
    from medbalance.config import apply_overrides, load_config, parse_config
    from medbalance.data.build import build_splits
    from medbalance.data.folder import read_folder

    path = Path(source)
    if (path / "dataset.json").is_file():  # nnU-Net's raw layout, split as `train` splits it by default
        cfg = parse_config(apply_overrides({"data": {"kind": "nnunet", "path": str(path)}}, overrides), source=source)
    elif path.is_dir():
        task = "segmentation" if (path / "images").is_dir() or (path / "masks").is_dir() else "classification"
        if split == "all" and not overrides:  # the whole folder, without the seeded split (which needs >= 2 images)
            return task, {"all": read_folder(path, task=task)}
        # the same seeded split `train` makes of a folder, with --set data.* applied (e.g. data.size=256)
        raw = {"data": {"kind": "folder", "path": str(path), "task": task}}
        cfg = parse_config(apply_overrides(raw, overrides), source=source)
    elif path.is_file() or source in BUILTIN_CONFIGS:
        cfg = load_config(config_path(source), overrides)
    else:
        raise DataError(
            f"'{source}' is neither a data folder, a config file nor a built-in config ({', '.join(BUILTIN_CONFIGS)})"
        )
    splits = build_splits(cfg)
    available = {"train": splits.train, "val": splits.val, "test": splits.test}
    if split == "all":
        return cfg.task, {k: v for k, v in available.items() if v is not None}
    if available[split] is None:
        raise DataError(f"'{source}' has no {split} split (try --split train, val or all)")
    return cfg.task, {split: available[split]}


def cmd_inspect(args: argparse.Namespace) -> None:
    from medbalance.data.stats import dataset_stats
    from medbalance.losses.weights import CLASS_WEIGHT_SCHEMES, class_weights, effective_number_weights
    from medbalance.report.dataset import measure, write_dataset_report

    if not 0.0 <= args.beta < 1.0:
        raise ValueError(f"--beta must be in [0, 1), got {args.beta:g}")
    if args.out:
        check_out_folder(args.out)  # before the work: a run's report.html or an earlier report is never replaced
    task, datasets = _inspect_splits(args.path, args.set, args.split)
    parts = [dataset_stats(ds, ds.num_classes, task, ignore_index=ds.ignore_index) for ds in datasets.values()]
    stats = sum(parts[1:], parts[0])
    classification = task == "classification"
    # The _fg schemes treat class 0 as background, which a classification dataset does not have.
    schemes = [s for s in CLASS_WEIGHT_SCHEMES if not (classification and "_fg" in s)]
    weights = {s: class_weights(stats.counts, s).tolist() for s in schemes}
    effective = effective_number_weights(stats.counts, beta=args.beta).tolist() if classification else None
    shape = measure(stats, list(datasets.values()), beta=args.beta)
    if args.out:
        report = write_dataset_report(
            args.out,
            stats,
            shape,
            weights,
            source=args.path,
            split=args.split,
            beta=args.beta,
            effective_weights=effective,
        )
        log.info("dataset report with plots: %s", report)
    if args.json:
        report = {"source": args.path, "split": args.split, **stats.to_dict(), **shape.to_dict()}
        report.update(weights=weights, effective_number_weights=effective, beta=args.beta if classification else None)
        print(json.dumps(report, indent=1))
        return

    unit = "samples" if classification else "pixels"
    which = f"all splits ({' + '.join(datasets)})" if args.split == "all" else f"{args.split} split"
    print(f"{args.path}: {which}, {task}, {stats.num_images} images")
    if stats.empty_masks is not None:
        print(f"images whose mask has no foreground: {stats.empty_masks} of {stats.num_images}")
    print(f"imbalance ratio (largest / smallest present class): {stats.imbalance_ratio:.1f}")
    if stats.absent_classes:
        print("absent classes: " + ", ".join(stats.class_names[i] for i in stats.absent_classes))
    summary = shape.to_dict()
    if "foreground_fraction" in summary:
        fg = summary["foreground_fraction"]
        print(
            f"foreground fraction per image: median {fg['median']:.4f}, min {fg['min']:.4f}, max {fg['max']:.4f}; "
            f"{fg['below_1_percent']} image(s) under 1 %"
        )
    columns = {f"w{CLASS_WEIGHT_SCHEMES.index(s) + 1}": w for s, w in weights.items()}
    if effective is not None:
        columns["eff"] = effective
    extra: dict[str, list[str]] = {}  # measured columns, one text cell per class
    if "object_sizes" in summary:
        sizes = list(summary["object_sizes"].values())
        extra["objects"] = ["-", *(str(s["count"]) for s in sizes)]
        extra["med.px"] = ["-", *(f"{s['median']:g}" if s["count"] else "-" for s in sizes)]
    elif "effective_numbers" in summary:
        extra["eff.n"] = [f"{v:.1f}" for v in summary["effective_numbers"]]
    width = max(len("class"), *(len(n) for n in stats.class_names))
    print(
        f"\n{'class':<{width}} {unit:>12} {'percent':>9} "
        + "".join(f"{h:>9}" for h in extra)
        + " "
        + " ".join(f"{h:>7}" for h in columns)
    )
    for i, name in enumerate(stats.class_names):
        cells = " ".join(f"{w[i]:7.4f}" for w in columns.values())
        measured = "".join(f"{v[i]:>9}" for v in extra.values())
        print(f"{name:<{width}} {stats.counts[i]:>12d} {100 * stats.fractions[i]:8.3f}% {measured} {cells}")
    legend = ", ".join(f"w{CLASS_WEIGHT_SCHEMES.index(s) + 1} {s}" for s in schemes)
    print(f"\nclass weights (each column sums to 1): {legend}")
    if effective is not None:
        print(f"eff: effective-number weights (Cui et al. 2019, beta {args.beta:g}), summing to the class count")
    if extra:
        what = "connected objects and their median size in pixels" if "objects" in extra else "effective numbers"
        print(f"{', '.join(extra)}: {what}")


def cmd_report(args: argparse.Namespace) -> None:
    from medbalance.report import write_comparison, write_experiment_report, write_report
    from medbalance.report.html import is_run_dir, read_json

    dirs = [Path(d) for d in args.run_dirs]
    for d in dirs:
        if not d.is_dir():
            raise DataError(f"'{d}' is not a folder")
    try:
        if len(dirs) == 1 and (dirs[0] / "results.json").is_file():
            check_links_inside(dirs[0])
            path = write_experiment_report(dirs[0])
        elif len(dirs) == 1:
            remove_stale_temporaries(dirs[0])  # of a report write a kill cut short
            check_links_inside(dirs[0])
            if not is_run_dir(dirs[0]):
                raise DataError(f"'{dirs[0]}' is neither a finished run (config.yaml + metrics.json) nor an experiment")
            metrics = read_json(dirs[0] / "metrics.json")
            path = write_report(dirs[0], metrics)
        else:
            out = Path(args.out) if args.out else dirs[0].parent / f"compare-{time.strftime('%Y%m%d-%H%M%S')}"
            check_out_folder(out)
            path = write_comparison(dirs, out)
    # a hand-edited or foreign metrics.json / results.json / history.csv of the wrong shape
    except (KeyError, TypeError, AttributeError, IndexError) as exc:
        where = ", ".join(f"'{d}'" for d in dirs)
        raise DataError(
            f"cannot report {where}: its metrics.json, results.json or history.csv is not as medbalance writes it "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
        ) from None
    print(f"report: {path}")


def cmd_export(args: argparse.Namespace) -> None:
    from medbalance.export import export_run

    result = export_run(args.run_dir, format=args.format, out=args.out, check=not args.no_check, force=args.force)
    print(f"exported to {result.path}")
    if args.no_check:
        print("parity check skipped (--no-check)")
    else:
        shapes = ", ".join("x".join(map(str, s)) for s in result.parity_shapes)
        print(f"parity with PyTorch at {shapes}: max |difference| {result.max_abs_diff:.2e}")


def _seed_list(text: str) -> list[int]:
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 0,1,2, got '{text}'") from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got '{text}'")
    return value


def cmd_experiment(args: argparse.Namespace) -> None:
    from medbalance.experiments import run_experiment

    with _resume_lock(args.resume):
        result = run_experiment(
            args.name,
            scale=args.scale,
            data=args.data,
            seeds=args.seeds,
            options=args.set,
            out=args.out,
            resume=args.resume,
            progress=not args.quiet,
            device=args.device,
            command=" ".join(["medbalance", *sys.argv[1:]]) if sys.argv[1:2] == ["experiment"] else "",
            jobs=args.jobs,
        )
    print(f"experiment folder: {result.run_dir}")
    print(f"tables: {result.run_dir / 'results.md'}")


def cmd_cache(args: argparse.Namespace) -> None:
    from medbalance.data.cache import cache_root, clear_cache, list_entries

    root = cache_root()
    entries = list_entries(root)
    total = sum(e.bytes for e in entries)
    if args.action == "clear":
        removed = clear_cache(root)
        print(f"removed {removed} cache entr{'y' if removed == 1 else 'ies'} ({_mib(total)}) from {root / 'datasets'}")
        return
    print(
        f"data cache: {root / 'datasets'} ({len(entries)} entr{'y' if len(entries) == 1 else 'ies'}, {_mib(total)}; "
        "set MEDBALANCE_CACHE to move it, data.cache: false to bypass it)"
    )
    for e in entries:
        print(f"  {e.path.name[:12]}  {_mib(e.bytes):>10}  {e.samples:>6} samples  {e.source}")


def _mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"


def add_command(
    sub: argparse._SubParsersAction,
    name: str,
    common: argparse.ArgumentParser,
    *,
    help: str,
    description: str,
    example: str,
) -> argparse.ArgumentParser:
    """A sub-command parser whose ``--help`` shows ``description`` (wrapped) and one ``Example:``
    on a line of its own (hence the raw formatter)."""
    return sub.add_parser(
        name,
        parents=[common],
        help=help,
        description=f"{textwrap.fill(description, 78)}\n\nExample:\n  {example}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


RUN_DIR_HELP = "a finished run folder (config.yaml and checkpoints/best.pt), as 'medbalance train' wrote it"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="medbalance",
        description=textwrap.fill(
            "Class-imbalanced medical image analysis: train, evaluate, predict with and export segmentation and "
            "classification models. 'medbalance COMMAND --help' describes each command with an example.",
            78,
        )
        + "\n\nExample:\n  medbalance demo",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"medbalance {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors; no progress bars")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = add_command(
        sub,
        "demo",
        common,
        help="train a small U-Net on the embedded intra-class phantoms (quick start)",
        description="Train a small U-Net on generated intra-class phantoms (no data needed, about a minute on a "
        "CPU) and write a run folder with checkpoints, scores, predictions and report.html.",
        example="medbalance demo --out runs --set epochs=2",
    )
    p.add_argument("--out", default="runs", help="parent folder of the new run folder (default: runs)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value")
    p.set_defaults(func=cmd_demo)

    p = add_command(
        sub,
        "train",
        common,
        help="train from a YAML config, or resume an interrupted run",
        description="Train one run from a YAML config (or a built-in one) into a new timestamped run folder, or "
        "continue an interrupted run exactly where its last checkpoint left it.",
        example="medbalance train hc18 --set epochs=20 --set patch_size=128",
    )
    p.add_argument(
        "config", nargs="?", metavar="CONFIG", help=f"YAML file or a built-in config ({', '.join(BUILTIN_CONFIGS)})"
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set lr=1e-4 --set data.size=64 (repeatable)",
    )
    p.add_argument("--out", default="runs", help="parent folder of the new run folder (default: runs)")
    p.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue this run from checkpoints/last.pt, or a cross-validation folder's unfinished folds",
    )
    p.add_argument(
        "--fold",
        type=_fold_arg,
        metavar="K|all",
        help="k-fold cross-validation (the config's cv section, default 5 folds): train fold K (its validation "
        "split) into a run folder, or all folds into <name>-cv-<time>/fold_K/ plus out-of-fold scores",
    )
    p.set_defaults(func=cmd_train)

    p = add_command(
        sub,
        "predict",
        common,
        help="predict images or volumes (a file or a folder) with a trained run; masks keep format and geometry",
        description="Predict every image or volume of a file or folder with a trained run. Segmentation masks are "
        "written with the input's name, size and format (JPEG as PNG; volumes with their spacing, origin and "
        "direction); classification writes predictions.csv.",
        example="medbalance predict runs/hc18-20260101-120000 --input scans/ --out masks/ --overlay",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help=RUN_DIR_HELP + ", or a cross-validation folder (fold ensemble)")
    p.add_argument(
        "--input",
        required=True,
        metavar="PATH",
        help="a file or a folder of PNG/JPEG/TIFF/BMP, NIfTI (.nii, .nii.gz), MetaImage (.mhd, .mha), NRRD or "
        "DICOM (.dcm) images; volumes are predicted slice by slice",
    )
    p.add_argument(
        "--out",
        required=True,
        metavar="DIR",
        help="folder for the masks (same name and format as the input, JPEG as PNG) or predictions.csv",
    )
    p.add_argument(
        "--overlay",
        action="store_true",
        help="also write NAME_overlay.png: the prediction drawn on the image (a volume: its most foreground slice)",
    )
    p.set_defaults(func=cmd_predict)

    p = add_command(
        sub,
        "evaluate",
        common,
        help="score a trained run on a labelled folder or a config's test split",
        description="Score a trained run on labelled data: summary scores in RUN_DIR/evaluations/eval-<time>/"
        "scores.json and, for segmentation, per-case scores (cases.csv, cases.json) beside it.",
        example="medbalance evaluate runs/drive-20260101-120000 --data data/drive_test/",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help=RUN_DIR_HELP + ", or a cross-validation folder (fold ensemble)")
    p.add_argument(
        "--data",
        metavar="PATH_OR_CONFIG",
        help="folder in the generic layout, or a YAML config (its test split, else val); required for a run "
        "folder; without it a cross-validation folder is scored on its out-of-fold predictions",
    )
    p.set_defaults(func=cmd_evaluate)

    p = add_command(
        sub,
        "cache",
        common,
        help="list or clear the decoded-data cache ($MEDBALANCE_CACHE, default ~/.cache/medbalance)",
        description="The decoded-data cache: folder datasets are decoded once into uint8 / int16 images and uint8 "
        "labels and memory-mapped at later runs.",
        example="medbalance cache list",
    )
    p.add_argument("action", nargs="?", choices=("list", "clear"), default="list", help="list (default) or clear")
    p.set_defaults(func=cmd_cache)

    p = add_command(
        sub,
        "inspect",
        common,
        help="class-imbalance report of a dataset, with the class weights it implies",
        description="Count the classes of a dataset (pixels or samples per class, empty masks, object sizes) and "
        "print the class weights each weighting scheme derives from them; --out adds an HTML report with plots.",
        example="medbalance inspect data/hc18/ --split all --out hc18-report/",
    )
    p.add_argument(
        "path",
        metavar="PATH",
        help=f"data folder (images/ + masks/, or one sub-folder per class), YAML config or built-in config "
        f"({', '.join(BUILTIN_CONFIGS)})",
    )
    p.add_argument(
        "--split",
        choices=INSPECT_SPLITS,
        default="train",
        help="which split to count (default: train; a folder is split as 'train' splits it)",
    )
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value")
    p.add_argument("--beta", type=float, default=0.9999, help="beta of the effective-number weights (default: 0.9999)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument(
        "--out",
        metavar="DIR",
        help="also write DIR/report.html, report.md, stats.json and the plots (class counts, foreground fraction, "
        "object sizes, class weights)",
    )
    p.set_defaults(func=cmd_inspect)

    p = add_command(
        sub,
        "report",
        common,
        help="rewrite a run's or an experiment's report, or compare several runs side by side",
        description="Rewrite report.html of one run or experiment from its files, or write a comparison report "
        "of several runs (scores side by side, per-class bars, training curves).",
        example="medbalance report runs/a-20260101-120000 runs/b-20260101-130000 --out compare/",
    )
    p.add_argument(
        "run_dirs",
        nargs="+",
        metavar="RUN_DIR",
        help="one run folder (its report.html is rewritten), one experiment folder, or several runs to compare",
    )
    p.add_argument(
        "--out",
        metavar="DIR",
        help="folder of a comparison (default: compare-<time> beside the first run)",
    )
    p.set_defaults(func=cmd_report)

    p = add_command(
        sub,
        "export",
        common,
        help="export a run's model to ONNX or a torch.export program, parity-checked",
        description="Export a run's best model with dynamic batch and image size, check it against PyTorch, and "
        "store with it the exact recipe that reproduces 'medbalance predict' (normalisation or resize, sliding "
        "window, flip TTA, activation; see docs/onnx.md): in the ONNX metadata_props and in <model file>.json.",
        example="medbalance export runs/hc18-20260101-120000 --format onnx",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help=RUN_DIR_HELP)
    p.add_argument(
        "--format",
        choices=EXPORT_CHOICES,
        default="onnx",
        help="onnx: model.onnx (onnxruntime); pt2: model.pt2, a torch.export program, the successor of "
        "TorchScript (torch.jit cannot script these nets and tracing fixes the input size); torchscript: a "
        "deprecated alias of pt2 (default: onnx)",
    )
    p.add_argument("--out", metavar="FILE", help="output file (default: RUN_DIR/export/model.onnx or model.pt2)")
    p.add_argument("--no-check", action="store_true", help="skip the parity check against PyTorch")
    p.add_argument("--force", action="store_true", help="replace an existing model file and its record")
    p.set_defaults(func=cmd_export)

    from medbalance.experiments import EXPERIMENTS, SCALE_NAMES

    p = add_command(
        sub,
        "experiment",
        common,
        help="run one of the seeds' experiments and write its tables",
        description="Run one of the seed papers' experiments (several methods and seeds) into an experiment "
        "folder with results.json, results.md tables and a report.",
        example="medbalance experiment longtail --scale smoke --seeds 0,1",
    )
    p.add_argument("name", metavar="NAME", help=f"experiment: {', '.join(EXPERIMENTS)}")
    p.add_argument(
        "--scale", choices=SCALE_NAMES, default="small", help="smoke (seconds), small (default), paper (GPU)"
    )
    p.add_argument(
        "--data",
        default="phantom",
        metavar="DATA",
        help="'phantom' (default, embedded), a dataset name of ../shared/data, or a folder / .npz path "
        "(baselines and rare-class read theirs from --set sets=RECIPE,...)",
    )
    p.add_argument("--seeds", type=_seed_list, metavar="0,1,2", help="seeds (default: the scale's)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="an experiment option")
    p.add_argument("--out", default="runs", help="parent folder of the experiment folder (default: runs)")
    p.add_argument("--resume", metavar="EXP_DIR", help="continue an interrupted experiment in its folder")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "gpu", "mps"], help="device")
    p.add_argument(
        "--jobs",
        type=_positive_int,
        default=1,
        metavar="N",
        help="train up to N independent runs at once, in worker processes (default: 1)",
    )
    p.set_defaults(func=cmd_experiment)

    from medbalance.cli.combine import add_parser as add_combine_parser

    add_combine_parser(sub, common)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s")
    tune_malloc()  # reuse freed activation memory across steps (MEDBALANCE_MALLOC=default: off)
    try:
        with logging_redirect_tqdm():  # log lines above the progress bar, not through it
            args.func(args)
    except USER_ERRORS as exc:
        sys.stderr.write(f"error: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}\n")
        return 2
    except OSError as exc:  # the machine, not a bug: a full disk, a file where a folder should be
        where = f" '{exc.filename}'" if exc.filename else ""
        sys.stderr.write(f"error: cannot use{where}: {exc.strerror or exc}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted; resume with 'medbalance train --resume RUN_DIR'\n")
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
