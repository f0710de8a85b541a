"""The ``diffdefense`` command line: one program, a module per group of commands."""

from diffdefense.cli import baseline, bench, data, defend, evaluate, export, info, models, stream, train  # noqa: F401  (they register their commands)
from diffdefense.cli.common import main

__all__ = ["main"]
