"""The type hints of the boundaries and the core hold (mypy.ini), as `make typecheck`."""

import subprocess
import sys
from pathlib import Path

import pytest

TOP = Path(__file__).resolve().parents[2]


@pytest.mark.main_env  # mypy is a tool of the main environment
def test_mypy_finds_nothing():
    done = subprocess.run([sys.executable, "-m", "mypy", "--config-file", "mypy.ini",
                           "--no-error-summary"],
                          cwd=TOP, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
