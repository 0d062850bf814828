"""Training methods of the source papers, each an experiment command (``medbalance experiment NAME``).

:data:`EXPERIMENTS` maps a name to the module that defines its ``SCALES``, ``OPTIONS`` and
``run(ctx)``; :func:`run_experiment` (in :mod:`medbalance.methods.experiment`) runs one. This
package imports no torch until a method is used, so the CLI starts fast.
"""

from __future__ import annotations

#: ``medbalance experiment NAME`` -> its module.
EXPERIMENTS: dict[str, str] = {
    "dualpath": "medbalance.methods.dualpath",  # seed 000
    "reuse-background": "medbalance.methods.reuse_background",  # seed 002
    "loss-study": "medbalance.methods.loss_study",  # seed 002
    "longtail": "medbalance.methods.longtail",  # seed 001
}
SCALE_NAMES = ("smoke", "small", "paper")

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


__all__ = [
    "EXPERIMENTS",
    "METHODS",
    "SCALE_NAMES",
    "method_class",
    "ExperimentContext",
    "ExperimentResult",
    "ResultTable",
    "run_experiment",
]


def __getattr__(name: str):
    if name in ("ExperimentContext", "ExperimentResult", "ResultTable", "run_experiment"):
        from medbalance.methods import experiment

        return getattr(experiment, name)
    raise AttributeError(f"module 'medbalance.methods' has no attribute '{name}'")
