"""The systemd unit is valid for systemd itself, hardened, and its user can be created."""

import configparser
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import in_ci

TOP = Path(__file__).resolve().parents[2]
UNIT = TOP / "systemd/cacheraw-worker.service"
SYSUSERS = TOP / "systemd/cacheraw.sysusers.conf"
WORKER = Path(sys.executable).parent / "cacheraw-worker"
# The score `systemd-analyze security --offline=true` gave when the unit was written
# (docs/security.md): 1.5, and 0.5 more for the namespaces and mounts of the sandbox qemu-img
# runs in.
MAX_EXPOSURE = 2.0


def systemd_tool(name):
    path = shutil.which(name)
    if path is None:
        if in_ci():
            pytest.fail("%s is required in CI" % name)
        pytest.skip("%s is not installed" % name)
    return path


def service_section():
    parser = configparser.ConfigParser(strict=False, interpolation=None,
                                       empty_lines_in_values=False)
    parser.optionxform = str
    parser.read_string(re.sub(r"^SystemCallFilter=.*\n", "", UNIT.read_text(), flags=re.M))
    return parser["Service"]


def unit_with_local_worker(tmp_path):
    """The unit with ExecStart pointed at this environment's worker, which verify requires."""
    copy = tmp_path / UNIT.name
    copy.write_text(UNIT.read_text().replace("ExecStart=/usr/bin/cacheraw-worker",
                                             "ExecStart=%s" % WORKER))
    return copy


def test_systemd_analyze_verify_finds_nothing(tmp_path):
    done = subprocess.run([systemd_tool("systemd-analyze"), "verify",
                           str(unit_with_local_worker(tmp_path))],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "" and done.stderr.strip() == "", done.stdout + done.stderr


def test_verify_would_catch_a_mistake(tmp_path):
    unit = unit_with_local_worker(tmp_path)
    unit.write_text(unit.read_text().replace("Restart=on-failure", "Restart=sometimes"))
    done = subprocess.run([systemd_tool("systemd-analyze"), "verify", str(unit)],
                          capture_output=True, text=True, timeout=60)
    assert "sometimes" in done.stderr


def test_exposure_score_stays_low():
    done = subprocess.run([systemd_tool("systemd-analyze"), "security", "--offline=true",
                           str(UNIT)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    score = float(re.search(r"Overall exposure level for \S+: ([0-9.]+)", done.stdout).group(1))
    assert score <= MAX_EXPOSURE, done.stdout


def test_notify_restart_and_the_only_writable_place():
    service = service_section()
    assert service["Type"] == "notify"
    assert service["NotifyAccess"] == "main"
    assert int(service["WatchdogSec"]) > 0
    assert service["Restart"] == "on-failure"
    assert service["RestartPreventExitStatus"] == "2"  # cmd.fail's code for a bad config
    assert service["User"] == "cacheraw"
    assert service["CapabilityBoundingSet"] == ""
    assert service["ProtectSystem"] == "strict"
    assert service["ReadWritePaths"] == "/var/lib/cacheraw/conversions"
    assert service["StateDirectory"] == "cacheraw/conversions"
    assert set(service["RestrictAddressFamilies"].split()) == {"AF_UNIX", "AF_INET", "AF_INET6",
                                                                "AF_NETLINK"}
    for flag in ("NoNewPrivileges", "ProtectHome", "PrivateTmp"):
        assert service[flag] == "true"


def test_sample_config_conversion_dir_is_the_writable_one():
    sample = (TOP / "etc/cacheraw/cacheraw.conf.sample").read_text()
    assert "#conversion_dir = /var/lib/cacheraw/conversions\n" in sample


def test_sysusers_creates_the_service_user(tmp_path):
    (tmp_path / "etc").mkdir()
    done = subprocess.run([systemd_tool("systemd-sysusers"), "--root", str(tmp_path),
                           str(SYSUSERS)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    user = (tmp_path / "etc/passwd").read_text().split(":")
    assert user[0] == "cacheraw" and user[5] == "/var/lib/cacheraw"
    assert (tmp_path / "etc/group").read_text().startswith("cacheraw:")
