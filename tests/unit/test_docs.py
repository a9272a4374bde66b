"""The documentation renders as its reader needs: every relative link and #anchor of README.md,
CHANGELOG.md and docs/*.md resolves, and docs/configuration.md lists the options as they are."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

TOP = Path(__file__).resolve().parents[2]
DOCUMENTS = [TOP / "README.md", TOP / "CHANGELOG.md", *sorted((TOP / "docs").glob("*.md"))]
# [text](target) outside code: the target up to a closing parenthesis or a space (a title).
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)[^)]*\)")
FENCE = re.compile(r"^```.*?^```", re.M | re.S)
CODE = re.compile(r"`[^`\n]*`")


def prose(text):
    """The text without fenced blocks and code spans, where brackets are not links."""
    return FENCE.sub("", text)


def links(text):
    for line in prose(text).splitlines():
        yield from LINK.findall(without_code(line))


def without_code(line):
    """A code span inside a link's text is kept; a link inside a code span is not a link."""
    return CODE.sub(lambda m: m.group(0) if m.start() and line[m.start() - 1] == "[" else "",
                    line)


def slug(heading):
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to dashes."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(path):
    seen = {}
    found = set()
    for line in prose(path.read_text()).splitlines():
        match = re.match(r"#{1,6} (.+)", line)
        if not match:
            continue
        base = slug(match.group(1))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else "%s-%d" % (base, count))
    return found


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(TOP)))
def test_every_relative_link_and_anchor_resolves(document):
    broken = []
    for target in links(document.read_text()):
        if re.match(r"[a-z]+:", target):
            continue  # http(s), mailto: not checked here
        path, _, anchor = target.partition("#")
        where = (document.parent / path).resolve() if path else document
        if not where.exists():
            broken.append("%s: no such file" % target)
        elif anchor and (where.suffix != ".md" or anchor not in anchors(where)):
            broken.append("%s: no such anchor" % target)
    assert broken == []


def test_the_docs_are_linked_from_the_readme():
    readme = (TOP / "README.md").read_text()
    for document in DOCUMENTS[2:]:
        assert "(docs/%s)" % document.name in readme


def test_the_readme_is_a_short_front_door_with_the_two_commands():
    readme = (TOP / "README.md").read_text()
    assert len(readme.splitlines()) < 200
    assert "make run " in readme and "make test " in readme


@pytest.mark.main_env  # the help texts of the libraries' options differ between their versions
def test_the_option_reference_is_what_the_generator_makes():
    done = subprocess.run([sys.executable, str(TOP / "tools/gen-config-doc.py"), "--check"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_the_option_reference_names_every_option():
    from cacheraw.conf import opts
    text = (TOP / "docs/configuration.md").read_text()
    for group, group_opts in opts.list_opts():
        for opt in group_opts:
            assert "### `[%s] %s`" % (group.name, opt.dest) in text


def test_the_slug_of_a_heading_is_githubs():
    assert slug("Installing, upgrading and rolling back") == "installing-upgrading-and-rolling-back"
    assert slug("`[worker] sweep_interval`") == "worker-sweep_interval"
    assert slug("The operator's command") == "the-operators-command"
