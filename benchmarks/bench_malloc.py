"""U-Net training steps with glibc malloc as shipped vs tuned by :func:`medbalance._malloc.tune_malloc`.

Allocator settings are process-wide, so each variant runs in its own fresh Python process
(``python -m benchmarks.bench_malloc --worker tuned|default``); the parent alternates the
variants over several rounds so that machine load affects both alike. Each worker reports
its step times, the share of its CPU time spent in the kernel (page faults of re-mapped
buffers show up there) and its peak RSS.

Workload: ``UNet(base_channels=32)`` on (4, 1, 256, 256), two classes, Adam, cross entropy.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import torch

from benchmarks.harness import Row, machine_info

__all__ = ["run"]

_VARIANTS = ("tuned", "default")


def _worker(variant: str, *, side: int, steps: int) -> dict:
    from medbalance._malloc import tune_malloc
    from medbalance.nets import UNet

    tuned = tune_malloc(enable=variant == "tuned")
    torch.manual_seed(0)
    model = UNet(1, 2, base_channels=32)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randn(4, 1, side, side)
    y = torch.randint(0, 2, (4, side, side))
    times = []
    cpu0 = os.times()
    for step in range(steps + 2):
        start = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step >= 2:  # the first steps allocate for the first time in both variants
            times.append(time.perf_counter() - start)
    cpu1 = os.times()
    user, system = cpu1.user - cpu0.user, cpu1.system - cpu0.system
    return {
        "tuned": tuned,
        "params": sum(p.numel() for p in model.parameters()),
        "times": times,
        "system_share": system / max(user + system, 1e-9),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def run(*, quick: bool = False, device: str = "cpu", channels_last: bool = False) -> list[Row]:
    """Alternate tuned / default worker processes and return one row per variant."""
    if device != "cpu":
        return []  # the allocator setting concerns host memory only
    side, steps, rounds = (64, 3, 1) if quick else (256, 6, 3)
    results: dict[str, list[dict]] = {v: [] for v in _VARIANTS}
    for _ in range(rounds):
        for variant in _VARIANTS:
            cmd = [sys.executable, "-m", "benchmarks.bench_malloc", "--worker", variant]
            cmd += ["--side", str(side), "--steps", str(steps)]
            env = {**os.environ, "MEDBALANCE_MALLOC": "default"}  # the worker decides itself
            out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
            results[variant].append(json.loads(out.strip().splitlines()[-1]))
    info = machine_info()
    rows = []
    reference_rate = None
    for variant in _VARIANTS:
        times = [t for r in results[variant] for t in r["times"]]
        median = statistics.median(times)
        q1, _, q3 = statistics.quantiles(times, n=4) if len(times) > 1 else (median, median, median)
        rate = 4 / median
        reference_rate = reference_rate or rate
        rows.append(
            Row(
                name=f"train step U-Net b32 4x1x{side}x{side}",
                impl=f"glibc malloc {variant}",
                images_per_s=rate,
                median_ms=1e3 * median,
                iqr_ms=1e3 * (q3 - q1),
                best_ms=1e3 * min(times),
                ratio=None if variant == _VARIANTS[0] else reference_rate / rate,
                params=results[variant][0]["params"],
                gflops=None,
                repeats=len(times),
                threads=int(info["threads"]),
                machine=f"{info['machine']}; {info['device']}",
                torch=str(info["torch"]),
                date=str(info["date"]),
                extra={
                    "applied": results[variant][0]["tuned"],
                    "kernel_cpu_share": round(statistics.mean(r["system_share"] for r in results[variant]), 3),
                    "peak_rss_mb": round(max(r["peak_rss_mb"] for r in results[variant]), 1),
                    "loadavg_1m": info["loadavg_1m"],
                },
            )
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--worker", choices=_VARIANTS, required=True)
    parser.add_argument("--side", type=int, default=256)
    parser.add_argument("--steps", type=int, default=6)
    args = parser.parse_args()
    sys.stdout.write(json.dumps(_worker(args.worker, side=args.side, steps=args.steps)) + "\n")


if __name__ == "__main__":
    main()
