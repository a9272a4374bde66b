"""Each outside system has one module of cacheraw that talks to it: an ast scan of cacheraw/."""

import ast
from pathlib import Path

import pytest

import cacheraw

PACKAGE = Path(cacheraw.__file__).parent

# library (top-level package) -> the only modules that may import it (a folder: its package)
BOUNDARIES = {
    "oslo_messaging": ("messaging.py",),
    "keystoneauth1": ("image_api.py",),
    "rados": ("ceph/", "store.py"),
    "rbd": ("ceph/", "store.py"),
}
# The Ceph package: who may import which of its modules. The wiring (the daemon, cacheraw-manage's
# core and checks) builds a CephStore; everything else asks the store it is given. Inside the
# package, each module imports only those below it.
CEPH_FACADE = "cacheraw.ceph.store"
CEPH_WIRING = {"core.py", "worker.py", "check.py"}
CEPH_LAYERS = {
    "ceph/lease.py": set(),
    "ceph/connection.py": {"lease"},
    "ceph/locks.py": {"connection"},
    "ceph/caches.py": {"connection"},
    "ceph/removals.py": {"connection", "caches"},
    "ceph/space.py": {"connection", "locks"},
    "ceph/views.py": {"connection", "lease", "locks", "caches", "removals"},
    "ceph/store.py": {"connection", "lease", "locks", "caches", "removals", "space", "views"},
}
# What the package may import of the rest of cacheraw: the shared vocabulary, never the core.
CEPH_MAY_IMPORT = {"exception", "metrics", "retry", "properties", "stall", "nbd", "store"}
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
    crossing = [lib for lib in imported(tree) if lib in BOUNDARIES
                and not any(where == allowed or (allowed.endswith("/") and
                                                 where.startswith(allowed))
                            for allowed in BOUNDARIES[lib])
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
    where = {str(p.relative_to(PACKAGE)) for p in modules()}
    assert where >= {"messaging.py", "image_api.py", "converter.py", "store.py"} | set(CEPH_LAYERS)


def cacheraw_imports(tree):
    """The cacheraw modules a module imports, as dotted names."""
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("cacheraw"):
            if node.module in ("cacheraw", "cacheraw.ceph"):  # from a package: its modules
                yield from ("%s.%s" % (node.module, alias.name) for alias in node.names)
            else:
                yield node.module
        elif isinstance(node, ast.Import):
            yield from (a.name for a in node.names if a.name.startswith("cacheraw"))


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_the_ceph_package_is_reached_through_its_store(path):
    where = str(path.relative_to(PACKAGE))
    if where.startswith("ceph/") or where == "store.py":
        return
    reached = {name for name in cacheraw_imports(ast.parse(path.read_text(), str(path)))
               if name.startswith("cacheraw.ceph") or name == "cacheraw.store"}
    allowed = {CEPH_FACADE} if where in CEPH_WIRING else set()
    assert reached <= allowed, "%s imports %s" % (where, sorted(reached - allowed))


@pytest.mark.parametrize("where", sorted(CEPH_LAYERS))
def test_each_module_of_the_ceph_package_imports_only_those_below_it(where):
    path = PACKAGE / where
    names = set(cacheraw_imports(ast.parse(path.read_text(), str(path))))
    inside = {n.rsplit(".", 1)[1] for n in names if n.startswith("cacheraw.ceph.")}
    outside = {n.rsplit(".", 1)[1] for n in names if not n.startswith("cacheraw.ceph")}
    assert inside <= CEPH_LAYERS[where], "%s imports %s" % (where, inside - CEPH_LAYERS[where])
    assert outside <= CEPH_MAY_IMPORT, "%s imports %s" % (where, outside - CEPH_MAY_IMPORT)


def test_the_ceph_modules_stay_small():
    sizes = {where: len((PACKAGE / where).read_text().splitlines()) for where in CEPH_LAYERS}
    assert {where: n for where, n in sizes.items() if n > 300} == {}


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
