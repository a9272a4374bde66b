"""The code passes the lint of ruff.toml (pycodestyle, pyflakes, bugbear), as `make lint`, and
imports the modules of cacheraw by their own names."""

import ast
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


# Modules not yet brought to the rule.
NOT_YET: set = set()


def test_a_module_of_cacheraw_is_imported_by_its_own_name():
    """``from cacheraw.ceph import lease``, never ``... import lease as lease_mod``: a module
    that already names a variable or parameter so imports what it needs of it by name
    (``from cacheraw.ceph.lease import Lease``) instead (docs/development.md)."""
    package = TOP / "cacheraw"
    aliased = []
    for path in sorted(package.rglob("*.py")):
        where = str(path.relative_to(package))
        if where in NOT_YET:
            continue
        for node in ast.walk(ast.parse(path.read_text(), where)):
            if isinstance(node, ast.ImportFrom) and node.module and \
                    node.module.split(".")[0] == "cacheraw":
                names = node.names
            elif isinstance(node, ast.Import):
                names = [a for a in node.names if a.name.split(".")[0] == "cacheraw"]
            else:
                continue
            aliased += ["%s: %s as %s" % (where, a.name, a.asname) for a in names if a.asname]
    assert aliased == []
