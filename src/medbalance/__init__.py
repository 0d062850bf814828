"""medbalance: class-imbalanced medical image analysis for PyTorch.

The Python API (:mod:`medbalance.api`): :func:`train`, :func:`load_run`, :func:`predict`,
:func:`evaluate`; imported on first use, so ``import medbalance`` stays light.
"""

__version__ = "0.2.0"

__all__ = ["__version__", "train", "load_run", "predict", "evaluate"]


def __getattr__(name: str):
    if name in ("train", "load_run", "predict", "evaluate"):
        from medbalance import api

        return getattr(api, name)
    raise AttributeError(f"module 'medbalance' has no attribute '{name}'")
