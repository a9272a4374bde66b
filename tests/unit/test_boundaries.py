"""Each outside system has one module of cacheraw that talks to it: an ast scan of cacheraw/."""

import ast
from pathlib import Path

import pytest

import cacheraw

PACKAGE = Path(cacheraw.__file__).parent

# library (top-level package) -> the only modules (a name ending in / : a package) that may
# import it
BOUNDARIES = {
    "oslo_messaging": ("messaging.py",),
    "keystoneauth1": ("image_api.py",),
    "rados": ("store.py", "ceph/"),
    "rbd": ("store.py", "ceph/"),
    "subprocess": ("qemu/",),
    "oslo_concurrency": ("qemu/",),
}
# Who may import each package of cacheraw: cacheraw.qemu knows nothing of Ceph, the image API or
# the core; cacheraw.ceph serves images through cacheraw.qemu's NBD server only.
PACKAGE_IMPORTS = {
    "qemu/": ("cacheraw.exception", "cacheraw.metrics", "cacheraw.qemu"),
    "ceph/": ("cacheraw.exception", "cacheraw.metrics", "cacheraw.properties",
              "cacheraw.qemu.nbd", "cacheraw.ceph"),
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
    crossing = [lib for lib in imported(tree) if lib in BOUNDARIES and not allowed(where, BOUNDARIES[lib])
                and (lib, where) not in OPTIONS_ONLY]
    assert crossing == [], "%s imports %s" % (where, crossing)


def allowed(where, places):
    return any(where == place or (place.endswith("/") and where.startswith(place))
               for place in places)


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_the_boundary_packages_import_only_what_they_may(path):
    where = str(path.relative_to(PACKAGE))
    rules = [names for package, names in PACKAGE_IMPORTS.items() if where.startswith(package)]
    if not rules:
        return
    ours = [name for name in cacheraw_imports(ast.parse(path.read_text(), str(path)))]
    crossing = [name for name in ours
                if not any(name == ok or name.startswith(ok + ".") for ok in rules[0])]
    assert crossing == [], "%s imports %s" % (where, crossing)


def cacheraw_imports(tree):
    """The cacheraw modules a module imports, by their dotted names."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names if a.name.startswith("cacheraw"))
        elif isinstance(node, ast.ImportFrom) and node.module and \
                node.module.startswith("cacheraw"):
            yield from ("%s.%s" % (node.module, a.name) for a in node.names)


def test_only_cacheraw_qemu_runs_qemu_img():
    # Its path comes from [converter] qemu_img and only the runner reads it; anything else
    # naming or running it is a second door.
    runners = []
    for path in modules():
        where = str(path.relative_to(PACKAGE))
        tree = ast.parse(path.read_text(), str(path))
        if where != "qemu/runner.py" and (
                {"subprocess", "processutils"} & set(imported_names(tree))
                or any(".qemu_img" in ast.unparse(n) for n in ast.walk(tree)
                       if isinstance(n, ast.Attribute) and n.attr == "qemu_img"
                       and "conf" in ast.unparse(n))):
            runners.append(where)
    assert runners == []


def test_the_core_runs_no_process():
    """Only cacheraw.qemu starts processes: the core orchestrates."""
    starting = []
    for path in modules():
        where = str(path.relative_to(PACKAGE))
        if where.startswith("qemu/"):
            continue
        names = set(imported_names(ast.parse(path.read_text(), str(path))))
        if names & {"subprocess", "processutils", "Popen", "multiprocessing"}:
            starting.append(where)
    assert starting == []


def imported_names(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name.split(".")[-1] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            yield from (alias.name for alias in node.names)
            if node.module:
                yield node.module.split(".")[-1]


def test_the_boundary_modules_exist():
    paths = {str(p.relative_to(PACKAGE)) for p in modules()}
    for places in BOUNDARIES.values():
        for place in places:
            assert place in paths or any(p.startswith(place) for p in paths), place


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
