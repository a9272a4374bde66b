"""cacheraw.qemu.nbd: real qemu-img reads an image through it and writes one; what a client may
not do."""

import errno
import os
import socket
import struct
import subprocess
import threading
import time

import pytest

from cacheraw.qemu import nbd
from cacheraw.qemu import nbd_requests as requests


class FileBackend:
    """A local file as an export's backend, answered from other threads as librbd answers."""

    def __init__(self, path, writable=False, fail_at=None, short=False, raises=False):
        self.path = str(path)
        self.size = os.path.getsize(path)
        self.writable = writable
        self.fail_at = fail_at
        self.short = short
        self.raises = raises
        self.largest = 0
        self.flushes = 0
        self._lock = threading.Lock()

    def _later(self, work, done):
        threading.Thread(target=lambda: done(*work())).start()

    def read(self, offset, length, done):
        if self.raises:
            raise RuntimeError("a bug in the backend")
        with self._lock:
            self.largest = max(self.largest, length)
        if self.fail_at is not None and offset <= self.fail_at < offset + length:
            self._later(lambda: (None, errno.EIO), done)
            return
        with open(self.path, "rb") as f:
            f.seek(offset)
            data = f.read(length)
        self._later(lambda: (data[:-1] if self.short else data, 0), done)

    def write(self, offset, data, done):
        with self._lock:
            self.largest = max(self.largest, len(data))
        with open(self.path, "r+b") as f:
            f.seek(offset)
            f.write(data)
        self._later(lambda: (None, 0), done)

    def write_zeroes(self, offset, length, done):
        self.write(offset, b"\0" * length, done)

    def flush(self, done):
        self.flushes += 1
        self._later(lambda: (None, 0), done)


def qemu_img(*args):
    return subprocess.run(["qemu-img", *args], capture_output=True, text=True, timeout=120)


@pytest.fixture
def qcow2(tmp_path):
    raw = tmp_path / "data.raw"
    with open(raw, "wb") as f:
        f.truncate(64 * 1024 * 1024)
        for at in (0, 5 * 1024 * 1024, 40 * 1024 * 1024):
            f.seek(at)
            f.write(os.urandom(3 * 1024 * 1024 + 512))
    path = tmp_path / "image.qcow2"
    assert qemu_img("convert", "-f", "raw", "-O", "qcow2", str(raw), str(path)).returncode == 0
    return raw, path


def opts(driver, export):
    return "driver=%s,file.driver=nbd,file.server.type=unix,file.server.path=%s" % (
        driver, export.path)


def test_qemu_img_converts_an_image_it_reads_over_one_export_into_another(tmp_path, qcow2):
    raw, path = qcow2
    source, out = FileBackend(path), tmp_path / "out.raw"
    with open(out, "wb") as f:
        f.truncate(raw.stat().st_size)
    target = FileBackend(out, writable=True)
    with nbd.Export(str(tmp_path / "src"), source) as export, \
            nbd.Export(str(tmp_path / "dst"), target) as cache:
        info = qemu_img("info", "--image-opts", opts("qcow2", export))
        assert info.returncode == 0, info.stderr
        done = qemu_img("convert", "-n", "--target-is-zero", "-m", "8", "-W",
                        "--image-opts", opts("qcow2", export),
                        "--target-image-opts", opts("raw", cache))
        assert done.returncode == 0, done.stderr
    assert out.read_bytes() == raw.read_bytes()
    assert source.largest <= requests.MAX_BLOCK and target.largest <= requests.MAX_BLOCK
    assert target.flushes >= 1
    assert not export.failed.is_set() and not cache.failed.is_set()
    assert not os.path.exists(tmp_path / "src") and not os.path.exists(tmp_path / "dst")


def test_a_failed_read_is_an_io_error_for_qemu_img(tmp_path, qcow2):
    _, path = qcow2
    reader = FileBackend(path, fail_at=path.stat().st_size // 2)
    with nbd.Export(str(tmp_path / "sock"), reader) as export:
        done = qemu_img("convert", "--image-opts", opts("qcow2", export), "-O", "raw",
                        str(tmp_path / "out.raw"))
        assert done.returncode != 0
        assert export.failed.is_set()


def handshake(path):
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.settimeout(10)
    conn.connect(path)
    assert requests.recv_exact(conn, 18)[:8] == nbd.NBDMAGIC
    conn.sendall(struct.pack(">I", nbd.CLIENT_FLAG_NO_ZEROES))
    conn.sendall(struct.pack(">QII", nbd.IHAVEOPT, nbd.OPT_EXPORT_NAME, 0))
    size, flags = struct.unpack(">QH", requests.recv_exact(conn, 10))
    return conn, size, flags


def request(conn, command, offset, length, handle=7, payload=b""):
    conn.sendall(struct.pack(">IHHQQI", requests.REQUEST_MAGIC, 0, command, handle, offset,
                             length) + payload)


def reply(conn):
    magic, error, handle = struct.unpack(">IIQ", requests.recv_exact(conn, 16))
    assert magic == requests.SIMPLE_REPLY_MAGIC
    return error, handle


@pytest.fixture
def data(tmp_path):
    path = tmp_path / "data"
    path.write_bytes(b"x" * 8192)
    return path


def test_reads_past_the_end_too_large_or_short_are_errors_and_writes_are_refused(tmp_path, data):
    with nbd.Export(str(tmp_path / "sock"), FileBackend(data)) as export:
        assert oct(os.stat(export.path).st_mode & 0o777) == "0o600"
        conn, size, flags = handshake(export.path)
        assert size == 8192 and flags & nbd.READ_ONLY and not flags & nbd.SEND_FLUSH
        request(conn, requests.CMD_READ, 4096, 8192)
        assert reply(conn) == (errno.EINVAL, 7)
        request(conn, requests.CMD_READ, 0, requests.MAX_BLOCK + 1, handle=8)
        assert reply(conn) == (errno.EINVAL, 8)
        request(conn, requests.CMD_WRITE, 0, 16, handle=9, payload=b"y" * 16)
        assert reply(conn) == (errno.EPERM, 9)  # its payload read and dropped: still in sync
        request(conn, requests.CMD_WRITE_ZEROES, 0, 16, handle=10)
        assert reply(conn) == (errno.EPERM, 10)
        request(conn, requests.CMD_READ, 0, 16, handle=11)
        assert reply(conn) == (0, 11)
        assert requests.recv_exact(conn, 16) == b"x" * 16
        request(conn, requests.CMD_WRITE, 0, requests.MAX_BLOCK + 1)
        assert conn.recv(1) == b""  # a payload too large to read ends the connection
        conn.close()
    assert data.read_bytes() == b"x" * 8192


def test_a_short_read_is_an_error_reply_never_a_short_ok(tmp_path, data):
    with nbd.Export(str(tmp_path / "sock"), FileBackend(data, short=True)) as export:
        conn, _, _ = handshake(export.path)
        request(conn, requests.CMD_READ, 0, 16)
        request(conn, requests.CMD_FLUSH, 0, 0, handle=8)  # not offered read-only: refused
        assert sorted([reply(conn), reply(conn)]) == [(errno.EIO, 7), (errno.EINVAL, 8)]
        assert export.failed.is_set()


def test_a_raising_backend_is_an_error_reply_and_frees_its_slot(tmp_path, data):
    export = nbd.Export(str(tmp_path / "sock"), FileBackend(data, raises=True)).__enter__()
    conn, _, _ = handshake(export.path)
    for handle in range(requests.DEPTH * 2):
        request(conn, requests.CMD_READ, 0, 16, handle=handle)
        assert reply(conn) == (errno.EIO, handle)
    began = time.monotonic()
    export.close()
    assert time.monotonic() - began < 5 and export.threads() == 0


def test_writes_within_the_export_only(tmp_path, data):
    backend = FileBackend(data, writable=True)
    with nbd.Export(str(tmp_path / "sock"), backend) as export:
        conn, size, flags = handshake(export.path)
        assert not flags & nbd.READ_ONLY and flags & nbd.SEND_WRITE_ZEROES
        request(conn, requests.CMD_WRITE, 8190, 4, payload=b"zzzz")
        assert reply(conn) == (errno.ENOSPC, 7)
        request(conn, requests.CMD_WRITE_ZEROES, 0, 8193, handle=8)
        assert reply(conn) == (errno.ENOSPC, 8)
        request(conn, requests.CMD_WRITE, 10, 4, handle=9, payload=b"zzzz")
        assert reply(conn) == (0, 9)
        request(conn, requests.CMD_WRITE_ZEROES, 100, 2, handle=10)
        assert reply(conn) == (0, 10)
        request(conn, 4, 0, 16, handle=11)  # TRIM: not offered
        assert reply(conn) == (errno.EINVAL, 11)
        request(conn, requests.CMD_FLUSH, 0, 0, handle=12)
        assert reply(conn) == (0, 12)
    assert data.read_bytes() == b"x" * 10 + b"zzzz" + b"x" * 86 + b"\0\0" + b"x" * 8090


def test_a_client_that_reads_no_replies_stops_being_read(tmp_path, data):
    with nbd.Export(str(tmp_path / "sock"), FileBackend(data)) as export:
        conn, _, _ = handshake(export.path)
        conn.settimeout(None)
        flushes = struct.pack(">IHHQQI", requests.REQUEST_MAGIC, 0, requests.CMD_FLUSH, 1, 0,
                              0) * 500000
        sender = threading.Thread(target=lambda: _send_until_closed(conn, flushes), daemon=True)
        sender.start()
        sender.join(timeout=5)
        assert sender.is_alive()  # blocked: the server holds at most DEPTH replies
    sender.join(timeout=10)
    assert not sender.is_alive()


def _send_until_closed(conn, data):
    try:
        conn.sendall(data)
    except OSError:
        pass


def test_connections_are_bounded_and_their_threads_pruned(tmp_path, data):
    with nbd.Export(str(tmp_path / "sock"), FileBackend(data)) as export:
        conns = [handshake(export.path)[0] for _ in range(nbd.MAX_CONNECTIONS)]
        extra = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        extra.settimeout(10)
        extra.connect(export.path)
        assert extra.recv(18) == b""  # refused: closed before the handshake
        assert export.threads() <= 1 + 2 * nbd.MAX_CONNECTIONS
        for conn in conns:
            request(conn, requests.CMD_DISC, 0, 0)
            conn.close()
        for _ in range(50):
            wait_for_threads(export, 1)
            handshake(export.path)[0].close()
        wait_for_threads(export, 1)
        assert len(export._threads) <= nbd.MAX_CONNECTIONS + 2


def wait_for_threads(export, count):
    deadline = time.monotonic() + 10
    while export.threads() > count:
        assert time.monotonic() < deadline, export.threads()
        time.sleep(0.01)


def test_a_client_of_another_uid_is_refused(tmp_path, data, monkeypatch):
    with nbd.Export(str(tmp_path / "sock"), FileBackend(data)) as export:
        monkeypatch.setattr(nbd.os, "getuid", lambda: os.geteuid() + 1)
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.settimeout(10)
        conn.connect(export.path)
        assert conn.recv(18) == b""


def test_closing_the_export_ends_its_connections(tmp_path, data):
    export = nbd.Export(str(tmp_path / "sock"), FileBackend(data)).__enter__()
    conn, _, _ = handshake(export.path)
    export.close()
    assert conn.recv(1) == b""
    assert not os.path.exists(export.path)
