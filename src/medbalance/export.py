"""Export a trained run for deployment: ONNX, or a ``torch.export`` program, with dynamic sizes.

``medbalance export RUN_DIR --format onnx|pt2`` writes ``RUN_DIR/export/model.onnx`` or
``RUN_DIR/export/model.pt2`` and its record ``model.onnx.json`` / ``model.pt2.json`` (what was
exported, the inference recipe and the parity measured). An existing file is never replaced
without ``--force``. Both map a float32 batch ``(batch, C_in, [depth,] height, width)``, already
preprocessed, to the network's logits; the batch and spatial sizes are dynamic (the ONNX axes
are named ``batch``, ``depth``, ``height``, ``width``).

The recipe (:func:`inference_spec`) is what a user must do around the network to reproduce
``medbalance predict`` exactly: the intensity normalisation and its constants (native-geometry
runs) or the resize and [0, 1] scaling (runs on resized data), the sliding window (window,
overlap, Gaussian sigma scale, MONAI's grid, padding), flip test-time augmentation and the
output activation. ``docs/onnx.md`` turns it into an onnxruntime script.

Why these two paths, and their limits (measured with torch 2.13 on the package's nets):

- ONNX uses the dynamo exporter (``torch.onnx.export(..., dynamo=True)``, needs
  ``onnxscript``). The legacy exporter bakes the sizes of the padding to a multiple of
  ``2 ** depth`` into the graph and fails at any other input size. The trace uses an
  odd-sized example of two different sides and batch 2, so the padding stays general. ONNX
  has no shape guards: an input so small that the deepest feature map vanishes is not
  refused.
- ``pt2`` (``torchscript``: a deprecated alias): ``torch.jit.script`` cannot compile the
  networks (they use ``Sequence`` annotations and Python control flow) and
  ``torch.jit.trace`` bakes the padding sizes in like the legacy exporter; both are
  deprecated. So this format writes TorchScript's successor, a ``torch.export`` program
  (``.pt2``): load it with
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

The recipe is stored with the model (ONNX ``metadata_props``, the ``medbalance.json`` extra
file of a ``.pt2``: string values, the structured ones as JSON) and in the record beside it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import re
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from medbalance._atomic import atomic_write_text, guard_library_write, remove_stale_temporaries, replace_atomically
from medbalance._paths import claim_new
from medbalance.errors import CheckpointError

__all__ = ["EXPORT_FORMATS", "ExportResult", "export_run", "export_model", "inference_spec", "load_exported"]

log = logging.getLogger(__name__)

EXPORT_FORMATS = ("onnx", "pt2")
#: Former format names, still accepted with a warning.
FORMAT_ALIASES = {"torchscript": "pt2"}
_SUFFIX = {"onnx": ".onnx", "pt2": ".pt2"}
#: Names of the input axes after ``batch, channel``, by spatial dimensionality.
SPATIAL_AXES = {2: ("height", "width"), 3: ("depth", "height", "width")}


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_run` wrote and measured.

    Attributes:
        path: the exported model.
        format: ``"onnx"`` or ``"pt2"``.
        max_abs_diff: largest absolute logit difference between the exported model and
            PyTorch over the parity inputs (NaN when the check was skipped).
        parity_shapes: the input shapes of the parity check.
        metadata: the string key/values stored with the model (the structured ones JSON).
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


def _format(format: str) -> str:
    """``format`` checked, a deprecated alias replaced by its format (with a warning)."""
    if format in FORMAT_ALIASES:
        log.warning(
            "export: format '%s' is deprecated (it writes a torch.export program, not TorchScript); use '%s'",
            format,
            FORMAT_ALIASES[format],
        )
        return FORMAT_ALIASES[format]
    if format not in EXPORT_FORMATS:
        raise ValueError(f"format must be one of {', '.join(EXPORT_FORMATS)}, got '{format}'")
    return format


def _name_axes(proto, names: tuple[str, ...]) -> None:
    """Rename the exporter's size symbols (``s77``) after the input axes they stand for, in
    every shape of the graph (intermediate shapes are expressions of them)."""
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    symbols = {d.dim_param: name for d, name in zip(dims, names) if d.dim_param}
    if not symbols:
        return
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, symbols)) + r")\b")
    for value in (*proto.graph.input, *proto.graph.output, *proto.graph.value_info):
        for d in value.type.tensor_type.shape.dim:
            if d.dim_param:
                d.dim_param = pattern.sub(lambda m: symbols[m.group(1)], d.dim_param)


def export_model(
    model: nn.Module,
    path: str | Path,
    *,
    format: str = "onnx",
    in_channels: int,
    example_size: tuple[int, ...] = (65, 67),
    metadata: dict[str, str] | None = None,
) -> Path:
    """Export ``model`` (logits out) with dynamic batch and spatial sizes.

    Args:
        model: the network; exported in eval mode.
        path: the file to write (``.onnx`` or ``.pt2``).
        format: one of :data:`EXPORT_FORMATS` (or a deprecated alias, :data:`FORMAT_ALIASES`).
        in_channels: ``C_in`` of the input ``(N, C_in, *spatial)``.
        example_size: the spatial size of the trace example ``(2, C_in, *example_size)``, 2 or
            3 axes: different odd sides, so that no size is special in the trace.
        metadata: string key/values stored with the model: ONNX ``metadata_props``, or the
            ``medbalance.json`` extra file of a ``.pt2`` (``torch.export.load(path,
            extra_files={"medbalance.json": ""})`` reads it back).

    Returns:
        The path written. The ONNX input ``image`` and output ``logits`` have the axes
        ``batch``, a fixed channel count, then ``height, width`` or ``depth, height, width``.

    Raises:
        ValueError: for an unknown ``format`` or an ``example_size`` of neither 2 nor 3 axes.
    """
    format = _format(format)
    if len(example_size) not in SPATIAL_AXES:
        raise ValueError(f"example_size must have 2 or 3 spatial sizes, got {tuple(example_size)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wrapper = _Logits(model).eval()
    example = torch.rand(2, in_channels, *example_size, generator=torch.Generator().manual_seed(0))
    auto = torch.export.Dim.AUTO
    # Dim.AUTO, not named Dims: named ones trip torch.export's range analysis on the nets' padding
    dynamic = ({axis: auto for axis in (0, *range(2, example.ndim))},)
    if format == "pt2":
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
    _name_axes(proto, ("batch", "channel", *SPATIAL_AXES[len(example_size)]))
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


def inference_spec(run) -> dict:
    """What to do around an exported network to reproduce ``medbalance predict`` exactly.

    Args:
        run: a loaded run (:func:`medbalance.engine.run.load_run`).

    Returns:
        A JSON-ready dict: ``task``, ``class_names``, ``in_channels``, ``out_channels``,
        ``spatial_dims``, ``ignore_index``, ``axes`` (of the network's input; a segmentation output's too),
        ``preprocessing``, ``inference`` and ``postprocessing`` (see ``docs/onnx.md``).
        Native-geometry runs: ``preprocessing`` holds the fitted normalisation (scheme, per-channel
        ``mean``, ``std``, ``clip``; ``zscore`` without constants uses each image's own) and
        ``inference`` the sliding window (``window`` = the training patch size, ``overlap``,
        ``sigma_scale``, ``min_weight``, ``flip_tta``) or ``whole_image``. Runs on resized data:
        the [0, 1] scaling and the bilinear resize to ``size`` (``align_corners`` false,
        ``antialias`` false) and back.
    """
    from medbalance.engine.engine import window_of
    from medbalance.engine.sliding_window import MIN_WEIGHT

    meta, cfg = run.meta, run.cfg
    segmentation = meta["task"] == "segmentation"
    dims = meta.get("spatial_dims") or 2
    binary = segmentation and meta["out_channels"] == 1
    spec = {
        "task": meta["task"],
        "class_names": list(meta["class_names"]),
        "in_channels": meta["in_channels"],
        "out_channels": meta["out_channels"],
        "spatial_dims": dims,
        "ignore_index": meta.get("ignore_index"),
        "axes": ["batch", "channel", *SPATIAL_AXES[dims]],
    }
    size = getattr(cfg.data, "size", None)
    if meta.get("normalization") is not None:
        spec["preprocessing"] = {
            "geometry": "native",
            "input": "the image's stored values (uint8, int16, ...), channels first (C_in, *spatial), at its own "
            "size; a colour image keeps its RGB channels, a grey one has one channel",
            "normalization": meta["normalization"],
            "rule": "float32; uint8: x / 255 then (x - mean[c]) / std[c]; ct: clip to clip[c], then "
            "(x - mean[c]) / std[c]; zscore with mean/std: (x - mean[c]) / std[c]; zscore without: per image "
            "and channel (x - mean) / max(std, 1e-8) of that image (float64 statistics); none: as stored",
            "volume_through_2d": "a 3D volume given to a 2D run is predicted slice by slice along its first "
            "spatial axis, normalised as one image",
        }
        if meta.get("target_spacing") is not None:
            spec["preprocessing"]["resample"] = {
                "target_spacing": list(meta["target_spacing"]),
                "rule": "after normalising, resample the image from its spacing (array axis order; 1 per axis "
                "when unknown) to target_spacing: new size per axis round(size * spacing / target), "
                "scipy.ndimage.zoom(order=3, mode='nearest', grid_mode=True) per channel; infer there (below); "
                "resample the logits back to the image's size with torch.nn.functional.interpolate "
                "(bilinear / trilinear, align_corners=False) before the activation",
            }
        window = window_of(cfg.patch_size, dims)  # as infer_logits
        if window is None:
            spec["inference"] = {"mode": "whole_image"}
        else:
            spec["inference"] = {
                "mode": "sliding_window",
                "window": list(window),
                "overlap": cfg.evaluation.overlap,
                "padding": "zero-pad each axis shorter than the window to the window, (window - size) // 2 "
                "before, the rest after; crop the logits back",
                "grid": "per axis step = max(int(window * (1 - overlap)), 1), starts 0, step, 2 step, ... for "
                "ceil((size - window) / step) + 1 windows, each start min(i * step, size - window) (MONAI)",
                "importance": "gaussian",
                "sigma_scale": 0.125,  # infer_logits keeps sliding_window_inference's default
                "min_weight": MIN_WEIGHT,
                "importance_rule": "prod over axes of exp(-(i - (window - 1) / 2)**2 / (2 (sigma_scale window)**2)), "
                "computed in float64, clamped below at min_weight, cast to float32",
                "blend": "float32 sum of window logits * importance over the grid (row-major over the starts), "
                "divided by the float32 sum of the importance maps",
                "flip_tta": bool(cfg.evaluation.flip_tta),
                "flip_rule": "mean of the logits over every subset of the spatial axes (empty first): input "
                "flipped along the subset, logits flipped back",
            }
    else:
        spec["preprocessing"] = {
            "geometry": "resized" if size else "as_is",
            "input": "float32 (C_in, H, W) in [0, 1]: 8-bit images / 255, other intensities min-max scaled per "
            "image ((x - min) / (max - min), 0 when constant); colour to grey as 0.299 R + 0.587 G + 0.114 B "
            "when C_in is 1",
            "resize": {"size": [size, size], "mode": "bilinear", "align_corners": False, "antialias": False}
            if size
            else None,
            "rule": "when the image is not size x size: torch.nn.functional.interpolate(x, size, mode='bilinear', "
            "align_corners=False, antialias=False) before the network"
            + ("; segmentation logits resized back to the image's size the same way" if segmentation else ""),
        }
        spec["inference"] = {"mode": "whole_image"}
    if binary:
        threshold = float(cfg.threshold)
        spec["postprocessing"] = {
            "activation": "sigmoid",
            "threshold": threshold,
            # the comparison SegmentationTask.predict makes, free of sigmoid's rounding
            "logit_threshold": math.log(threshold / (1.0 - threshold)),
            "rule": "label 1 where the float32 logit > float32(logit_threshold), logit_threshold = "
            "log(threshold / (1 - threshold)) (sigmoid(logit) > threshold up to rounding), else 0",
        }
    else:
        spec["postprocessing"] = {
            "activation": "softmax",
            "rule": "softmax over the channel axis for probabilities; label = argmax over channels (ties: the lowest)",
        }
    if segmentation:
        spec["postprocessing"].update(
            largest_component=bool(cfg.evaluation.largest_component),
            fill_holes=bool(cfg.evaluation.fill_holes),
            label_rule="then per case and foreground class c, in increasing order: largest_component keeps only "
            "the largest face-connected component of label == c (scipy.ndimage.label; ties: the first in C "
            "order), the rest become 0; fill_holes sets the 0 pixels inside "
            "scipy.ndimage.binary_fill_holes(label == c) to c; probabilities unchanged "
            "(medbalance.engine.postprocess)",
        )
    return spec


#: Keys of :func:`inference_spec` stored as JSON in the model's string metadata.
_STRUCTURED = ("class_names", "axes", "ignore_index", "preprocessing", "inference", "postprocessing")


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
        format: ``"onnx"`` (``model.onnx``) or ``"pt2"`` (a ``torch.export`` program,
            ``model.pt2``; see the module docstring for why); ``"torchscript"`` is a deprecated
            alias of ``"pt2"``.
        out: output file; default ``RUN_DIR/export/model.<onnx|pt2>``.
        check: run the exported model on random inputs of batch sizes 1 and 3 and sizes
            other than the traced one, and compare with PyTorch.
        atol: largest absolute logit difference accepted by the check.
        force: replace an existing model file and its record (otherwise refused).

    Returns:
        The :class:`ExportResult`; ``<model file>.json`` beside the model records it, with the
        recipe of :func:`inference_spec` under ``"metadata"``.

    Raises:
        ValueError: unknown ``format``, an ``out`` suffix that does not match it, a parity
            error above ``atol`` or non-finite logits (the model file is then removed).
        CheckpointError: not a run folder, or its weights are not finite.
        RunDirError: the model file or its record exists (without ``force``), lies outside
            the folder of ``out`` (a symbolic link), or cannot be written (a full disk).
    """
    from medbalance.engine.checkpoint import nonfinite_tensors
    from medbalance.engine.run import load_run

    format = _format(format)
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
    spec = inference_spec(run)
    metadata = {
        "medbalance_version": str(run.meta.get("medbalance", "")),
        "model": run.meta["model"],
        "threshold": str(run.cfg.threshold),
        **{k: json.dumps(v) if k in _STRUCTURED else str(v) for k, v in spec.items()},
    }
    t0 = time.perf_counter()
    log.info("export: tracing %s to %s (dynamic batch and size)", run.meta["model"], format)
    dims = spec["spatial_dims"]
    side = getattr(run.cfg.data, "size", None) or (32 if dims == 3 else 64)
    window = spec["inference"].get("window") or [side] * dims  # parity at the size the network sees
    channels = run.meta["in_channels"]
    odd = [_odd(w) + 2 * i for i, w in enumerate(window)]  # different odd sides
    grown = [w + 5 + 4 * i for i, w in enumerate(window)]
    stretched = [2 * window[0], *(w // 2 + 3 for w in window[1:])]
    shapes = [(1, channels, *window), (3, channels, *grown), (2, channels, *stretched)]
    export_model(run.model, path, format=format, in_channels=channels, example_size=tuple(odd), metadata=metadata)
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
        "metadata": {"medbalance_version": metadata["medbalance_version"], "model": run.meta["model"], **spec},
        "load": "onnxruntime.InferenceSession(path)" if format == "onnx" else "torch.export.load(path).module()",
    }
    atomic_write_text(record_path, json.dumps(record, indent=1))
    return ExportResult(path, format, diff, tuple(shapes) if check else (), metadata)
