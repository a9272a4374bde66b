"""cacheraw.nbd: real qemu-img reads an image through it; what a client may not do."""

import errno
import os
import socket
import struct
import subprocess
import threading

import pytest

from cacheraw import nbd


class FileReader:
    """Reads of a local file, answered from another thread as librbd answers aio_read."""

    def __init__(self, path, fail_at=None):
        self.path = path
        self.fail_at = fail_at
        self.largest = 0
        self.in_flight = 0
        self.most_in_flight = 0
        self._lock = threading.Lock()

    def __call__(self, offset, length, done):
        with self._lock:
            self.largest = max(self.largest, length)
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        threading.Thread(target=self._answer, args=(offset, length, done)).start()

    def _answer(self, offset, length, done):
        with self._lock:
            self.in_flight -= 1
        if self.fail_at is not None and offset <= self.fail_at < offset + length:
            done(None, errno.EIO)
            return
        with open(self.path, "rb") as f:
            f.seek(offset)
            done(f.read(length), 0)


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


def opts(export):
    return ",".join("file.%s=%s" % item for item in export.qemu_file().items())


def test_qemu_img_converts_an_image_it_reads_over_the_export(tmp_path, qcow2):
    raw, path = qcow2
    reader = FileReader(path)
    out = tmp_path / "out.raw"
    with nbd.Export(str(tmp_path / "sock"), path.stat().st_size, reader) as export:
        info = qemu_img("info", "--image-opts", "driver=qcow2," + opts(export))
        assert info.returncode == 0, info.stderr
        done = qemu_img("convert", "-m", "8", "-W", "--image-opts", "driver=qcow2," + opts(export),
                        "-O", "raw", str(out))
        assert done.returncode == 0, done.stderr
    assert out.read_bytes() == raw.read_bytes()
    assert reader.largest <= nbd.MAX_BLOCK
    assert not export.failed.is_set()
    assert not os.path.exists(tmp_path / "sock")


def test_a_failed_read_is_an_io_error_for_qemu_img(tmp_path, qcow2):
    _, path = qcow2
    reader = FileReader(path, fail_at=path.stat().st_size // 2)
    with nbd.Export(str(tmp_path / "sock"), path.stat().st_size, reader) as export:
        done = qemu_img("convert", "--image-opts", "driver=qcow2," + opts(export), "-O", "raw",
                        str(tmp_path / "out.raw"))
        assert done.returncode != 0
        assert export.failed.is_set()


def handshake(path):
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.settimeout(10)
    conn.connect(path)
    assert nbd._recv_exact(conn, 18)[:8] == nbd.NBDMAGIC
    conn.sendall(struct.pack(">I", nbd.CLIENT_FLAG_NO_ZEROES))
    conn.sendall(struct.pack(">QII", nbd.IHAVEOPT, nbd.OPT_EXPORT_NAME, 0))
    size, flags = struct.unpack(">QH", nbd._recv_exact(conn, 10))
    return conn, size, flags


def request(conn, command, offset, length, handle=7):
    conn.sendall(struct.pack(">IHHQQI", nbd.REQUEST_MAGIC, 0, command, handle, offset, length))


def reply(conn):
    magic, error, handle = struct.unpack(">IIQ", nbd._recv_exact(conn, 16))
    assert magic == nbd.SIMPLE_REPLY_MAGIC
    return error, handle


def test_reads_past_the_end_or_too_large_are_refused_and_writes_end_the_connection(tmp_path):
    data = tmp_path / "data"
    data.write_bytes(b"x" * 8192)
    with nbd.Export(str(tmp_path / "sock"), 8192, FileReader(data)) as export:
        assert oct(os.stat(export.path).st_mode & 0o777) == "0o600"
        conn, size, flags = handshake(export.path)
        assert size == 8192 and flags & 0x2  # read-only
        request(conn, nbd.CMD_READ, 4096, 8192)
        assert reply(conn) == (errno.EINVAL, 7)
        request(conn, nbd.CMD_READ, 0, nbd.MAX_BLOCK + 1, handle=8)
        assert reply(conn) == (errno.EINVAL, 8)
        request(conn, nbd.CMD_READ, 0, 16, handle=9)
        assert reply(conn) == (0, 9)
        assert nbd._recv_exact(conn, 16) == b"x" * 16
        request(conn, 1, 0, 16)  # NBD_CMD_WRITE
        assert conn.recv(1) == b""
        conn.close()


def test_closing_the_export_ends_its_connections(tmp_path):
    data = tmp_path / "data"
    data.write_bytes(b"x" * 4096)
    export = nbd.Export(str(tmp_path / "sock"), 4096, FileReader(data)).__enter__()
    conn, _, _ = handshake(export.path)
    export.close()
    assert conn.recv(1) == b""
    assert not os.path.exists(export.path)
