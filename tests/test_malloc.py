"""The allocator setting: applied on glibc, off with MEDBALANCE_MALLOC=default, never an error."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

_PROBE = "from medbalance._malloc import tune_malloc; print(tune_malloc())"


def _probe(env_value: str | None, monkeypatch) -> str:
    if env_value is None:
        monkeypatch.delenv("MEDBALANCE_MALLOC", raising=False)
    else:
        monkeypatch.setenv("MEDBALANCE_MALLOC", env_value)
    return subprocess.run([sys.executable, "-c", _PROBE], check=True, capture_output=True, text=True).stdout.strip()


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_applied_on_glibc_unless_opted_out(monkeypatch):
    assert _probe(None, monkeypatch) == "True"
    assert _probe("default", monkeypatch) == "False"
    assert _probe(" Default ", monkeypatch) == "False"


def test_disabled_call_changes_nothing(monkeypatch):
    from medbalance import _malloc

    monkeypatch.setattr(_malloc, "_applied", False)
    assert _malloc.tune_malloc(enable=False) is False
