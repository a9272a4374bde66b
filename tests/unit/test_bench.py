"""The benchmark (make bench, not part of make test) keeps up with the code it measures: every
attribute it uses on the store, its connection, the local stack, the image API client, the
notifications and the worker exists, each call it makes to them fits the signature, and every
option it reads is registered."""

import ast
import inspect
import textwrap
from pathlib import Path

import pytest
from oslo_config import cfg

from cacheraw.ceph import connection
from cacheraw.ceph import store
from cacheraw.conf import register_opts
from tests.image_client import ImageClient

TOP = Path(__file__).resolve().parents[2]
# bench/nova_roots.py runs in a Nova virtual environment, on Nova's objects.
SOURCES = sorted(p for p in (TOP / "bench").glob("*.py") if p.name != "nova_roots.py") + [
    TOP / "tools" / "bench.py"]


@pytest.fixture(scope="module")
def env():
    from bench import env
    return env


def receivers(env):
    """{dotted expression: its class} anywhere in the bench, and inside the class Stack."""
    anywhere = {"stack": env.Stack, "stack.store": store.CephStore,
                "stack.conn": connection.Connection, "stack.store.conn": connection.Connection,
                "stack.demo": ImageClient, "stack.service": ImageClient,
                "events": env.Events, "worker": env.Worker, "cleaner": env.Worker}
    in_stack = {k.replace("stack", "self", 1): v for k, v in anywhere.items()
                if k.startswith("stack")}
    return anywhere, in_stack


def attributes(cls):
    """What an instance of ``cls`` has: its class's names and what its methods assign to
    ``self``."""
    names = set(dir(cls))
    for klass in cls.__mro__[:-1]:
        tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        names.update(node.attr for node in ast.walk(tree)
                     if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store)
                     and isinstance(node.value, ast.Name) and node.value.id == "self")
    return names


def dotted(node):
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return ".".join([node.id] + parts[::-1])


def uses(tree, known):
    """(line, receiver, attribute, the call node or None) for each use of an attribute of a
    known receiver."""
    calls = {id(node.func): node for node in ast.walk(tree) if isinstance(node, ast.Call)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and dotted(node.value) in known:
            yield node.lineno, dotted(node.value), node.attr, calls.get(id(node))


def scopes(path, env):
    """(tree, receivers) pairs: the file, and each class Stack in it with ``self``."""
    anywhere, in_stack = receivers(env)
    tree = ast.parse(path.read_text(), str(path))
    yield tree, anywhere
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == "Stack":
            yield node, in_stack


def unfit_call(cls, name, call):
    """Why ``call`` does not fit the method ``cls.name``, or None."""
    method = inspect.getattr_static(cls, name, None)
    if not inspect.isfunction(method) or call is None or any(
            isinstance(a, ast.Starred) for a in call.args) or any(
            k.arg is None for k in call.keywords):
        return None
    try:
        inspect.signature(method).bind(None, *call.args, **{k.arg: k for k in call.keywords})
    except TypeError as exc:
        return str(exc)
    return None


def test_the_bench_modules_import():
    from bench import identical, images, measure, report, roots, volumes  # noqa: F401


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.name)
def test_the_bench_uses_what_exists(path, env):
    wrong = []
    for scope, known in scopes(path, env):
        for line, receiver, name, call in uses(scope, known):
            cls = known[receiver]
            if name not in attributes(cls):
                wrong.append("%s:%d: %s.%s: %s has no %s" % (path.name, line, receiver, name,
                                                            cls.__name__, name))
            elif unfit_call(cls, name, call):
                wrong.append("%s:%d: %s.%s(): %s" % (path.name, line, receiver, name,
                                                     unfit_call(cls, name, call)))
    assert wrong == [], "\n".join(wrong)


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.name)
def test_the_bench_reads_registered_options(path):
    conf = cfg.ConfigOpts()
    register_opts(conf)
    wrong = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        name = dotted(node) if isinstance(node, ast.Attribute) else None
        parts = (name or "").split(".")
        if len(parts) == 4 and parts[0] in ("stack", "self") and parts[1] == "conf":
            group, option = parts[2], parts[3]
            if group not in conf or option not in conf[group]:
                wrong.append("%s:%d: [%s] %s" % (path.name, node.lineno, group, option))
    assert wrong == [], "\n".join(wrong)


def test_the_check_sees_the_old_api():
    """What the bench once called on the store (before cacheraw.ceph) is caught."""
    tree = ast.parse("stack.store._image('x')\nstack.store.create('x', 1)\n")
    known = {"stack.store": store.CephStore}
    found = [(name, name in attributes(store.CephStore) and unfit_call(store.CephStore, name,
                                                                          call))
             for _, _, name, call in uses(tree, known)]
    assert ("_image", False) in found
    assert any(name == "create" and why for name, why in found)
