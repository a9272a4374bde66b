"""Short functions, classes and modules in cacheraw/: a function over 40 lines or a class over 300
lines says why in a comment starting with "# Long:" in its first lines; no module is over 400
lines."""

import ast
from pathlib import Path

import pytest

import cacheraw

PACKAGE = Path(cacheraw.__file__).parent
LIMITS = {ast.FunctionDef: 40, ast.AsyncFunctionDef: 40, ast.ClassDef: 300}
MODULE_LINES = 400


def too_long(package=PACKAGE):
    found = []
    for path in sorted(package.rglob("*.py")):
        lines = path.read_text().splitlines()
        for node in ast.walk(ast.parse("\n".join(lines), str(path))):
            limit = LIMITS.get(type(node))
            if limit is None or node.end_lineno - node.lineno + 1 <= limit:
                continue
            head = lines[node.lineno - 1:node.lineno + 4]
            if not any(line.strip().startswith("# Long:") for line in head):
                found.append("%s:%d %s (%d lines)" % (path.relative_to(package), node.lineno,
                                                      node.name,
                                                      node.end_lineno - node.lineno + 1))
    return found


def test_functions_and_classes_are_short_or_say_why():
    assert too_long() == []


def test_no_module_is_over_400_lines():
    assert [("%s (%d lines)" % (path.relative_to(PACKAGE), count))
            for path in sorted(PACKAGE.rglob("*.py"))
            for count in [len(path.read_text().splitlines())]
            if count > MODULE_LINES] == []


@pytest.mark.parametrize("source, long", [
    ("def f():\n" + "    x = 1\n" * 40, True),
    ("def f():\n" + "    x = 1\n" * 39, False),
    ("def f():\n    # Long: a table\n" + "    x = 1\n" * 40, False),
])
def test_the_rule(tmp_path, source, long):
    (tmp_path / "m.py").write_text(source)
    assert bool(too_long(tmp_path)) is long
