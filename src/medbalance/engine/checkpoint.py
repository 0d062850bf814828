"""Atomic checkpoint files and the random-number state that makes a resumed run exact."""

from __future__ import annotations

import math
import pickle
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medbalance._atomic import guard_library_write, replace_atomically
from medbalance.errors import CheckpointError

__all__ = [
    "CheckpointError",
    "save_checkpoint",
    "load_checkpoint",
    "check_resume_state",
    "check_weights",
    "nonfinite_tensors",
    "rng_state",
    "set_rng_state",
]


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """``torch.save`` through a temporary file and an atomic rename.

    Raises:
        RunDirError: the file cannot be written (a full disk); the previous ``path`` is kept.
    """
    replace_atomically(path, guard_library_write(lambda fh: torch.save(state, fh)))


def nonfinite_tensors(tensors: dict[str, Any]) -> list[str]:
    """Names of the floating-point tensors of ``tensors`` (a state dict) holding NaN or infinity."""
    return [
        k
        for k, v in tensors.items()
        if isinstance(v, torch.Tensor) and v.is_floating_point() and not bool(torch.isfinite(v).all())
    ]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_resume_state(
    state: dict[str, Any],
    *,
    path: str | Path,
    stages: Sequence[tuple[str, int]],
    model: dict[str, torch.Tensor],
    params: Callable[[int], list[torch.Tensor]],
    scheduler: bool,
    meta: dict | None = None,
) -> None:
    """Check every field of a ``last.pt`` before a resumed run touches its folder.

    Args:
        state: the loaded checkpoint (:func:`load_checkpoint`).
        path: the checkpoint file, for the messages.
        stages: ``(name, epochs, select_best)`` of each stage of the recipe being resumed.
        model: the model's own state dict: names, shapes and dtypes the checkpoint must have.
        params: ``params(stage_index)``: the parameters that stage's optimiser holds, in order.
        scheduler: whether the run uses a learning-rate schedule (the checkpoint then holds one).
        meta: the run's facts (task, classes, channels); those in the checkpoint must agree.

    Raises:
        CheckpointError: one line naming the field, what was expected and what was found.
    """

    def refuse(field: str, expected: str, found: Any) -> CheckpointError:
        shown = repr(found) if not isinstance(found, (dict, list, tuple)) else type(found).__name__
        return CheckpointError(f"checkpoint '{path}': field '{field}' is {shown[:60]}; expected {expected}")

    if state.get("format") != 1:
        raise refuse("format", "1", state.get("format"))
    check_weights(state, path=path, model=model)
    si = state.get("stage_index")
    if not _is_int(si) or not 0 <= si < len(stages):
        raise refuse("stage_index", f"an integer in [0, {len(stages) - 1}] (the recipe has {len(stages)} stage(s))", si)
    name, epochs, _ = stages[si]
    if state.get("stage_name") != name:
        raise refuse("stage_name", f"'{name}' (stage {si} of the recipe)", state.get("stage_name"))
    stage_epoch = state.get("stage_epoch")
    if not _is_int(stage_epoch) or not 1 <= stage_epoch <= epochs:
        raise refuse("stage_epoch", f"an integer in [1, {epochs}] (stage '{name}' has {epochs} epochs)", stage_epoch)
    starts = [sum(e for _, e, _ in stages[:j]) for j in range(len(stages))]
    epoch = starts[si] + stage_epoch
    if not _is_int(state.get("epoch")) or state["epoch"] != epoch:
        raise refuse("epoch", f"{epoch} (stage {si}, its epoch {stage_epoch})", state.get("epoch"))
    # best.pt is the best epoch of the stages so far that select it (Stage.select_best)
    selecting = [j for j in range(si + 1) if stages[j][2]]
    best = state.get("best")
    if not selecting:
        if best is not None:
            raise refuse("best", "None (no stage so far selects the best checkpoint)", best)
    else:
        if not isinstance(best, dict) or best.get("stage") not in selecting:
            raise refuse("best", f"a record of the best epoch of stage(s) {selecting}", best)
        j = best["stage"]
        last = epoch if j == si else starts[j] + stages[j][1]
        if not _is_int(best.get("epoch")) or not starts[j] < best["epoch"] <= last:
            raise refuse("best.epoch", f"an epoch of stage {j} up to {last}", best.get("epoch"))
        if not isinstance(best.get("value"), (int, float)) or not math.isfinite(best["value"]):
            raise refuse("best.value", "a finite score", best.get("value"))
    _check_optimizer(state.get("optimizer"), params(si), refuse)
    sched = state.get("scheduler")
    if scheduler and not (isinstance(sched, dict) and _is_int(sched.get("last_epoch")) and sched["last_epoch"] >= 0):
        raise refuse("scheduler", "the state of the cosine schedule (last_epoch >= 0)", sched)
    if not scheduler and sched is not None:
        raise refuse("scheduler", "None (the run has no schedule)", sched)
    _check_rng(state.get("rng"), refuse)
    if not isinstance(state.get("scores"), dict):
        raise refuse("scores", "a mapping of validation scores", state.get("scores"))
    saved = state.get("meta")
    if not isinstance(saved, dict):
        raise refuse("meta", "a mapping of the run's facts", saved)
    for key, value in (meta or {}).items():
        if key in saved and key != "medbalance" and saved[key] != value:
            raise refuse(f"meta.{key}", f"{value!r} (this run's)", saved[key])


def check_weights(state: dict[str, Any], *, path: str | Path, model: dict[str, torch.Tensor]) -> None:
    """Check that a checkpoint's ``model`` holds exactly ``model``'s tensors (names, shapes, dtypes), all finite.

    Raises:
        CheckpointError: naming the checkpoint and the first tensor that differs.
    """
    weights = state["model"]
    where = f"checkpoint '{path}': field"
    if not isinstance(weights, dict) or set(weights) != set(model):
        raise CheckpointError(f"{where} 'model' does not hold the {len(model)} tensors of this network")
    for name, ref in model.items():
        got = weights[name]
        if not isinstance(got, torch.Tensor) or got.shape != ref.shape or got.dtype != ref.dtype:
            raise CheckpointError(
                f"{where} 'model.{name}' is {_describe(got)}; expected a {ref.dtype} tensor of shape {tuple(ref.shape)}"
            )
    bad = nonfinite_tensors(weights)
    if bad:
        raise CheckpointError(f"{where} 'model.{bad[0]}' holds NaN or infinite values; expected finite values")


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"{value.dtype} tensor of shape {tuple(value.shape)}"
    return type(value).__name__


def _check_optimizer(opt: Any, params: list[torch.Tensor], refuse) -> None:
    groups = opt.get("param_groups") if isinstance(opt, dict) else None
    if not isinstance(groups, list) or len(groups) != 1 or not isinstance(opt.get("state"), dict):
        raise refuse("optimizer", "one parameter group and a state mapping", opt)
    ids = groups[0].get("params") if isinstance(groups[0], dict) else None
    if not isinstance(ids, list) or len(ids) != len(params):
        raise refuse("optimizer.param_groups", f"{len(params)} parameters (this stage trains)", ids)
    for key, entry in opt["state"].items():
        if key not in ids or not isinstance(entry, dict):
            raise refuse(f"optimizer.state[{key}]", "the state of a parameter of the group", entry)
        shape = params[ids.index(key)].shape
        for field, value in entry.items():
            ok = isinstance(value, torch.Tensor) and (value.ndim == 0 or value.shape == shape)
            if not ok or (value.is_floating_point() and not bool(torch.isfinite(value).all())):
                expected = f"finite values of shape {tuple(shape)}"
                raise refuse(f"optimizer.state[{key}].{field}", expected, _describe(value))


def _check_rng(rng: Any, refuse) -> None:
    if not isinstance(rng, dict):
        raise refuse("rng", "the random-number states", rng)
    # Each state goes into a fresh generator: the check leaves the global ones alone.
    try:
        version, internal, gauss = rng["python"]
        random.Random().setstate((version, tuple(internal), gauss))
    except (KeyError, TypeError, ValueError, IndexError, OverflowError):
        raise refuse("rng.python", "a Python random state", rng.get("python")) from None
    try:
        np_state = rng["numpy"]
        np.random.RandomState().set_state(
            (
                np_state["kind"],
                np_state["keys"].numpy().astype(np.uint32),
                np_state["pos"],
                np_state["has_gauss"],
                np_state["cached"],
            )
        )
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, OverflowError):
        raise refuse("rng.numpy", "a numpy random state", rng.get("numpy")) from None
    try:
        torch.Generator().set_state(rng["torch"])
    except (KeyError, TypeError, ValueError, RuntimeError):
        raise refuse("rng.torch", "a torch random state (uint8 tensor)", rng.get("torch")) from None


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``: a crafted pickle cannot run code.

    Raises:
        CheckpointError: the file is missing or is not a medbalance checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint '{path}' does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:  # weights_only refused an object: the file wants to run code
        refused = next((line for line in str(exc).splitlines() if "Unsupported" in line), "weights_only")
        refused = refused.split("error:")[-1].split(" was not")[0].strip()
        raise CheckpointError(
            f"cannot load checkpoint '{path}': it holds objects other than tensors and plain values, "
            f"refused unread ({refused})"
        ) from None
    except Exception as exc:  # torch raises many types for corrupt files
        raise CheckpointError(
            f"cannot load checkpoint '{path}': {type(exc).__name__}: {str(exc).splitlines()[0]}"
        ) from None
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"'{path}' is not a medbalance checkpoint (no 'model' entry)")
    return state


def rng_state() -> dict[str, Any]:
    """Python, numpy and torch generator states, in types ``weights_only`` loading accepts."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": pos,
            "has_gauss": has_gauss,
            "cached": cached,
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np_state = state["numpy"]
    np.random.set_state(
        (
            np_state["kind"],
            np_state["keys"].numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["cached"],
        )
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
