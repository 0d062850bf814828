"""Seed 002's tables as data: the multi-class (network, loss) combinations of section 4.6.1, and
the training geometry of its experiments.

Shared by the loss study (tables 4.15-4.18) and reuse-background (section 4.6.2's binary model).
"""

from __future__ import annotations

from typing import Any

from medbalance.errors import ConfigError

__all__ = ["COMBO_TABLES", "SEED_COMBOS", "combos_for", "patch_size"]

#: Seed 002 section 4.6.1, the multi-class combinations (network, loss) of table 4.15 (CoNIC,
#: results in table 4.16) and table 4.17 (MoNuSAC, table 4.18), numbered as there.
SEED_COMBOS: dict[str, tuple[tuple[str, str], ...]] = {
    "conic": (
        ("attention_unet", "dice"),
        ("attention_unet", "dice+ob"),
        ("attention_unet", "focal+dice"),
        ("attention_unet", "focal+dice+ob"),
        ("deeplabv3plus", "dice"),
        ("deeplabv3plus", "dice+ob"),
        ("deeplabv3plus", "focal+dice"),
        ("deeplabv3plus", "focal+dice+ob"),
    ),
    "monusac": (
        ("attention_unet", "dice"),
        ("attention_unet", "dice+ob"),
        ("unet", "dice"),
        ("unet", "dice+ob"),
    ),
}
#: Per combination table: (the table listing it, the table of its results, its best combination's number).
#: The best are the text's (section 4.6.1): DeepLabv3+ with Focal + Dice on CoNIC, AttU-Net with Dice
#: on MoNuSAC, the "plain" rows of tables 4.20 / 4.21.
COMBO_TABLES: dict[str, tuple[str, str, int]] = {"conic": ("4.15", "4.16", 7), "monusac": ("4.17", "4.18", 1)}


def combos_for(name: str, data_kind: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    """Which table of section 4.6.1 (``"conic"`` / ``"monusac"``) and its combinations.

    ``name`` ``"auto"`` picks MoNuSAC's table 4.17 for MoNuSAC data and CoNIC's 4.15 otherwise.

    Example:
        >>> combos_for("auto", "monusac")[1][:2]
        (('attention_unet', 'dice'), ('attention_unet', 'dice+ob'))
    """
    if name == "auto":
        name = "monusac" if data_kind == "monusac" else "conic"
    if name not in SEED_COMBOS:
        raise ConfigError(f"option 'combos' is {name!r} (expected one of: auto, {', '.join(SEED_COMBOS)})")
    return name, SEED_COMBOS[name]


def patch_size(option: int, preset: Any, *, ragged: bool, data: str) -> Any:
    """The ``patch_size`` of every run: ``--set patch_size=N`` (``N x N`` patches), else the scale's
    (``"auto"`` on the CPU scales; ``None`` at ``paper``: whole images, one pass over the training
    set per epoch, as the seed trains its 256 x 256 CoNIC patches).

    Raises:
        ConfigError: a negative option, or whole images asked of data whose images differ in size.

    Example:
        >>> patch_size(0, None, ragged=False, data="conic"), patch_size(128, None, ragged=True, data="monusac")
        (None, 128)
    """
    if option < 0:
        raise ConfigError(f"option 'patch_size' must be >= 0 (0: the scale's preset), got {option}")
    if option:
        return option
    if preset is None and ragged:
        raise ConfigError(
            f"--scale paper trains whole images (seed 002), but the images of --data {data} differ in size: "
            "resize them with --set size=N (the seed: 512 for MoNuSAC) or train on patches with --set patch_size=N"
        )
    return preset
