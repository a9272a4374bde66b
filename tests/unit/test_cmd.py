"""The entry points (cacheraw/cmd/): a configuration they cannot use is one line on stderr and
exit status 2 (systemd's RestartPreventExitStatus), before anything is reached."""

import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


def files(tmp_path):
    unparsable = tmp_path / "unparsable.conf"
    unparsable.write_text("[worker\nsweep_interval = 2\n")
    bad_value = tmp_path / "bad-value.conf"
    bad_value.write_text("[worker]\nmax_concurrent_conversions = 0\n")
    return {"missing": (tmp_path / "missing.conf", "cannot read config file"),
            "directory": (tmp_path, "is a directory"),
            "unparsable": (unparsable, "cannot parse config file"),
            "bad value": (bad_value, "max_concurrent_conversions")}


@pytest.mark.ceph_bindings  # the commands themselves run, and import rados
@pytest.mark.parametrize("program, case", [
    ("cacheraw-worker", "missing"), ("cacheraw-worker", "directory"),
    ("cacheraw-worker", "unparsable"), ("cacheraw-worker", "bad value"),
    ("cacheraw-manage", "bad value")])
def test_a_config_it_cannot_use_is_one_line_and_exit_2(tmp_path, program, case):
    path, message = files(tmp_path)[case]
    args = ["check"] if program == "cacheraw-manage" else []
    done = subprocess.run([str(BIN / program), "--config-file", str(path), *args],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("%s: error: " % program) and message in lines[0], lines
