"""CLI polish: ``--version`` without torch, a description, an example and help for every argument."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from medbalance import __version__
from medbalance.cli.main import EXPORT_CHOICES, build_parser, main

SRC = str(Path(__file__).resolve().parents[1] / "src")


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    [sub] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def _python(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)


def test_version_and_help_load_no_torch():
    code = (
        "import sys\nfrom medbalance.cli.main import main, build_parser\n"
        "build_parser().format_help()\n"
        "try:\n    main(['--version'])\nexcept SystemExit as exc:\n    assert exc.code == 0\n"
        "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))"
    )
    done = _python(code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [f"medbalance {__version__}", "[]"]


def test_every_subcommand_help_has_a_description_an_example_and_argument_help(capsys):
    commands = _subcommands()
    assert {"demo", "train", "predict", "evaluate", "inspect", "report", "export", "experiment", "combine"} <= set(
        commands
    )
    for name, parser in commands.items():
        assert parser.description and "\nExample:\n  medbalance " + name in parser.description, name
        assert parser.formatter_class is argparse.RawDescriptionHelpFormatter, name
        for action in parser._actions:
            assert action.help, f"{name}: argument {action.dest} has no help"
        with pytest.raises(SystemExit, match="0"):
            main([name, "--help"])
        shown = capsys.readouterr().out
        assert "Example:\n  medbalance " + name in shown  # the example keeps its own line


def test_export_choices_are_the_exporters_formats_and_aliases():
    from medbalance.export import EXPORT_FORMATS, FORMAT_ALIASES

    assert EXPORT_CHOICES == (*EXPORT_FORMATS, *FORMAT_ALIASES)
