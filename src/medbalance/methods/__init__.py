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

__all__ = ["EXPERIMENTS", "SCALE_NAMES", "ExperimentContext", "ExperimentResult", "ResultTable", "run_experiment"]


def __getattr__(name: str):
    if name in ("ExperimentContext", "ExperimentResult", "ResultTable", "run_experiment"):
        from medbalance.methods import experiment

        return getattr(experiment, name)
    raise AttributeError(f"module 'medbalance.methods' has no attribute '{name}'")
