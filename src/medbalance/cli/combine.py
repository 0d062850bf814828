"""``medbalance combine MULTI_RUN BINARY_RUN``: seed 002's "reuse background" on new images.

Both runs predict every input image; :func:`medbalance.methods.reuse_background.combine_predictions`
keeps the multi-class labels only where the binary run sees foreground, and the result is
written like ``medbalance predict`` writes masks: one class-index file per input, in the
input's format (PNG for 2D images, the same format and geometry for volumes).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from medbalance.errors import CheckpointError

__all__ = ["add_parser", "cmd_combine"]


def add_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Register ``combine`` on the ``medbalance`` sub-command parsers."""
    from medbalance.cli.main import add_command

    p = add_command(
        sub,
        "combine",
        common,
        help="reuse a binary run's background in a multi-class run's predictions (seed 002)",
        description="Predict images with a multi-class and a binary segmentation run and keep the multi-class "
        "labels only where the binary run sees foreground (seed 002's 'reuse background'); one class-index mask "
        "per input, in the input's format.",
        example="medbalance combine runs/multi-20260101-120000 runs/binary-20260101-130000 --input images/ "
        "--out combined/",
    )
    p.add_argument("multi_run", metavar="MULTI_RUN", help="run folder of the multi-class segmentation model")
    p.add_argument("binary_run", metavar="BINARY_RUN", help="run folder of the binary (foreground/background) model")
    p.add_argument("--input", required=True, metavar="PATH", help="an image file or a folder of images")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the combined class-index PNGs")
    p.add_argument(
        "--tau",
        type=float,
        default=0.5,
        help="foreground probability above which the binary run says foreground (default: 0.5)",
    )
    p.add_argument(
        "--mode",
        choices=("paper", "fg_argmax"),
        default="paper",
        help="paper: multi-class argmax over all classes where foreground (the seed); "
        "fg_argmax: argmax over the foreground classes only (default: paper)",
    )
    p.set_defaults(func=cmd_combine)
    return p


def _check_runs(multi, binary, multi_dir: str, binary_dir: str) -> None:
    for run, where in ((multi, multi_dir), (binary, binary_dir)):
        if run.meta["task"] != "segmentation":
            raise CheckpointError(f"'{where}' is a {run.meta['task']} run; combine needs segmentation runs")
    if multi.task.out_channels < 2:
        raise CheckpointError(f"MULTI_RUN '{multi_dir}' is a binary model; expected a multi-class one (softmax output)")
    if binary.task.out_channels != 1:
        raise CheckpointError(
            f"BINARY_RUN '{binary_dir}' predicts {binary.task.num_classes} classes; expected a binary model "
            "(train it with --set data.binary=true)"
        )
    if multi.meta["in_channels"] != binary.meta["in_channels"]:
        raise CheckpointError(
            f"the runs expect different image channels: {multi.meta['in_channels']} (MULTI_RUN) vs "
            f"{binary.meta['in_channels']} (BINARY_RUN)"
        )


def cmd_combine(args: argparse.Namespace) -> None:
    import numpy as np

    from medbalance.data.medical import claim_outputs, list_inputs, mask_path, read_slices, write_labels
    from medbalance.engine.run import in_slice_batches, load_run, predict_arrays
    from medbalance.methods.reuse_background import combine_predictions

    if not 0.0 <= args.tau < 1.0:
        raise ValueError(f"--tau must be in [0, 1), got {args.tau:g}")
    multi, binary = load_run(args.multi_run), load_run(args.binary_run)
    _check_runs(multi, binary, args.multi_run, args.binary_run)
    files = list_inputs(Path(args.input))
    out = Path(args.out)
    targets = [mask_path(out, f) for f in files]
    claim_outputs(out, targets, args.input)

    def combine(chunk: np.ndarray) -> np.ndarray:
        multi_probs, fg_prob = predict_arrays(multi, chunk)[0], predict_arrays(binary, chunk)[0]
        return combine_predictions(multi_probs, fg_prob, tau=args.tau, mode=args.mode)

    for path, target in zip(files, targets):
        slices, info = read_slices(path, channels=multi.meta["in_channels"])
        write_labels(target, np.concatenate(in_slice_batches(combine, slices)), info, binary=False)
    print(f"wrote {len(files)} combined prediction(s) to {out}")
