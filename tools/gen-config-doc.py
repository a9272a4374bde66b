#!/usr/bin/env python3
"""Writes the option reference of docs/configuration.md from the options themselves.

Everything between the two marker lines of docs/configuration.md is generated from
``cacheraw.conf.opts.list_opts()`` (the options of oslo-config-generator's ``cacheraw``
namespace): one entry per option with its type, default, limits, help and the options related
to it. The text around the markers is written by hand. ``--check`` changes nothing and exits 1
when the committed file is not what this would write (tests/unit/test_docs.py runs it).

    tools/gen-config-doc.py [--check] [--path docs/configuration.md]
"""

import argparse
import re
import sys
from pathlib import Path

TOP = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TOP))

from cacheraw.conf import opts  # noqa: E402 - after the path above

BEGIN = "<!-- BEGIN GENERATED OPTIONS: tools/gen-config-doc.py writes what follows -->"
END = "<!-- END GENERATED OPTIONS -->"

# Relations the help texts do not spell out (each is named from both sides).
RELATED = [
    (("converter", "conversion_dir"), ("worker", "max_concurrent_conversions")),
    (("ceph", "lock_duration"), ("worker", "sweep_interval")),
    (("ceph", "op_timeout"), ("ceph", "lock_duration")),
    (("ceph", "op_timeout"), ("converter", "qemu_img_convert_timeout")),
    (("converter", "qemu_img_info_timeout"), ("converter", "qemu_img_info_cpu_seconds")),
    (("converter", "qemu_img_convert_timeout"), ("converter", "qemu_img_convert_cpu_seconds")),
    (("converter", "max_virtual_size_gib"), ("converter", "max_map_extents")),
    (("worker", "retry_attempts"), ("worker", "retry_initial_delay")),
    (("worker", "retry_initial_delay"), ("worker", "retry_max_delay")),
    (("worker", "error_retries"), ("worker", "error_retry_delay")),
    (("worker", "error_retries"), ("worker", "sweep_interval")),
    (("metrics", "enabled"), ("metrics", "host")),
    (("metrics", "enabled"), ("metrics", "port")),
    (("notifications", "pool"), ("notifications", "exchange")),
    (("notifications", "exchange"), ("notifications", "topic")),
]


def groups():
    """[(group name, group help, [opt, ...])] in the generator's order."""
    return [(group.name, group.help or "", list(group_opts))
            for group, group_opts in opts.list_opts()]


def anchor(group: str, name: str) -> str:
    """The anchor GitHub gives the heading of one option."""
    return "%s-%s" % (group, name)


def link(group: str, name: str) -> str:
    return "[`[%s] %s`](#%s)" % (group, name, anchor(group, name))


def related(all_groups) -> dict:
    """{(group, name): sorted related (group, name)}: options a help text names (by a name with
    an underscore, as a whole word), in both directions, and the pairs of RELATED."""
    names = {(g, o.dest) for g, _, group_opts in all_groups for o in group_opts}
    found = {key: set() for key in names}
    for group, _, group_opts in all_groups:
        for opt in group_opts:
            for other_group, other in names:
                if (other_group, other) == (group, opt.dest) or "_" not in other:
                    continue
                if re.search(r"(?<![\w.])%s(?!\w)" % re.escape(other), opt.help or ""):
                    if other_group == group or "[%s]" % other_group in (opt.help or ""):
                        found[(group, opt.dest)].add((other_group, other))
                        found[(other_group, other)].add((group, opt.dest))
    for one, two in RELATED:
        found[one].add(two)
        found[two].add(one)
    return {key: sorted(value) for key, value in found.items()}


def default_text(opt) -> str:
    value = opt.sample_default if opt.sample_default is not None else opt.default
    if value is None or value == []:
        return "(none)"
    if isinstance(value, bool):
        return "`%s`" % str(value).lower()
    if isinstance(value, (list, tuple)):
        return "`%s`" % ",".join(str(v) for v in value)
    return "`%s`" % value


def type_text(opt) -> str:
    kind = type(opt.type).__name__.lower() if hasattr(opt, "type") else "string"
    kind = {"string": "string", "hostaddress": "host address", "list": "list",
            "boolean": "boolean", "integer": "integer", "float": "float",
            "port": "port"}.get(kind, kind)
    limits = []
    for what in ("min", "max"):
        value = getattr(getattr(opt, "type", None), what, None)
        if value is not None:
            limits.append("%s %s" % (what, value))
    choices = getattr(getattr(opt, "type", None), "choices", None)
    if choices:
        limits.append("one of %s" % ", ".join("`%s`" % c for c in choices))
    return kind + (" (%s)" % ", ".join(limits) if limits else "")


def one_option(group: str, opt, rel) -> list:
    lines = ["### `[%s] %s`" % (group, opt.dest), ""]
    facts = "%s; default %s" % (type_text(opt), default_text(opt))
    if opt.secret:
        facts += "; secret (masked wherever oslo.config logs option values)"
    lines += ["*%s*" % facts, ""]
    help_text = " ".join((opt.help or "(no help text)").split())
    lines += [help_text, ""]
    if rel:
        lines += ["Related: %s." % ", ".join(link(g, n) for g, n in rel), ""]
    return lines


def generated() -> str:
    all_groups = groups()
    rel = related(all_groups)
    lines = [BEGIN, ""]
    for group, help_text, group_opts in all_groups:
        lines += ["## [%s]" % group, ""]
        if help_text:
            lines += [" ".join(help_text.split()), ""]
        for opt in group_opts:
            lines += one_option(group, opt, rel[(group, opt.dest)])
    lines.append(END)
    return "\n".join(lines) + "\n"


def rewritten(text: str) -> str:
    head, sep, rest = text.partition(BEGIN)
    _, sep2, tail = rest.partition(END + "\n")
    if not sep or not sep2:
        raise SystemExit("gen-config-doc: the markers are missing from the file")
    return head + generated() + tail


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="change nothing; exit 1 when the file is stale")
    parser.add_argument("--path", type=Path, default=TOP / "docs/configuration.md")
    args = parser.parse_args(argv)
    text = args.path.read_text()
    fresh = rewritten(text)
    if args.check:
        if fresh != text:
            print("%s is stale: run 'make genconfig' and commit it" % args.path, file=sys.stderr)
            return 1
        return 0
    args.path.write_text(fresh)
    return 0


if __name__ == "__main__":
    sys.exit(main())
