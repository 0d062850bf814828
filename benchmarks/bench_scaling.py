"""Time per epoch against dataset size and image side, and peak memory per run (issue 10 item 5).

Usage::

    python -m benchmarks.bench_scaling [--quick] [--threads 1] [--rounds 1] [--n 96] [--plot PATH]
    python -m benchmarks --only scaling

Every point is one whole training run, :func:`medbalance.engine.run.train` on intra-class
phantoms (``n`` training and ``n / 4`` validation images, no test split; ``UNet(base_channels=8)``,
batch 8, Dice + CE, the demo config's settings), in a fresh Python process so that its peak
RSS (``resource.getrusage``) is its own. Each point is run with 1 and with 4 epochs: the
time per epoch is the difference divided by 3, so start-up, data generation and the final
evaluation and report cancel out, and comparing the two peak RSS values shows whether
memory grows with the number of epochs. Times are CPU seconds of the process
(``time.process_time``), steadier than wall time on a shared machine; wall seconds are kept
too. Sweeps: dataset size ``n``, ``2n``, ``4n`` at side 64, and side 64, 128, 256 at ``n``.
Configurations are interleaved over ``--rounds`` and the median taken.

The figure (``benchmarks/figures/scaling.png``) plots seconds per epoch against the size
factor and against the pixel count, with the linear extrapolation of the smallest point.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.harness import Row, machine_info, report

__all__ = ["run", "main", "plot"]

log = logging.getLogger("benchmarks")

#: Epochs of the short and the long run of every point.
EPOCHS = (1, 4)

DEFAULT_PLOT = Path(__file__).resolve().parent / "figures" / "scaling.png"


def _worker(n: int, side: int, epochs: int, threads: int) -> dict:
    import torch

    from medbalance.config import RunConfig
    from medbalance.engine.run import train

    torch.set_num_threads(threads)
    cfg = RunConfig.model_validate(
        {
            "name": "scaling",
            "epochs": epochs,
            "batch_size": 8,
            "lr": 0.002,
            "progress": False,
            "data": {"kind": "intraclass_phantom", "size": side, "n_train": n, "n_val": max(1, n // 4), "n_test": 0},
            "model": {"name": "unet", "base_channels": 8},
            "loss": "dice_ce",
        }
    )
    with tempfile.TemporaryDirectory(prefix="medbalance-scaling-") as out:
        cpu, wall = time.process_time(), time.perf_counter()
        train(cfg, out=out, progress=False)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    # float32 images + int64 targets of the train and validation splits.
    data_mb = (n + max(1, n // 4)) * side * side * (4 + 8) / 2**20
    return {
        "cpu_s": cpu,
        "wall_s": wall,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "data_mb": data_mb,
    }


def _points(n: int, quick: bool) -> list[tuple[int, int]]:
    if quick:
        return [(8, 32), (16, 32), (8, 64)]
    sizes = [(n * k, 64) for k in (1, 2, 4)]
    sides = [(n, s) for s in (128, 256)]
    return sizes + sides


def _spawn(n: int, side: int, epochs: int, threads: int) -> dict:
    worker = ["--worker", f"{n},{side},{epochs}", "--threads", str(threads)]
    cmd = [sys.executable, "-m", "benchmarks.bench_scaling", *worker]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    done = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(
    *,
    quick: bool = False,
    device: str = "cpu",
    channels_last: bool = False,
    n: int = 96,
    rounds: int = 1,
    threads: int = 1,
    plot_path: Path | None = DEFAULT_PLOT,
) -> list[Row]:
    """Run the sweeps in worker processes; one :class:`Row` per (n, side) point.

    ``images_per_s`` is training + validation images per CPU second of one epoch; ``extra``
    holds seconds per epoch, peak RSS of the short and the long run and the dataset's size in memory.
    The figure is saved to ``plot_path`` (not for a ``quick`` run, which would overwrite it
    with smoke-test numbers).
    """
    del device, channels_last  # CPU, contiguous: the default configuration
    points = _points(n, quick)
    samples: dict[tuple[int, int, int], list[dict]] = {}
    for _ in range(rounds):
        for n_i, side in points:  # interleaved: every point sees the same drift in load
            for epochs in EPOCHS:
                log.info("scaling: n=%d side=%d epochs=%d", n_i, side, epochs)
                samples.setdefault((n_i, side, epochs), []).append(_spawn(n_i, side, epochs, threads))
    info = machine_info()
    rows = []
    for n_i, side in points:
        short, long = samples[(n_i, side, EPOCHS[0])], samples[(n_i, side, EPOCHS[1])]
        extra_epochs = EPOCHS[1] - EPOCHS[0]
        cpu = [(b["cpu_s"] - a["cpu_s"]) / extra_epochs for a, b in zip(short, long)]
        wall = [(b["wall_s"] - a["wall_s"]) / extra_epochs for a, b in zip(short, long)]
        per_epoch = statistics.median(cpu)
        images = n_i + max(1, n_i // 4)
        rows.append(
            Row(
                name=f"epoch n={n_i} side={side}",
                impl="train(unet b8, dice_ce)",
                images_per_s=images / per_epoch,
                median_ms=1e3 * per_epoch,
                iqr_ms=1e3 * (max(cpu) - min(cpu)),
                best_ms=1e3 * min(cpu),
                ratio=None,
                params=0,
                gflops=None,
                repeats=rounds,
                threads=threads,
                machine=f"{info['machine']}; {info['device']}",
                torch=str(info["torch"]),
                date=str(info["date"]),
                extra={
                    "n": n_i,
                    "side": side,
                    "cpu_s_per_epoch": per_epoch,
                    "wall_s_per_epoch": statistics.median(wall),
                    "peak_rss_mb_short": statistics.median(s["peak_rss_mb"] for s in short),
                    "peak_rss_mb_long": statistics.median(s["peak_rss_mb"] for s in long),
                    "epochs": list(EPOCHS),
                    "data_mb": short[0]["data_mb"],
                    "loadavg_1m": info["loadavg_1m"],
                },
            )
        )
    if plot_path is not None and not quick:
        log.info("plot: %s", plot(rows, plot_path))
    return rows


def plot(rows: list[Row], path: Path) -> Path:
    """Seconds per epoch vs dataset-size factor and vs pixels per image, with linear references."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    base_side = min(r.extra["side"] for r in rows)
    base_n = min(r.extra["n"] for r in rows)
    by_n = sorted((r for r in rows if r.extra["side"] == base_side), key=lambda r: r.extra["n"])
    by_side = sorted((r for r in rows if r.extra["n"] == base_n), key=lambda r: r.extra["side"])
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for ax, series, x_of, label in (
        (axes[0], by_n, lambda r: r.extra["n"] / base_n, f"dataset size (x {base_n} images, side {base_side})"),
        (
            axes[1],
            by_side,
            lambda r: (r.extra["side"] / base_side) ** 2,
            f"pixels per image (x {base_side}^2, n={base_n})",
        ),
    ):
        xs = [x_of(r) for r in series]
        ys = [r.extra["cpu_s_per_epoch"] for r in series]
        ax.plot(xs, ys, "o-", label="measured (CPU s)")
        ax.plot(xs, [ys[0] * x / xs[0] for x in xs], "--", color="grey", label="linear from first point")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log", base=2)
        ax.set_xlabel(label)
        ax.set_ylabel("CPU seconds per epoch")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3, which="both")
    first = rows[0]
    title = f"medbalance epoch time, {first.machine}, torch {first.torch}, {first.threads} thread(s), {first.date}"
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_scaling", description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--n", type=int, default=96)
    parser.add_argument("--plot", type=Path, default=DEFAULT_PLOT)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        n, side, epochs = (int(v) for v in args.worker.split(","))
        sys.stdout.write(json.dumps(_worker(n, side, epochs, args.threads)) + "\n")
        return 0
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    log.info("machine: %s", machine_info())
    rows = run(quick=args.quick, n=args.n, rounds=args.rounds, threads=args.threads, plot_path=None)
    sys.stdout.write(report(rows) + "\n")
    for r in rows:
        e = r.extra
        sys.stdout.write(
            f"n={e['n']:4d} side={e['side']:3d}: {e['cpu_s_per_epoch']:.2f} CPU s/epoch "
            f"({e['wall_s_per_epoch']:.2f} wall), "
            f"peak RSS {e['peak_rss_mb_short']:.0f} MB ({EPOCHS[0]} epoch) / {e['peak_rss_mb_long']:.0f} MB "
            f"({EPOCHS[1]} epochs), "
            f"data {e['data_mb']:.1f} MB\n"
        )
    log.info("plot: %s", plot(rows, args.plot))
    return 0


if __name__ == "__main__":
    sys.exit(main())
