"""cacheraw-worker refuses to start, with one clear line, when its configuration cannot work."""

import subprocess
import sys
from pathlib import Path

VENV_BIN = Path(sys.executable).parent


def run_worker(*args):
    return subprocess.run([str(VENV_BIN / "cacheraw-worker"), *map(str, args)],
                          capture_output=True, text=True, timeout=60)


def one_error_line(done):
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode != 0
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("cacheraw-worker: error: ")
    return lines[0]


def test_missing_config_file(tmp_path):
    line = one_error_line(run_worker("--config-file", tmp_path / "nope.conf"))
    assert "nope.conf" in line


def test_config_file_that_is_a_directory(tmp_path):
    line = one_error_line(run_worker("--config-file", tmp_path))
    assert str(tmp_path) in line


def test_unreadable_ceph_keyring(stack, tmp_path):
    override = tmp_path / "bad-keyring.conf"
    override.write_text("[ceph]\nkeyring = %s\n" % (tmp_path / "missing.keyring"))
    line = one_error_line(run_worker("--config-file", stack["cacheraw_conf"],
                                     "--config-file", override))
    assert "missing.keyring" in line


def test_wrong_ceph_key(stack, tmp_path):
    keyring = tmp_path / "wrong.keyring"
    keyring.write_text("[client.cacheraw]\n\tkey = AQBx1nRlAAAAABAAd2Ztj2DvP9lXWeXf2mJq2g==\n")
    override = tmp_path / "wrong-key.conf"
    override.write_text("[ceph]\nkeyring = %s\nconnect_timeout = 5\n" % keyring)
    line = one_error_line(run_worker("--config-file", stack["cacheraw_conf"],
                                     "--config-file", override))
    assert "cannot connect to Ceph as client.cacheraw" in line
