"""`python -m tools`: one dispatcher, argparse subcommands, lazy imports."""

from __future__ import annotations

import subprocess
import sys

import pytest

import tools.__main__ as dispatcher
from tools.catalog import ROOT


def test_usage_lists_every_command(capsys) -> None:
    assert dispatcher.main([]) == 2
    out = capsys.readouterr().out
    for command in ("import", "validate", "tables", "bib", "json", "add", "stats", "support"):
        assert f"  {command} " in out


def test_the_benchmark_moved_to_its_own_program(capsys) -> None:
    assert dispatcher.main(["bench"]) == 2
    assert "python -m benchmarks" in capsys.readouterr().err


def test_unknown_command(capsys) -> None:
    assert dispatcher.main(["frobnicate"]) == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err


def test_a_missing_command_module_gives_a_clear_message(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setitem(dispatcher.COMMANDS, "later", ("tools.no_such_module", "not written yet"))
    assert dispatcher.main(["later"]) == 2
    assert "module tools.no_such_module is missing" in capsys.readouterr().err


def test_validate_runs_as_a_module_without_importing_torch_when_asked() -> None:
    code = (
        "import sys, runpy; sys.argv = ['tools', 'validate', '--no-registry', '--quiet'];"
        "\ntry:\n    runpy.run_module('tools', run_name='__main__')\nexcept SystemExit as e:\n"
        "    assert e.code == 0, e.code\nassert 'torch' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
