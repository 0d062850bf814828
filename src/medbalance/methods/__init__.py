"""Training methods of the source papers as recipe pieces: hooks, networks and losses.

:data:`METHODS` maps a recipe's ``method: {name: ...}`` to its
:class:`~medbalance.engine.hooks.Method`; the experiments that run them are in
:mod:`medbalance.experiments`. This package imports no torch until a method is used, so the
CLI starts fast.
"""

from __future__ import annotations

#: A recipe's ``method: {name: ...}`` -> its hooks (``module:Class``, a
#: :class:`~medbalance.engine.hooks.Method`), imported when a recipe uses it.
METHODS: dict[str, str] = {
    "plain": "medbalance.engine.hooks:Method",
    "bilateral": "medbalance.methods.bilateral:BilateralMethod",  # BBN, LSKBB (seed 001)
    "mislas": "medbalance.methods.mislas:MiSLASMethod",  # MiSLAS (seed 001's baseline)
    "dualpath": "medbalance.methods.dualpath:DualPathMethod",  # seed 000
    "reuse_background": "medbalance.methods.reuse_background:ReuseBackgroundMethod",  # seed 002
}


def method_class(name: str):
    """The :class:`~medbalance.engine.hooks.Method` subclass of ``METHODS[name]``."""
    import importlib

    module, _, cls = METHODS[name].partition(":")
    return getattr(importlib.import_module(module), cls)


__all__ = ["METHODS", "method_class"]
