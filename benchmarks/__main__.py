"""Run every ``benchmarks/bench_*.py`` module and print one table plus JSON lines.

Usage: ``python -m benchmarks [--quick] [--threads N] [--only SUBSTRING] [--device DEV]
[--channels-last]``. Every module exposes ``run(*, quick, device, channels_last) -> list[Row]``.

``python -m benchmarks NAME [...]`` runs one benchmark with its own options, NAME one of
``nets``, ``losses``, ``compute`` (channels_last / bf16 / no-grad / argmax switches),
``pipeline`` (data-only vs train-step images/s, dataset cache), ``scaling`` (time per
epoch vs dataset size and image side, peak RSS, ``benchmarks/figures/scaling.png``) and
``sliding`` (sliding-window inference vs MONAI's, ``bench_sliding_window.py``); e.g.
``python -m benchmarks scaling --help``. Figures and their commands: ``benchmarks/RESULTS.md``.
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
SUBCOMMANDS = ("nets", "losses", "compute", "pipeline", "scaling", "sliding")

#: Subcommands whose module is not ``bench_NAME``.
_MODULES = {"sliding": "sliding_window"}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] and argv[0] in SUBCOMMANDS:
        return importlib.import_module(f"benchmarks.bench_{_MODULES.get(argv[0], argv[0])}").main(argv[1:])
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
