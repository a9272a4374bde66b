"""cacheraw runs on Python 3.9 to 3.12 (the driver inside the Cinder of RHEL 9's 3.9 or Ubuntu
22.04's 3.10): nothing newer creeps in, and what setup.py says is what is tested."""

import ast
import importlib
import json
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pytest

import cacheraw
from tests import ceph_bindings

TOP = Path(__file__).resolve().parents[2]
OLDEST = (3, 9)
TESTED = ["3.9", "3.10", "3.11", "3.12"]


def test_no_module_of_cacheraw_needs_a_python_newer_than_the_oldest():
    # vermin knows which syntax and which standard-library names came with which Python
    # (enum.StrEnum with 3.11, match and int | str with 3.10).
    vermin = Path(sys.executable).parent / "vermin"
    done = subprocess.run([str(vermin), "-t=%d.%d-" % OLDEST, "--violations", "--no-tips",
                           "--no-parse-comments", str(TOP / "cacheraw")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_module_of_cacheraw_imports_on_this_python():
    # The Nova driver imports Nova, which lives in the Nova tests' own environments (one per
    # Nova release: tools/nova-venv.sh), where its tests import it.
    names = [info.name for info in pkgutil.walk_packages(cacheraw.__path__, "cacheraw.")
             if not info.name.startswith("cacheraw.nova")]
    assert "cacheraw.cinder.driver" in names
    for name in names:
        importlib.import_module(name)


def setup_keyword(name):
    tree = ast.parse((TOP / "setup.py").read_text())
    (call,) = [node for node in ast.walk(tree) if isinstance(node, ast.Call)
               and getattr(node.func, "id", None) == "setup"]
    (value,) = [kw.value for kw in call.keywords if kw.arg == name]
    return ast.literal_eval(value)


def test_setup_py_claims_the_pythons_that_are_tested():
    assert setup_keyword("python_requires") == ">=%d.%d" % OLDEST
    claimed = [c.rsplit(" :: ", 1)[1] for c in setup_keyword("classifiers")
               if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)]
    assert claimed == TESTED


def test_the_tested_pythons_are_those_make_test_runs_and_the_cinder_releases_cover():
    setup_sh = (TOP / "tools" / "setup.sh").read_text()
    (others,) = re.findall(r"CACHERAW_PYTHONS-([0-9. ]+)\}", setup_sh)
    assert sorted(others.split() + ["3.11"], key=lambda v: tuple(map(int, v.split(".")))) \
        == TESTED
    releases = (TOP / "tools" / "cinder-releases.txt").read_text().splitlines()
    pythons = {line.split()[2] for line in releases if line.strip() and not line.startswith("#")}
    assert pythons <= set(TESTED)
    assert set(others.split()) <= pythons


@pytest.mark.ceph_bindings
def test_the_stand_ins_for_ceph_s_bindings_are_what_the_real_ones_hold():
    import rados
    import rbd
    spec = json.loads(ceph_bindings.SPEC.read_text())
    real = {module.__name__: ceph_bindings.describe(module) for module in (rados, rbd)}
    assert real == spec, "run: .venv/bin/python tests/ceph_bindings.py, and commit the file"


def test_a_stand_in_has_the_real_exception_tree_and_refuses_to_talk_to_ceph():
    spec = json.loads(ceph_bindings.SPEC.read_text())
    modules = {}
    fake_rados = ceph_bindings.stand_in("rados", spec["rados"], modules)
    fake_rbd = ceph_bindings.stand_in("rbd", spec["rbd"], modules)
    error = fake_rbd.ImageNotFound("no image", errno=2)
    assert isinstance(error, fake_rbd.OSError) and isinstance(error, fake_rbd.Error)
    assert str(error) == "[errno 2] no image"
    assert issubclass(fake_rados.ObjectNotFound, fake_rados.Error)
    assert fake_rbd.RBD_FEATURE_LAYERING == 1
    with pytest.raises(RuntimeError, match="stand-in"):
        fake_rados.Rados(conffile="/etc/ceph/ceph.conf")
