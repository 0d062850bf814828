"""The seeds' tables as commands (``medbalance experiment NAME``), one module per paper.

:data:`EXPERIMENTS` maps a name to the module that defines its ``SCALES``, ``OPTIONS`` and
``run(ctx)``; :func:`run_experiment` (in :mod:`medbalance.experiments.runner`) runs one. This
package imports no torch until an experiment is used, so the CLI starts fast.
"""

from __future__ import annotations

#: ``medbalance experiment NAME`` -> its module.
EXPERIMENTS: dict[str, str] = {
    "dualpath": "medbalance.experiments.seed000",
    "reuse-background": "medbalance.experiments.seed002.reuse_background",
    "loss-study": "medbalance.experiments.seed002.loss_study",
    "longtail": "medbalance.experiments.seed001",
    "baselines": "medbalance.experiments.baselines",
    "rare-class": "medbalance.experiments.rare_class",
    "longtail-claims": "medbalance.experiments.claims_lt",
}
SCALE_NAMES = ("smoke", "small", "paper")

__all__ = [
    "EXPERIMENTS",
    "SCALE_NAMES",
    "ExperimentContext",
    "ExperimentResult",
    "ResultTable",
    "run_experiment",
]


def __getattr__(name: str):
    if name in ("ExperimentContext", "ExperimentResult", "ResultTable", "run_experiment"):
        from medbalance.experiments import runner

        return getattr(runner, name)
    raise AttributeError(f"module 'medbalance.experiments' has no attribute '{name}'")
