"""A two-row experiment on tiny phantoms that exercises the experiment runner end to end."""

from __future__ import annotations

from medbalance.data.build import build_splits
from medbalance.engine.engine import Stage
from medbalance.engine.tasks import SegmentationTask
from medbalance.losses import DiceCELoss
from medbalance.nets import UNet

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
            )
            splits = build_splits(cfg)
            key = f"w{width}/seed{seed}"
            done_before = (ctx.run_dir / "runs" / key / "done.json").exists()
            engine = ctx.train(
                key,
                lambda: UNet(1, 1, base_channels=width, depth=2),
                SegmentationTask(2),
                cfg,
                [Stage("train", cfg.epochs, DiceCELoss())],
                splits,
            )
            if not done_before:
                TRAINED.append(key)
            scores = engine.evaluate(splits.test)
            table.add(f"U-Net w{width}", {"dice": scores["mean_dice_fg"], "iou": scores["mean_iou_fg"]}, seed=seed)
    return ctx.write_report("A toy experiment.")
