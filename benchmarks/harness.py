"""A small timing harness shared by the benchmark modules.

A benchmark module builds :class:`Group` objects: cases that do the same work (same
input, same step) with different implementations, the first being medbalance's. The
harness warms every case up, then times the cases of a group round-robin (one call of
each per repeat), so that load drifting on a shared machine affects them alike. It
reports items/s from the median time, the inter-quartile range, the best time (the least
disturbed by other processes on a shared machine) and the ratio ``ours / theirs`` of
items/s (> 1: medbalance is faster).
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field

import torch
from torch.utils.flop_counter import FlopCounterMode

from medbalance._malloc import tune_malloc

__all__ = [
    "Case",
    "Group",
    "Row",
    "conv_peak_gflops",
    "format_table",
    "forward_gflops",
    "interleaved_times",
    "machine_info",
    "report",
    "run_groups",
    "start",
]


@dataclass
class Case:
    """One implementation of a benchmarked workload.

    Attributes:
        impl: implementation label, e.g. ``"medbalance.UNet"``.
        fn: performs the work once (one training step, one batch of inference).
        items: images processed by one call of ``fn``.
        params: trainable parameters of the model, reported next to the speed.
        gflops: forward GFLOP per item (see :func:`forward_gflops`), or None.
    """

    impl: str
    fn: Callable[[], object]
    items: int
    params: int
    gflops: float | None = None


@dataclass
class Group:
    """Cases doing the same work; ``cases[0]`` is the reference (medbalance)."""

    name: str
    cases: Sequence[Case]
    extra: dict[str, object] = field(default_factory=dict)


@dataclass
class Row:
    """One measured case, as printed in the table and as one JSON line."""

    name: str
    impl: str
    images_per_s: float
    median_ms: float
    iqr_ms: float
    best_ms: float
    ratio: float | None  # reference images/s divided by this row's; None for the reference
    params: int
    gflops: float | None
    repeats: int
    threads: int
    machine: str
    torch: str
    date: str
    extra: dict[str, object]


def start(threads: int | None) -> None:
    """What every benchmark entry point does first: INFO logs to stderr, ``threads`` torch threads
    (``None``: torch's default), and a log line naming the machine."""
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    if threads is not None:
        torch.set_num_threads(threads)
    logging.getLogger("benchmarks").info("machine: %s", machine_info())


def machine_info() -> dict[str, object]:
    """CPU model, logical cores, torch threads, load average, torch version and date."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    device = "cpu"
    if torch.cuda.is_available():
        device = torch.cuda.get_device_name()
    return {
        "machine": f"{cpu}, {os.cpu_count()} logical cores",
        "device": device,
        "threads": torch.get_num_threads(),
        "loadavg_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "torch": torch.__version__,
        "malloc": "tuned" if tune_malloc(enable=False) else "as shipped",  # enable=False only reports
        "date": datetime.date.today().isoformat(),
    }


def forward_gflops(model: torch.nn.Module, example: torch.Tensor) -> float:
    """Forward GFLOP per item of ``model`` on ``example`` (a batch), counted by
    ``torch.utils.flop_counter`` (a multiply-add counts 2; convolutions and matmuls only)."""
    was_training = model.training
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(example)
    model.train(was_training)
    return counter.get_total_flops() / 1e9 / example.shape[0]


def conv_peak_gflops(
    *, device: str = "cpu", channels_last: bool = False, quick: bool = False, repeats: int = 5
) -> float:
    """GFLOP/s of one large 3x3 convolution (256 -> 256 channels; FLOPs counted by
    ``torch.utils.flop_counter``), the best of ``repeats``: the practical peak of this device
    for the convolutions that dominate segmentation networks.

    ``quick`` uses a smaller map (seconds on a CPU); the number is then a lower bound.
    """
    side = 32 if quick else 64
    conv = torch.nn.Conv2d(256, 256, 3, padding=1, bias=False).to(device)
    x = torch.randn(4, 256, side, side, device=device)
    if channels_last:
        conv, x = conv.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        with FlopCounterMode(display=False) as counter:
            conv(x)
        conv(x)  # warm-up: oneDNN / cuDNN algorithm selection
        best = min(_time_once(lambda: conv(x)) for _ in range(repeats))
    return counter.get_total_flops() / 1e9 / best


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _time_once(fn: Callable[[], object]) -> float:
    _sync()
    start = time.perf_counter()
    fn()
    _sync()
    return time.perf_counter() - start


def interleaved_times(
    group: Group, *, warmup: int, repeats: int, clock: Callable[[Callable[[], object]], float] = _time_once
) -> list[list[float]]:
    """``repeats`` seconds per case of ``group`` (``clock(fn)`` times one call), after ``warmup``
    untimed calls each: round-robin across the cases, the one that goes first rotating from
    round to round (the first call after another case's was measured slower)."""
    for case in group.cases:
        for _ in range(warmup):
            case.fn()
    times: list[list[float]] = [[] for _ in group.cases]
    n = len(group.cases)
    for r in range(repeats):
        for i in [(r + k) % n for k in range(n)]:
            times[i].append(clock(group.cases[i].fn))
    return times


def run_groups(groups: Iterable[Group], *, warmup: int = 2, repeats: int = 7) -> list[Row]:
    """Time every case of every group and return one :class:`Row` per case.

    Args:
        groups: the workloads to time.
        warmup: untimed calls per case first (allocator, oneDNN / cuDNN kernel selection).
        repeats: timed calls per case, interleaved across the cases of a group
            (:func:`interleaved_times`).
    """
    if warmup < 0 or repeats < 1:
        raise ValueError(f"need warmup >= 0 and repeats >= 1, got {warmup} and {repeats}")
    rows = []
    for group in groups:
        info = machine_info()
        times = interleaved_times(group, warmup=warmup, repeats=repeats)
        medians = [statistics.median(t) for t in times]
        reference_rate = group.cases[0].items / medians[0]
        for i, (case, case_times, median) in enumerate(zip(group.cases, times, medians)):
            q1, _, q3 = statistics.quantiles(case_times, n=4) if repeats > 1 else (0, 0, 0)
            rate = case.items / median
            rows.append(
                Row(
                    name=group.name,
                    impl=case.impl,
                    images_per_s=rate,
                    median_ms=1e3 * median,
                    iqr_ms=1e3 * (q3 - q1),
                    best_ms=1e3 * min(case_times),
                    ratio=None if i == 0 else reference_rate / rate,
                    params=case.params,
                    gflops=case.gflops,
                    repeats=repeats,
                    threads=int(info["threads"]),
                    machine=f"{info['machine']}; {info['device']}",
                    torch=str(info["torch"]),
                    date=str(info["date"]),
                    extra={**group.extra, "loadavg_1m": info["loadavg_1m"]},
                )
            )
    return rows


def format_table(rows: Sequence[Row]) -> str:
    """Aligned plain-text table of the rows (also valid Markdown)."""
    header = ["benchmark", "impl", "params", "GFLOP/img", "images/s"]
    header += ["median ms", "IQR ms", "best ms", "ours/this"]
    body = [
        [
            r.name,
            r.impl,
            f"{r.params / 1e6:.2f}M",
            "-" if r.gflops is None else f"{r.gflops:.2f}",
            f"{r.images_per_s:.2f}",
            f"{r.median_ms:.1f}",
            f"{r.iqr_ms:.1f}",
            f"{r.best_ms:.1f}",
            "-" if r.ratio is None else f"{r.ratio:.2f}",
        ]
        for r in rows
    ]
    # Modules that measure the device peak put the achieved fraction of it in ``extra``.
    if any("peak_fraction" in r.extra for r in rows):
        header.append("% peak")
        for line, r in zip(body, rows):
            fraction = r.extra.get("peak_fraction")
            line.append("-" if fraction is None else f"{100 * fraction:.1f}")
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]

    def fmt(cells: list[str]) -> str:
        # Text columns left-aligned, numbers right-aligned.
        padded = [c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))]
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([fmt(header), rule, *(fmt(line) for line in body)])


def report(rows: Sequence[Row]) -> str:
    """The table followed by one JSON object per row (``json.loads``-able lines)."""
    lines = [json.dumps(asdict(r), sort_keys=True) for r in rows]
    return "\n".join([format_table(rows), "", *lines])
