"""cacheraw-worker under a service manager: it tells systemd READY=1 once it listens, pings the
watchdog from its main loop, and STOPPING=1 on SIGTERM (the NOTIFY_SOCKET protocol)."""

import os
import signal
import socket
import subprocess
import time
import uuid

import pytest

from tests.functional.conftest import VENV_BIN


class NotifySocket:
    """The socket systemd would bind for a Type=notify service."""

    def __init__(self, path):
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.messages = []

    def wait_for(self, field, timeout, at_least=1):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.count(field) >= at_least:
                return
            self.sock.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                self.messages.append(self.sock.recv(4096).decode().split("\n"))
            except socket.timeout:
                break
        raise AssertionError("no %s in %ss; got %s" % (field, timeout, self.messages))

    def count(self, field):
        return sum(field in message for message in self.messages)

    def close(self):
        self.sock.close()


@pytest.fixture
def notify(tmp_path):
    sock = NotifySocket(tmp_path / "notify")
    yield sock
    sock.close()


@pytest.fixture
def worker_under_systemd(stack, tmp_path, notify):
    override = tmp_path / "pool.conf"
    override.write_text("[notifications]\npool = tests-%s\n" % uuid.uuid4().hex[:12])
    env = {**os.environ, "NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "2000000"}
    env.pop("WATCHDOG_PID", None)
    log = open(tmp_path / "worker.log", "wb")
    proc = subprocess.Popen([str(VENV_BIN / "cacheraw-worker"), "--config-file",
                             stack["cacheraw_conf"], "--config-file", str(override)],
                            stdout=log, stderr=subprocess.STDOUT, env=env)
    yield proc
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    log.close()


def test_ready_watchdog_and_stopping(worker_under_systemd, notify, tmp_path):
    notify.wait_for("READY=1", timeout=60)
    assert "started" in (tmp_path / "worker.log").read_text()  # after the listener started
    assert notify.messages[0][0] == "READY=1"
    # WATCHDOG_USEC of 2 s: a ping every second from the main loop.
    notify.wait_for("WATCHDOG=1", timeout=30, at_least=3)
    worker_under_systemd.send_signal(signal.SIGTERM)
    notify.wait_for("STOPPING=1", timeout=60)
    assert worker_under_systemd.wait(90) == 0
    assert notify.count("READY=1") == 1
    assert notify.count("STOPPING=1") == 1


def test_without_notify_socket_the_worker_runs_as_before(start_worker):
    worker = start_worker()
    assert worker.stop() == 0
    assert "Could not notify systemd" not in worker.log()
