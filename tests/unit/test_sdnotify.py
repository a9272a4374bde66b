"""systemd notifications: datagrams on NOTIFY_SOCKET, nothing without it."""

import os
import socket

import pytest

from cacheraw import sdnotify


@pytest.fixture
def notify_socket(tmp_path, monkeypatch):
    path = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(5)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    yield sock
    sock.close()


def received(sock):
    return sock.recv(4096).decode().split("\n")


def test_without_notify_socket_nothing_is_sent(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sdnotify.ready() is False
    assert sdnotify.watchdog() is False
    assert sdnotify.stopping() is False


def test_ready_watchdog_and_stopping_reach_the_socket(notify_socket):
    assert sdnotify.ready("listening")
    assert received(notify_socket) == ["READY=1", "STATUS=listening"]
    assert sdnotify.watchdog()
    assert received(notify_socket) == ["WATCHDOG=1"]
    assert sdnotify.stopping()
    assert received(notify_socket) == ["STOPPING=1"]


def test_abstract_socket(monkeypatch):
    name = "cacheraw-test-%d" % os.getpid()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(5)
    monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
    try:
        assert sdnotify.ready()
        assert received(sock) == ["READY=1"]
    finally:
        sock.close()


def test_a_socket_that_is_gone_is_logged_not_raised(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "missing"))
    assert sdnotify.ready() is False
    assert "Could not notify systemd" in caplog.text


@pytest.mark.parametrize("usec, pid, interval", [
    (None, None, None),
    ("20000000", None, 10.0),
    ("20000000", "self", 10.0),
    ("20000000", "1", None),     # pings expected from another process
    ("0", None, None),
    ("junk", None, None),
])
def test_watchdog_interval_is_half_of_watchdog_usec(monkeypatch, usec, pid, interval):
    for key, value in (("WATCHDOG_USEC", usec),
                       ("WATCHDOG_PID", str(os.getpid()) if pid == "self" else pid)):
        if value is None:
            monkeypatch.delenv(key, raising=False)
        else:
            monkeypatch.setenv(key, value)
    assert sdnotify.watchdog_interval() == interval


def test_watchdog_pings_only_while_healthy(notify_socket, monkeypatch):
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    healthy = [True]
    dog = sdnotify.Watchdog(lambda: healthy[0])
    assert dog.tick(5) == 1.0
    assert received(notify_socket) == ["WATCHDOG=1"]
    notify_socket.settimeout(0.2)
    dog.tick(5)  # not due yet
    with pytest.raises(socket.timeout):
        notify_socket.recv(4096)
    healthy[0] = False
    dog._last -= 2
    dog.tick(5)  # due, but unhealthy: systemd's watchdog restarts the service
    with pytest.raises(socket.timeout):
        notify_socket.recv(4096)


def test_watchdog_without_watchdog_usec_only_waits(monkeypatch):
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    assert sdnotify.Watchdog(lambda: True).tick(1) == 1
