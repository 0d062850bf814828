"""The built-in configs and recipes (``medbalance train NAME``): YAML files beside this module."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from medbalance.errors import ConfigError

__all__ = ["BUILTIN_CONFIGS", "config_path"]

BUILTIN_CONFIGS = (
    "demo",
    "intraclass",
    "nuclei",
    "longtail",
    "phantom3d",
    "drive",
    "hc18",
    "consep",
    "isbi",
    "pneumoniamnist",
    "breastmnist",
    # one recipe per method (README "Recipes")
    "nnunet",
    "dualpath",
    "reuse_background",
    "ldam_drw",
    "bbn",
    "lskbb",
    "mislas",
    "dflce",
)


def config_path(name: str | Path) -> Path:
    """A YAML file's path, or a built-in config's by name.

    Raises:
        ConfigError: neither an existing file nor a built-in name.
    """
    path = Path(name)
    if path.is_file():
        return path
    if str(name) in BUILTIN_CONFIGS:
        return Path(str(resources.files("medbalance") / "configs" / f"{name}.yaml"))
    raise ConfigError(f"config file '{name}' does not exist (built-in configs: {', '.join(BUILTIN_CONFIGS)})")
