"""Atomic checkpoint files and the random-number state that makes a resumed run exact."""

from __future__ import annotations

import pickle
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medbalance._atomic import replace_atomically
from medbalance.errors import CheckpointError

__all__ = ["CheckpointError", "save_checkpoint", "load_checkpoint", "rng_state", "set_rng_state"]


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """``torch.save`` through a temporary file and an atomic rename."""
    replace_atomically(path, lambda fh: torch.save(state, fh))


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
