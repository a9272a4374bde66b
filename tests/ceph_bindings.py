"""Stand-ins for Ceph's ``rados`` and ``rbd`` modules on a Python the installed bindings were not
built for (Debian's are built for its Python 3.11 only).

The unit tests never talk to Ceph: their fakes reach the store through the modules' names and
raise the modules' errors. A stand-in has every public name of the real module, written down in
tests/fixtures/ceph-bindings.json from the real bindings (``python tests/ceph_bindings.py``):
the same exception classes and hierarchy, the same constants, and the classes and functions as
placeholders that refuse to run. tests/unit/test_python_versions.py checks, where the real
bindings import, that the file still says what they hold.
"""

import builtins
import importlib
import json
import sys
import types
from pathlib import Path

MODULES = ("rados", "rbd")
SPEC = Path(__file__).parent / "fixtures" / "ceph-bindings.json"


def describe(module: types.ModuleType) -> dict:
    """The public names a module defines itself: exceptions with their bases, constants with
    their values, anything else by its kind."""
    names = {}
    for name in sorted(dir(module)):
        value = getattr(module, name)
        if name.startswith("_") or isinstance(value, types.ModuleType):
            continue
        if isinstance(value, (int, str)):
            names[name] = {"constant": value}
        elif getattr(value, "__module__", None) != module.__name__:
            continue
        elif isinstance(value, type) and issubclass(value, BaseException):
            names[name] = {"exception": [base.__qualname__ if base.__module__ == "builtins"
                                         else "%s.%s" % (base.__module__, base.__qualname__)
                                         for base in value.__bases__]}
        else:
            names[name] = {"class" if isinstance(value, type) else "function": True}
    return names


class _Error(Exception):
    """What the bindings' Error classes do: a message and an optional errno."""

    def __init__(self, message=None, errno=None):
        super().__init__(message)
        self.errno = errno

    def __str__(self):
        message = super().__str__()
        return "[errno %s] %s" % (self.errno, message) if self.errno else message


def _placeholder(module_name: str, name: str, is_class: bool):
    def refuse(*args, **kwargs):
        raise RuntimeError("%s.%s is a stand-in: Ceph's bindings are not built for Python %s"
                           % (module_name, name, sys.version.split()[0]))
    if is_class:
        return type(name, (), {"__init__": refuse, "__module__": module_name})
    refuse.__name__ = name
    return refuse


def _base(ref: str, modules: dict):
    """A base class named as describe() names it; None while it is not made yet."""
    if "." not in ref:
        return _Error if ref == "Exception" else getattr(builtins, ref)
    module_name, name = ref.split(".", 1)
    return getattr(modules.get(module_name), name, None)


def stand_in(module_name: str, spec: dict, modules: dict) -> types.ModuleType:
    module = types.ModuleType(module_name, "Stand-in for Ceph's %s bindings" % module_name)
    modules[module_name] = module
    pending = dict(spec)
    while pending:
        before = len(pending)
        for name, what in list(pending.items()):
            if "exception" in what:
                bases = [_base(ref, modules) for ref in what["exception"]]
                if None in bases:
                    continue
                value = type(name, tuple(bases), {"__module__": module_name})
            elif "constant" in what:
                value = what["constant"]
            else:
                value = _placeholder(module_name, name, "class" in what)
            setattr(module, name, value)
            del pending[name]
        if len(pending) == before:
            raise ValueError("%s: bases never defined for %s" % (SPEC, sorted(pending)))
    return module


def install() -> bool:
    """Puts stand-ins in sys.modules when the real bindings do not import; True if it did."""
    try:
        for name in MODULES:
            importlib.import_module(name)
        return False
    except ImportError:
        pass
    spec = json.loads(SPEC.read_text())
    modules = {}
    for name in MODULES:
        sys.modules[name] = stand_in(name, spec[name], modules)
    return True


def write() -> None:
    """The spec file, from the real bindings: a line a name."""
    lines = []
    for module_name in MODULES:
        names = describe(importlib.import_module(module_name))
        lines.append(",\n".join("  %s: %s" % (json.dumps(name), json.dumps(what))
                                for name, what in names.items()))
    SPEC.write_text("{\n%s\n}\n" % ",\n".join(
        ' "%s": {\n%s\n }' % (name, body) for name, body in zip(MODULES, lines)))


if __name__ == "__main__":
    write()
