"""tools/install.sh: its refusals (one line each) and the Cinder and Nova options, without
installing (tests/functional/test_nova.py installs into a real Nova venv).

The real install, on a controller with systemd, is tests/functional/test_systemd_unit_live.py."""

import os
import re
import subprocess
from pathlib import Path

import pytest

TOP = Path(__file__).resolve().parents[2]
INSTALL = TOP / "tools" / "install.sh"


def run(*args, env=None):
    return subprocess.run([str(INSTALL), *map(str, args)], capture_output=True, text=True,
                          timeout=60, env=env)


def one_error_line(done):
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode != 0
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("install.sh: error: ")
    return lines[0]


def fake_bin(tmp_path, name, script):
    path = tmp_path / "bin" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(0o755)
    return path


def test_unknown_argument_is_one_line():
    assert "--bogus" in one_error_line(run("--bogus"))


def test_relative_prefix_is_refused():
    assert "absolute" in one_error_line(run("--prefix", "opt/cacheraw"))


def test_missing_debian_packages_are_named_in_one_line(tmp_path):
    # dpkg-query that knows every package but two.
    fake_bin(tmp_path, "dpkg-query", 'case "$3" in python3-rbd|bubblewrap) exit 1;; esac\n'
             'echo "install ok installed"\n')
    env = dict(os.environ, PATH="%s:%s" % (tmp_path / "bin", os.environ["PATH"]))
    line = one_error_line(run("--prefix", tmp_path / "prefix", env=env))
    assert "missing Debian packages: python3-rbd bubblewrap" in line
    assert not (tmp_path / "prefix").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="install.sh runs as root")
def test_cinder_option_installs_cacheraw_alone_into_the_given_venv(tmp_path):
    venv = tmp_path / "cinder-venv"
    log = tmp_path / "calls.log"
    fake_bin(venv, "pip", 'echo "pip $*" >> %s\n' % log)
    fake_bin(venv, "python", 'echo "python $*" >> %s\n' % log)
    wheel = tmp_path / "cacheraw-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"")
    done = run("--cinder-venv", venv, "--wheel", wheel, "--find-links", tmp_path / "wheels")
    assert done.returncode == 0, done.stderr
    # No dependency, no index: nothing of Cinder's environment is upgraded or added.
    assert log.read_text().splitlines() == [
        "pip install -q --no-index --no-deps --force-reinstall %s" % wheel,
        "python -c import cacheraw.cinder.driver"]


@pytest.mark.skipif(os.geteuid() != 0, reason="install.sh runs as root")
def test_cinder_option_fails_when_the_driver_does_not_load(tmp_path):
    venv = tmp_path / "cinder-venv"
    fake_bin(venv, "pip", "exit 0\n")
    fake_bin(venv, "python", "exit 1\n")
    wheel = tmp_path / "cacheraw-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"")
    assert "the driver does not load" in one_error_line(
        run("--cinder-venv", venv, "--wheel", wheel))


def test_cinder_option_needs_a_venv(tmp_path):
    line = one_error_line(run("--cinder-venv", tmp_path, "--wheel", INSTALL))
    assert str(tmp_path) in line


def test_install_doc_uses_only_options_the_script_has():
    doc = (TOP / "docs/install.md").read_text()
    sections = re.findall(
        r"^## (?:Controllers|Cinder hosts|Nova|Upgrade|Rollback)\b.*?\n(.*?)(?=^## |\Z)", doc,
        re.M | re.S)
    assert len(sections) == 5
    used = set(re.findall(r"install\.sh[^\n`]*", "".join(sections)))
    options = {opt for line in used for opt in re.findall(r"--[a-z-]+", line)}
    assert options
    assert options <= set(re.findall(r"--[a-z-]+", run("--help").stdout))


def fake_nova_venv(tmp_path, cacheraw_there=False):
    """A venv whose pip logs its calls and knows cacheraw (or not); python imports anything."""
    venv = tmp_path / "nova-venv"
    log = tmp_path / "pip.log"
    fake_bin(venv, "pip", 'echo "$*" >> %s\ncase "$*" in "show -q cacheraw") exit %d;; '
             '"show -q cacheraw-nova") exit 0;; esac\n' % (log, 0 if cacheraw_there else 1))
    fake_bin(venv, "python", "exit 0\n")
    wheels = tmp_path / "dist"
    wheels.mkdir()
    for name in ("cacheraw-0.1.0-py3-none-any.whl", "cacheraw_nova-0.1.0-py3-none-any.whl"):
        (wheels / name).write_bytes(b"")
    return venv, log, wheels / "cacheraw-0.1.0-py3-none-any.whl"


@pytest.mark.skipif(os.geteuid() != 0, reason="install.sh runs as root")
def test_nova_option_installs_both_wheels_without_dependencies_or_index(tmp_path):
    venv, log, wheel = fake_nova_venv(tmp_path)
    done = run("--nova-venv", venv, "--wheel", wheel)
    assert done.returncode == 0, done.stderr
    shim = wheel.parent / "cacheraw_nova-0.1.0-py3-none-any.whl"
    assert log.read_text().splitlines() == [
        "show -q cacheraw",
        "install -q --no-index --no-deps --force-reinstall %s %s" % (wheel, shim)]
    assert "compute_driver = cacheraw.LibvirtDriver" in done.stdout


@pytest.mark.skipif(os.geteuid() != 0, reason="install.sh runs as root")
@pytest.mark.parametrize("cacheraw_there", [False, True])
def test_nova_uninstall_removes_only_what_the_install_added(tmp_path, cacheraw_there):
    venv, log, wheel = fake_nova_venv(tmp_path, cacheraw_there)
    assert run("--nova-venv", venv, "--wheel", wheel).returncode == 0
    log.write_text("")
    done = run("--uninstall", "--nova-venv", venv)
    assert done.returncode == 0, done.stderr
    removed = [line for line in log.read_text().splitlines() if line.startswith("uninstall")]
    assert removed == ["uninstall -q -y cacheraw-nova"] + (
        [] if cacheraw_there else ["uninstall -q -y cacheraw"])
    assert not (venv / ".cacheraw-nova").exists()


def test_nova_option_needs_a_venv_and_the_shim_wheel(tmp_path):
    assert str(tmp_path) in one_error_line(run("--nova-venv", tmp_path, "--wheel", INSTALL))
    venv, _, wheel = fake_nova_venv(tmp_path)
    (wheel.parent / "cacheraw_nova-0.1.0-py3-none-any.whl").unlink()
    if os.geteuid() == 0:
        assert "cacheraw-nova wheel" in one_error_line(run("--nova-venv", venv, "--wheel", wheel))
