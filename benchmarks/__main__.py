"""Run every ``benchmarks/bench_*.py`` module and print one table plus JSON lines.

Usage: ``python -m benchmarks [--quick] [--threads N] [--only SUBSTRING] [--device DEV]
[--channels-last]``. Every module exposes ``run(*, quick, device, channels_last) -> list[Row]``.

``python -m benchmarks NAME [...]`` runs one benchmark with its own options, NAME one of
``nets``, ``losses``, ``compute`` (channels_last / bf16 / no-grad / argmax switches),
``pipeline`` (data-only vs train-step images/s, dataset cache), ``scaling`` (time per
epoch vs dataset size and image side, peak RSS, ``benchmarks/figures/scaling.png``), ``surface``
(HD95 vs MONAI and vs no bounding-box crop), ``patches`` (patch sampling vs MONAI, data wait of
a U-Net step, rare-class coverage), ``sliding`` (sliding-window inference vs MONAI) and
``quality`` (test score vs training time through ``medbalance train`` on real data); e.g.
``python -m benchmarks scaling --help``. Figures and their commands: ``benchmarks/RESULTS.md``.
``python -m benchmarks estimate-gpu`` estimates each experiment's ``--scale paper`` wall time on
an H100 from FLOPs (:mod:`benchmarks.estimate_gpu`).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys

import benchmarks
from benchmarks.harness import report, start

log = logging.getLogger("benchmarks")

#: Benchmarks with options of their own: ``python -m benchmarks NAME [options]``.
SUBCOMMANDS = ("nets", "losses", "compute", "pipeline", "scaling", "surface", "patches", "sliding", "quality")
#: Tools that time nothing, by command name: not run by the all-benchmarks loop.
TOOLS = {"estimate-gpu": "benchmarks.estimate_gpu"}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] and argv[0] in SUBCOMMANDS:
        return importlib.import_module(f"benchmarks.bench_{argv[0]}").main(argv[1:])
    if argv[:1] and argv[0] in TOOLS:
        return importlib.import_module(TOOLS[argv[0]]).main(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes and 2 repeats (smoke run)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--only", default="", help="run only modules whose name contains this")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    parser.add_argument("--channels-last", action="store_true", help="models and inputs in channels_last")
    args = parser.parse_args(argv)
    start(args.threads)

    names = sorted(m.name for m in pkgutil.iter_modules(benchmarks.__path__) if m.name.startswith("bench_"))
    rows = []
    for name in names:
        if args.only not in name:
            continue
        log.info("running %s", name)
        module = importlib.import_module(f"benchmarks.{name}")
        rows += module.run(quick=args.quick, device=args.device, channels_last=args.channels_last)
    sys.stdout.write(report(rows) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
