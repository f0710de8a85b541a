"""The scripts under tools/ are thin: each runs one click command of the package, where its logic is tested."""

import ast
import importlib
from pathlib import Path

import click
import pytest

TOOLS = Path(__file__).resolve().parents[1] / "tools"


@pytest.mark.parametrize("script", sorted(TOOLS.glob("*.py")), ids=lambda path: path.name)
def test_a_script_imports_one_package_command_and_runs_it(script):
    docstring, *statements = ast.parse(script.read_text()).body
    assert isinstance(docstring, ast.Expr) and isinstance(docstring.value, ast.Constant), "no docstring"
    assert len(statements) == 2, "a wrapper is one import and the __main__ guard"
    imported, guard = statements
    assert isinstance(imported, ast.ImportFrom) and imported.module.startswith("diffdefense.")
    (name,) = imported.names
    command = getattr(importlib.import_module(imported.module), name.name)
    assert isinstance(command, click.Command)
    assert isinstance(guard, ast.If) and ast.unparse(guard.test) == "__name__ == '__main__'"
    assert [ast.unparse(line) for line in guard.body] == [f"{name.name}()"]
