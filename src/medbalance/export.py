"""Export a trained run for deployment: ONNX, or a ``torch.export`` program, with dynamic sizes.

``medbalance export RUN_DIR --format onnx|torchscript`` writes ``RUN_DIR/export/model.onnx``
or ``RUN_DIR/export/model.pt2`` and its record ``model.onnx.json`` / ``model.pt2.json`` (what
was exported, the preprocessing facts and the parity measured). An existing file is never
replaced without ``--force``. Both take a float32 batch ``(N, C_in, H, W)`` scaled to
[0, 1] and return the network's logits; batch size, height and width are dynamic.

Why these two paths, and their limits (measured with torch 2.13 on the package's nets):

- ONNX uses the dynamo exporter (``torch.onnx.export(..., dynamo=True)``, needs
  ``onnxscript``). The legacy exporter bakes the sizes of the padding to a multiple of
  ``2 ** depth`` into the graph and fails at any other input size. The trace uses an
  odd-sized example of two different sides and batch 2, so the padding stays general. ONNX
  has no shape guards: an input so small that the deepest feature map vanishes is not
  refused.
- ``torchscript``: ``torch.jit.script`` cannot compile the networks (they use ``Sequence``
  annotations and Python control flow) and ``torch.jit.trace`` bakes the padding sizes in
  like the legacy exporter; both are deprecated. So this format writes TorchScript's
  successor, a ``torch.export`` program (``.pt2``): load it with
  ``torch.export.load(path).module()``, no medbalance needed, or compile it ahead of time
  for C++ with AOTInductor. ``torch.export`` guards a program with the shape facts it
  relied on while tracing; the networks are written so that there are none to rely on:
  the crop after the padding is an ``index_select`` while exporting (a slice guards on
  whether it is contiguous), CE-Net pads a short map with -inf instead of clipping its
  pooling kernel and applies its one-channel 1x1 convolution as a weighted channel sum
  (a convolution of a 1x1 map guards on its layout), the classifiers skip their
  channels-last conversion, and tracing runs with ``backed_size_oblivious`` (no
  specialisation on a size being 1). So every network's ``.pt2`` takes any batch and any
  size, like its ONNX file.

Both are traced at an odd size with two different sides; ``export_run`` checks parity at
the training size, an odd size and a third with a different aspect ratio, batch 1 to 3.

The preprocessing facts (input channels, resize size, threshold, class names, task) are
stored with the model (ONNX ``metadata_props``, the ``medbalance.json`` extra file of a
``.pt2``) and in ``export.json``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from medbalance._atomic import atomic_write_text, guard_library_write, remove_stale_temporaries, replace_atomically
from medbalance._paths import claim_new
from medbalance.config import FolderData
from medbalance.errors import CheckpointError

__all__ = ["EXPORT_FORMATS", "ExportResult", "export_run", "export_model", "load_exported"]

log = logging.getLogger(__name__)

EXPORT_FORMATS = ("onnx", "torchscript")
_SUFFIX = {"onnx": ".onnx", "torchscript": ".pt2"}


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_run` wrote and measured.

    Attributes:
        path: the exported model.
        format: ``"onnx"`` or ``"torchscript"``.
        max_abs_diff: largest absolute logit difference between the exported model and
            PyTorch over the parity inputs (NaN when the check was skipped).
        parity_shapes: the input shapes of the parity check.
        metadata: the preprocessing facts stored with the model.
    """

    path: Path
    format: str
    max_abs_diff: float
    parity_shapes: tuple[tuple[int, ...], ...]
    metadata: dict


class _Logits(nn.Module):
    """The network's main output only (deep-supervision and multi-branch nets return tuples)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        return out[0] if isinstance(out, (tuple, list)) else out


@contextlib.contextmanager
def _exporting():
    """Trace for every size, and keep the exporters' per-pass INFO lines and version warnings
    out of the user's log.

    ``backed_size_oblivious`` makes the tracer treat sizes as "may be 1 or larger" instead of
    specialising on whether a map of the example is 1 pixel (memory-layout checks): without it
    CE-Net's pooled maps tie a ``.pt2`` to the example's size class.
    """
    from torch.fx.experimental import _config as shape_config

    loggers = [logging.getLogger(name) for name in ("onnxscript", "onnx_ir", "torch.onnx")]
    levels = [lg.level for lg in loggers]
    with warnings.catch_warnings(), shape_config.patch(backed_size_oblivious=True):
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels):
                lg.setLevel(level)


def _odd(n: int) -> int:
    return n if n % 2 else n + 1


def export_model(
    model: nn.Module,
    path: str | Path,
    *,
    format: str = "onnx",
    in_channels: int,
    example_hw: tuple[int, int] = (65, 67),
    metadata: dict[str, str] | None = None,
) -> Path:
    """Export ``model`` (logits out) with dynamic batch, height and width.

    Args:
        model: the network; exported in eval mode.
        path: the file to write (``.onnx`` or ``.pt2``).
        format: one of :data:`EXPORT_FORMATS`.
        in_channels: ``C_in`` of the input ``(N, C_in, H, W)``.
        example_hw: the spatial size of the trace example ``(2, C_in, H, W)``: two
            different odd sides, so that no size is special in the trace.
        metadata: string key/values stored with the model: ONNX ``metadata_props``, or the
            ``medbalance.json`` extra file of a ``.pt2`` (``torch.export.load(path,
            extra_files={"medbalance.json": ""})`` reads it back).

    Returns:
        The path written.

    Raises:
        ValueError: for an unknown ``format``.
    """
    if format not in EXPORT_FORMATS:
        raise ValueError(f"format must be one of {', '.join(EXPORT_FORMATS)}, got '{format}'")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wrapper = _Logits(model).eval()
    example = torch.rand(2, in_channels, *example_hw, generator=torch.Generator().manual_seed(0))
    auto = torch.export.Dim.AUTO
    dynamic = ({0: auto, 2: auto, 3: auto},)
    if format == "torchscript":
        with _exporting():
            program = torch.export.export(wrapper, (example,), dynamic_shapes=dynamic)
        extra = {"medbalance.json": json.dumps(metadata or {})}
        replace_atomically(path, guard_library_write(lambda fh: torch.export.save(program, fh, extra_files=extra)))
        return path
    with _exporting():
        program = torch.onnx.export(
            wrapper,
            (example,),
            dynamo=True,
            dynamic_shapes=dynamic,
            input_names=["image"],
            output_names=["logits"],
            verbose=False,
        )
    proto = program.model_proto
    for key, value in (metadata or {}).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    replace_atomically(path, lambda fh: fh.write(proto.SerializeToString()))
    return path


def load_exported(path: str | Path):
    """A callable ``numpy (N, C, H, W) float32 -> numpy logits`` for an exported model."""
    path = Path(path)
    if path.suffix == ".onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return lambda x: session.run(None, {name: np.ascontiguousarray(x, dtype=np.float32)})[0]
    module = torch.export.load(str(path)).module()

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).numpy()

    return run


def _parity(model: nn.Module, path: Path, shapes: list[tuple[int, ...]]) -> float:
    exported = load_exported(path)
    wrapper = _Logits(model).eval()
    generator = torch.Generator().manual_seed(1)
    worst = 0.0
    for shape in shapes:
        x = torch.rand(*shape, generator=generator)
        with torch.inference_mode():
            expected = wrapper(x).numpy()
        try:
            got = exported(x.numpy())
        except AssertionError as exc:  # a torch.export shape guard; none is expected (module docstring)
            raise ValueError(
                f"the exported model refuses an input of shape {shape}: {str(exc).splitlines()[0]}; "
                "export with --format onnx for this network"
            ) from None
        if not (np.isfinite(expected).all() and np.isfinite(got).all()):
            raise ValueError(f"the model gives NaN or infinite logits for an input of shape {shape}; not exported")
        if got.shape != expected.shape:
            raise RuntimeError(f"exported model gave shape {got.shape} for input {shape}; PyTorch {expected.shape}")
        worst = max(worst, float(np.abs(got - expected).max()))
    return worst


def export_run(
    run_dir: str | Path,
    *,
    format: str = "onnx",
    out: str | Path | None = None,
    check: bool = True,
    atol: float = 1e-4,
    force: bool = False,
) -> ExportResult:
    """Export the ``best.pt`` model of a run folder and check it against PyTorch.

    Args:
        run_dir: a finished run folder.
        format: ``"onnx"`` (``model.onnx``) or ``"torchscript"`` (a ``torch.export``
            program, ``model.pt2``; see the module docstring for why).
        out: output file; default ``RUN_DIR/export/model.<onnx|pt2>``.
        check: run the exported model on random inputs of batch sizes 1 and 3 and sizes
            other than the traced one, and compare with PyTorch.
        atol: largest absolute logit difference accepted by the check.
        force: replace an existing model file and its record (otherwise refused).

    Returns:
        The :class:`ExportResult`; ``<model file>.json`` beside the model records it.

    Raises:
        ValueError: unknown ``format``, an ``out`` suffix that does not match it, a parity
            error above ``atol`` or non-finite logits (the model file is then removed).
        CheckpointError: not a run folder, or its weights are not finite.
        RunDirError: the model file or its record exists (without ``force``), lies outside
            the folder of ``out`` (a symbolic link), or cannot be written (a full disk).
    """
    from medbalance.engine.checkpoint import nonfinite_tensors
    from medbalance.engine.run import load_run

    if format not in EXPORT_FORMATS:
        raise ValueError(f"format must be one of {', '.join(EXPORT_FORMATS)}, got '{format}'")
    path = Path(out) if out is not None else Path(run_dir) / "export" / f"model{_SUFFIX[format]}"
    if path.suffix != _SUFFIX[format]:
        raise ValueError(f"out must end with {_SUFFIX[format]} for format '{format}', got '{path.name}'")
    record_path = path.with_name(path.name + ".json")
    for target in (path, record_path):
        claim_new(path.parent, target, force=force, what="export file")
    run = load_run(run_dir)
    bad = nonfinite_tensors(run.model.state_dict())
    if bad:
        best = Path(run_dir) / "checkpoints" / "best.pt"
        raise CheckpointError(f"checkpoint '{best}' has non-finite weights ({bad[0]}); nothing exported")
    remove_stale_temporaries(path.parent)
    size = getattr(run.cfg.data, "size", None)
    resize = size if isinstance(run.cfg.data, FolderData) else None
    metadata = {
        "medbalance_version": str(run.meta.get("medbalance", "")),
        "task": run.meta["task"],
        "model": run.meta["model"],
        "in_channels": str(run.meta["in_channels"]),
        "out_channels": str(run.meta["out_channels"]),
        "class_names": json.dumps(run.meta["class_names"]),
        "threshold": str(run.cfg.threshold),
        "input_size": str(size) if size else "any",
        "resize_to": str(resize) if resize else "none",
        "input": "float32 (N, C_in, H, W); 8-bit images / 255, other intensities min-max scaled per image",
        "output": (
            "logits (N, 1, H, W): foreground where sigmoid > threshold"
            if run.meta["out_channels"] == 1 and run.meta["task"] == "segmentation"
            else "logits (N, C, ...): argmax over dim 1"
        ),
    }
    t0 = time.perf_counter()
    log.info("export: tracing %s to %s (dynamic batch and size)", run.meta["model"], format)
    side = size or 64
    channels = run.meta["in_channels"]
    shapes = [(1, channels, side, side), (3, channels, side + 5, side + 9), (2, channels, 2 * side, side // 2 + 3)]
    export_model(
        run.model, path, format=format, in_channels=channels, example_hw=(_odd(side), _odd(side) + 2), metadata=metadata
    )
    diff = math.nan
    if check:
        log.info("export: parity check against PyTorch at %s", ", ".join("x".join(map(str, s)) for s in shapes))
        try:
            diff = _parity(run.model, path, shapes)
            if not diff <= atol:
                raise ValueError(f"exported model '{path}' differs from PyTorch by {diff:.2e} (atol {atol:g}); removed")
        except BaseException:
            path.unlink(missing_ok=True)  # a model that failed its check is not left looking exported
            raise
    record = {
        "format": format,
        "file": path.name,
        "seconds": round(time.perf_counter() - t0, 2),
        "max_abs_diff": None if math.isnan(diff) else diff,
        "parity_shapes": [list(s) for s in shapes] if check else [],
        "atol": atol,
        "metadata": metadata,
        "load": "onnxruntime.InferenceSession(path)" if format == "onnx" else "torch.export.load(path).module()",
    }
    atomic_write_text(record_path, json.dumps(record, indent=1))
    return ExportResult(path, format, diff, tuple(shapes) if check else (), metadata)
