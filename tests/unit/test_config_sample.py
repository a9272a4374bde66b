"""The committed sample configuration is what oslo-config-generator makes from the code, and no
secret option can reach a log."""

import re
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest

TOP = Path(__file__).resolve().parents[2]
GENERATOR_CONF = TOP / "etc/oslo-config-generator/cacheraw.conf"
SAMPLE = TOP / "etc/cacheraw/cacheraw.conf.sample"
GENERATOR = Path(sys.executable).parent / "oslo-config-generator"

# Names of options that hold credentials (paths to key files are not secrets themselves).
SECRET_NAME = re.compile(r"password|secret|token|passphrase|transport_url|credential|(^|_)key$")


def namespaces():
    lines = GENERATOR_CONF.read_text().splitlines()
    return [line.split("=", 1)[1].strip() for line in lines if line.startswith("namespace")]


def options(namespace):
    found = entry_points()
    # Python 3.9's entry_points() is a dict of groups, and lists a distribution found twice on
    # the path (the tree's egg-info) twice; select() came with 3.10.
    group = found.select(group="oslo.config.opts") if hasattr(found, "select") else \
        found.get("oslo.config.opts", ())
    (entry,) = {ep for ep in group if ep.name == namespace}
    for group, opts in entry.load()():
        for opt in opts:
            yield getattr(group, "name", group) or "DEFAULT", opt


@pytest.mark.main_env
def test_committed_sample_is_what_the_generator_makes(tmp_path):
    fresh = tmp_path / "cacheraw.conf.sample"
    subprocess.run([str(GENERATOR), "--config-file", str(GENERATOR_CONF),
                    "--output-file", str(fresh)],
                   check=True, cwd=TOP, capture_output=True, timeout=120)
    assert fresh.read_text() == SAMPLE.read_text(), (
        "etc/cacheraw/cacheraw.conf.sample is stale: run 'make genconfig' and commit it")


def test_sample_covers_every_group_of_cacheraw():
    from cacheraw.conf import opts
    text = SAMPLE.read_text()
    for group, _ in opts.list_opts():
        assert "\n[%s]\n" % group.name in text


def test_every_credential_option_of_cacheraw_is_secret():
    found = [(group, opt.dest) for group, opt in options("cacheraw")
             if SECRET_NAME.search(opt.dest)]
    assert ("image_api", "password") in found
    for group, opt in options("cacheraw"):
        if SECRET_NAME.search(opt.dest):
            assert opt.secret, "[%s] %s must be secret=True" % (group, opt.dest)


def test_transport_url_is_secret():
    urls = [opt for _, opt in options("oslo.messaging") if opt.dest == "transport_url"]
    assert urls and all(opt.secret for opt in urls)


def test_generator_covers_logging_and_messaging():
    assert {"cacheraw", "oslo.log", "oslo.messaging"} <= set(namespaces())
