"""Importing the compiled extension in tests: a skip with the reason where it is not installed, but a failure
where the environment variable CI is set, since CI builds it (tools/install.sh) and must not skip its tests."""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import pytest


def import_extension(module: str = "diffdefense_fused") -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as error:
        if os.environ.get("CI"):
            pytest.fail(
                f"CI is set, but {module} does not import ({error}); tools/install.sh builds it.", pytrace=False
            )
        pytest.skip(
            f"the compiled extension is not installed ({error}): python -m pip install ./cpp_ext",
            allow_module_level=True,
        )
