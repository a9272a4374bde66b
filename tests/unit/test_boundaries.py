"""Each outside system has one module of cacheraw that talks to it: an ast scan of cacheraw/."""

import ast
from pathlib import Path

import pytest

import cacheraw

PACKAGE = Path(cacheraw.__file__).parent

# library (top-level package) -> the only module that may import it
BOUNDARIES = {
    "oslo_messaging": "messaging.py",
    "keystoneauth1": "image_api.py",
    "rados": "store.py",
    "rbd": "store.py",
    # The consumers run inside their hosts: each host's code is imported by its driver alone,
    # and the checks they share (clone_checks.py) import neither.
    "cinder": "cinder/driver.py",
    "nova": "nova/driver.py",
}
# The config package registers keystoneauth1's session, adapter and auth options (as nova/conf
# does): it declares options and never talks to Keystone.
OPTIONS_ONLY = {("keystoneauth1", "conf/image_api.py")}


def modules():
    return sorted(p for p in PACKAGE.rglob("*.py"))


def imported(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module.split(".")[0]


def strings(tree):
    return [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant)
            and isinstance(n.value, str)]


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_each_library_is_imported_by_its_one_module(path):
    tree = ast.parse(path.read_text(), str(path))
    where = str(path.relative_to(PACKAGE))
    crossing = [lib for lib in imported(tree) if lib in BOUNDARIES and BOUNDARIES[lib] != where
                and (lib, where) not in OPTIONS_ONLY]
    assert crossing == [], "%s imports %s" % (where, crossing)


def test_only_the_converter_runs_qemu_img():
    # Its path comes from [converter] qemu_img; anything else naming or running it is a
    # second door.
    runners = []
    for path in modules():
        where = str(path.relative_to(PACKAGE))
        tree = ast.parse(path.read_text(), str(path))
        if where != "converter.py" and (
                {"subprocess", "processutils"} & set(imported_names(tree))
                or any(".qemu_img" in ast.unparse(n) for n in ast.walk(tree)
                       if isinstance(n, ast.Attribute) and n.attr == "qemu_img"
                       and "conf" in ast.unparse(n))):
            runners.append(where)
    assert runners == []


def imported_names(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name.split(".")[-1] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            yield from (alias.name for alias in node.names)
            if node.module:
                yield node.module.split(".")[-1]


def test_the_boundary_modules_exist():
    present = {str(p.relative_to(PACKAGE)) for p in modules()}
    assert present >= set(BOUNDARIES.values()) | {"converter.py"}


def test_test_modules_never_import_one_another():
    """What tests share is in conftest.py or tests/functional/helpers.py, never in a test_*
    module that another one imports (and so runs its module-level code twice)."""
    tests = PACKAGE.parent / "tests"
    crossing = []
    for path in sorted(tests.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module and \
                    node.module.split(".")[-1].startswith("test_"):
                crossing.append("%s imports %s" % (path.relative_to(tests), node.module))
    assert crossing == []
