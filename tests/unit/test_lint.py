"""The code passes the lint of ruff.toml (pycodestyle, pyflakes, bugbear), as `make lint`."""

import subprocess
import sys
from pathlib import Path

import pytest

TOP = Path(__file__).resolve().parents[2]
LINTED = ("cacheraw", "tests", "tools", "bench", "setup.py")


@pytest.mark.main_env  # ruff is a tool of the main environment
def test_ruff_finds_nothing():
    done = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", *LINTED],
                          cwd=TOP, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
