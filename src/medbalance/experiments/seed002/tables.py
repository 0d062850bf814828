"""Seed 002's tables as data: the multi-class (network, loss) combinations of section 4.6.1.

Shared by the loss study (tables 4.15-4.18) and reuse-background (section 4.6.2's binary model).
"""

from __future__ import annotations

from medbalance.errors import ConfigError

__all__ = ["COMBO_TABLES", "SEED_COMBOS", "combos_for"]

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
