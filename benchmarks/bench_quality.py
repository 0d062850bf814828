"""Time to quality on real data: test score vs training time, through ``medbalance train``.

``python -m benchmarks quality --config drive`` trains a built-in config (``drive``, ``hc18``,
``consep``) exactly as ``medbalance train`` does and, after every epoch, scores the test split
with the epoch's weights. The test pass is the benchmark's own addition: its time is measured
and left out of the clock, so the curve is test score against the time ``medbalance train``
itself spent (training steps plus its validation), in wall seconds and in process CPU seconds
(all threads). One JSON line per epoch goes to stdout and, with ``--out``, a CSV and a PNG
curve. The test split is never used to select anything: the run's ``best.pt`` comes from
validation as always.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
import time
from importlib import resources
from pathlib import Path

from benchmarks.harness import machine_info, start
from medbalance.config import load_config
from medbalance.data.build import build_splits
from medbalance.engine import engine as engine_module
from medbalance.engine import run as run_module

log = logging.getLogger("benchmarks.quality")

#: The headline score of each built-in real-data config.
SCORE = {"drive": "mean_dice_fg", "hc18": "mean_dice_fg", "consep": "mean_dice_fg"}


def run(*, quick: bool, device: str, channels_last: bool) -> list:
    """Part of ``python -m benchmarks``: nothing (training to quality takes minutes; run it by name)."""
    return []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks quality", description=__doc__)
    parser.add_argument("--config", default="drive", choices=sorted(SCORE), help="built-in config (default drive)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--out", type=Path, default=None, help="folder for the run, curve.csv and curve.png")
    args = parser.parse_args(argv)
    start(args.threads)
    path = Path(str(resources.files("medbalance") / "configs" / f"{args.config}.yaml"))
    cfg = load_config(path, ["progress=false", *args.set])
    test = build_splits(cfg).test
    out = args.out or Path("runs-quality")
    rows: list[dict] = []
    clock = {"wall": time.perf_counter(), "cpu": time.process_time(), "wall_off": 0.0, "cpu_off": 0.0}
    real_end = engine_module.Engine._end_epoch

    def end_epoch(self, ckpt, row, history, *, improved):
        real_end(self, ckpt, row, history, improved=improved)
        wall, cpu = time.perf_counter(), time.process_time()
        spent = {
            "wall_min": (wall - clock["wall"] - clock["wall_off"]) / 60,
            "cpu_min": (cpu - clock["cpu"] - clock["cpu_off"]) / 60,
        }
        scores = self.evaluate(test)
        clock["wall_off"] += time.perf_counter() - wall
        clock["cpu_off"] += time.process_time() - cpu
        line = {
            "epoch": ckpt["epoch"],
            **{k: round(v, 3) for k, v in spent.items()},
            "val": round(row.get(f"val_{SCORE[args.config]}", float("nan")), 4),
            "test": round(scores[SCORE[args.config]], 4),
        }
        rows.append(line)
        sys.stdout.write(json.dumps(line) + "\n")
        sys.stdout.flush()

    engine_module.Engine._end_epoch = end_epoch
    try:
        result = run_module.train(cfg, out=out)
    finally:
        engine_module.Engine._end_epoch = real_end
    final = result.metrics["test"][SCORE[args.config]]
    summary = {
        "config": args.config,
        "overrides": args.set,
        "best_epoch": result.metrics["best_epoch"],
        "test_at_best": round(final, 4),
        "wall_min_total": rows[-1]["wall_min"] if rows else None,
        "machine": machine_info(),
        "run_dir": str(result.run_dir),
    }
    sys.stdout.write(json.dumps(summary) + "\n")
    with open(result.run_dir / "curve.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    _plot(rows, result.run_dir / "curve.png", args.config, args.threads)
    return 0


def _plot(rows: list[dict], path: Path, name: str, threads: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([r["cpu_min"] for r in rows], [r["test"] for r in rows], marker="o", label="test (per epoch)")
    ax.plot([r["cpu_min"] for r in rows], [r["val"] for r in rows], marker=".", ls="--", label="validation")
    ax.set_xlabel(f"CPU minutes of medbalance train ({threads} thread{'s' if threads > 1 else ''})")
    ax.set_ylabel("Dice (foreground)")
    ax.set_title(f"{name}: time to quality")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    sys.exit(main())
