"""A two-row experiment on tiny phantoms that exercises the experiment runner end to end."""

from __future__ import annotations

SCALES = {"smoke": {"epochs": 1}, "small": {"epochs": 2}, "paper": {"epochs": 3}}
OPTIONS = {"widths": [4, 8], "note": "toy"}
TRAINED: list[str] = []  # keys trained (not loaded) in this process


def run(ctx):
    table = ctx.table("Dice of the toy rows", ("dice", "iou"), note=ctx.options["note"])
    for width in ctx.options["widths"]:
        for seed in ctx.seeds:
            cfg = ctx.base_config(
                seed=seed,
                epochs=SCALES[ctx.scale]["epochs"],
                batch_size=4,
                data=ctx.data_section(
                    {"kind": "intraclass_phantom", "size": 32, "n_train": 8, "n_val": 4, "n_test": 4}
                ),
                model={"name": "unet", "base_channels": width, "depth": 2},
            )
            key = f"w{width}/seed{seed}"
            if not (ctx.run_dir / "runs" / key / "metrics.json").exists():
                TRAINED.append(key)
            scores = ctx.run(key, cfg)["test"]
            table.add(f"U-Net w{width}", {"dice": scores["mean_dice_fg"], "iou": scores["mean_iou_fg"]}, seed=seed)
    return ctx.write_report("A toy experiment.")
