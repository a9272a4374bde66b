"""Each outside system has one module of cacheraw that talks to it: an ast scan of cacheraw/."""

import ast
import re
from pathlib import Path

import pytest

import cacheraw

PACKAGE = Path(cacheraw.__file__).parent

# library (top-level package) -> the only modules (a name ending in / : a package) that may
# import it
BOUNDARIES = {
    "oslo_messaging": ("messaging.py",),
    "kombu": ("messaging.py",),
    # The image API, and cacheraw-manage check's questions to it (through the same adapter).
    "keystoneauth1": ("image_api.py",),
    "rados": ("ceph/",),
    "rbd": ("ceph/",),
    "subprocess": ("qemu/",),
    "oslo_concurrency": ("qemu/",),
    # The consumers run inside their hosts: each host's code is imported by its driver alone,
    # and the checks they share (clone_checks.py) import neither.
    "cinder": ("cinder/driver.py",),
    "nova": ("nova/driver.py",),
}
# Who may import each package of cacheraw: cacheraw.qemu knows nothing of Ceph, the image API or
# the core; cacheraw.ceph serves images through cacheraw.qemu's NBD server only.
PACKAGE_IMPORTS = {
    "qemu/": ("cacheraw.exception", "cacheraw.metrics", "cacheraw.qemu"),
    "ceph/": ("cacheraw.exception", "cacheraw.metrics", "cacheraw.properties", "cacheraw.retry",
              "cacheraw.stall", "cacheraw.qemu.nbd", "cacheraw.ceph"),
}
# The Ceph package: who may import which of its modules. The wiring (the daemon, cacheraw-manage's
# core and checks) builds a CephStore; everything else asks the store it is given. Inside the
# package, each module imports only those below it.
CEPH_FACADE = "cacheraw.ceph.store"
CEPH_WIRING = {"core.py", "worker.py", "check.py"}
CEPH_LAYERS = {
    "ceph/lease.py": set(),
    "ceph/connection.py": {"lease"},
    "ceph/cls_lock.py": set(),
    "ceph/locks.py": {"connection", "cls_lock"},
    "ceph/caches.py": {"connection"},
    "ceph/removals.py": {"connection", "caches"},
    "ceph/space.py": {"connection", "locks"},
    "ceph/views.py": {"connection", "lease", "cls_lock", "locks", "caches", "removals"},
    "ceph/served.py": set(),
    "ceph/store.py": {"connection", "lease", "locks", "caches", "removals", "space", "views",
                      "served"},
}
# What the package may import of the rest of cacheraw: the shared vocabulary, never the core.
CEPH_MAY_IMPORT = {"exception", "metrics", "retry", "properties", "stall", "qemu"}
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
                and not allowed(where, BOUNDARIES[lib])
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
    ours = [name for name in dotted_imports(ast.parse(path.read_text(), str(path)))]
    crossing = [name for name in ours
                if not any(name == ok or name.startswith(ok + ".") for ok in rules[0])]
    assert crossing == [], "%s imports %s" % (where, crossing)


def dotted_imports(tree):
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
    if where.startswith("ceph/"):
        return
    reached = {name for name in cacheraw_imports(ast.parse(path.read_text(), str(path)))
               if name.startswith("cacheraw.ceph")}
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


# The packages that run inside a host whose code the unit tests' environment does not have: their
# modules' unit tests are tests/<package>/test_<module>.py, run in the host's environment.
HOSTED_TESTS = {"nova"}


def test_every_module_has_its_unit_tests():
    """cacheraw/x.py has tests/unit/test_x.py; a module of a package, test_<module>.py,
    test_<package>_<module>.py or test_<package>.py (e.g. cmd/: test_cmd.py); a module of a
    package of HOSTED_TESTS, tests/<package>/test_<module>.py."""
    unit = PACKAGE.parent / "tests" / "unit"
    missing = []
    for path in modules():
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if parts[-1] == "__init__" and not any(
                isinstance(node, (ast.FunctionDef, ast.ClassDef))
                for node in ast.parse(path.read_text()).body):
            continue  # a package's name and docstring only
        names = {parts[-1], "_".join(parts), parts[0]} - {"__init__"}
        if parts[0] in HOSTED_TESTS and len(parts) > 1:
            if (unit.parent / parts[0] / ("test_%s.py" % parts[-1])).exists():
                continue
        if not any((unit / ("test_%s.py" % name)).exists() for name in names):
            missing.append("/".join(parts))
    assert missing == [], "no tests/unit/test_<module>.py for %s" % missing


DESIGN = PACKAGE.parent / "docs" / "design.md"


def design_table():
    """{module path relative to cacheraw/ (a package ends in '/'): the modules of cacheraw it
    may import}, from the table under '## Modules' of docs/design.md."""
    text = DESIGN.read_text().split("\n## Modules\n", 1)[1].split("\n## ", 1)[0]
    table = {}
    for row in text.splitlines():
        cells = [cell.strip() for cell in row.strip().strip("|").split("|")]
        if len(cells) != 3 or not cells[0].startswith("`cacheraw/"):
            continue
        names = re.findall(r"`([^`]+)`", cells[0])
        where = names[0][len("cacheraw/"):].rsplit("/", 1)
        folder = where[0] + "/" if len(where) == 2 and where[1] else ""
        paths = [names[0][len("cacheraw/"):]] + [folder + name for name in names[1:]]
        for path in paths:
            table[path] = set(re.findall(r"`([a-z_]+)`", cells[2]))
    return table


def first_names_imported(tree):
    """The modules (or packages) of cacheraw a module imports, by their first name under it."""
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            parts = node.module.split(".")
            if parts[0] != "cacheraw":
                continue
            if len(parts) > 1:
                yield parts[1]
            else:
                yield from (a.name for a in node.names if not a.name.startswith("__"))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "cacheraw" and len(parts) > 1:
                    yield parts[1]


def test_the_design_doc_names_every_module_and_what_it_may_import():
    """docs/design.md's table of modules is the rule: each module of cacheraw/ is in it (a
    package's row covers its files) and imports only what its row allows, besides its own
    package."""
    table = design_table()
    assert table, "no table under '## Modules' in docs/design.md"
    wrong = []
    for path in modules():
        where = str(path.relative_to(PACKAGE))
        tree = ast.parse(path.read_text(), str(path))
        if path.name == "__init__.py" and not any(
                isinstance(node, (ast.FunctionDef, ast.ClassDef)) for node in tree.body) \
                and not set(first_names_imported(tree)):
            continue
        row = where if where in table else where.split("/")[0] + "/"
        if row not in table:
            wrong.append("%s: not in the table of docs/design.md" % where)
            continue
        own = {where.split("/")[0]} if "/" in where else set()
        extra = set(first_names_imported(tree)) - table[row] - own
        if extra:
            wrong.append("%s imports %s, which docs/design.md does not allow"
                         % (where, sorted(extra)))
    assert wrong == []
