"""The ``medbalance`` command line."""

from medbalance.cli.main import build_parser, main

__all__ = ["main", "build_parser"]
