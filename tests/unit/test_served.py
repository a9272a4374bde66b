"""cacheraw.ceph.served: reads of a snapshot served to qemu-img, which notice the snapshot or
its image removed under them; writes of the cache served to qemu-img."""

import contextlib
import errno
import logging
import socket
import struct
import threading

import pytest
import rados
import rbd

from cacheraw import exception
from cacheraw.ceph import served
from cacheraw.qemu import nbd
from cacheraw.qemu import nbd_requests
from tests.unit.conftest import Completion

ID = "0dc0185d-550c-461a-bdc5-25b9e20586d5"
SNAP_ID = 4


class FakeImage:
    """An image whose aio calls answer at once with ``result``."""

    def __init__(self, result=0):
        self.result = result
        self.reads = []
        self.writes = []

    def id(self):
        return "abc123"

    def get_name(self):
        return ID

    def size(self):
        return 1 << 20

    def snap_get_id(self, name):
        assert name == "snap"
        return SNAP_ID

    def aio_read(self, offset, length, oncomplete):
        self.reads.append((offset, length))
        oncomplete(Completion(self.result), None if self.result < 0 else b"x" * length)

    def aio_write(self, data, offset, oncomplete):
        self.writes.append((offset, data))
        oncomplete(Completion(self.result))

    def aio_write_zeroes(self, offset, length, oncomplete):
        self.writes.append((offset, length))
        oncomplete(Completion(self.result))

    def aio_flush(self, oncomplete):
        oncomplete(Completion(self.result))


class HeaderIoctx:
    """The image's header: its snapshots as cls_rbd's get_snapcontext says them."""

    def __init__(self):
        self.header_exists = True
        self.snaps = [SNAP_ID, 2]

    def execute(self, name, cls, method, data):
        assert (name, cls, method) == ("rbd_header.abc123", "rbd", "get_snapcontext")
        if not self.header_exists:
            raise rados.ObjectNotFound("gone")
        return 0, struct.pack("<QI", 9, len(self.snaps)) + struct.pack(
            "<%dQ" % len(self.snaps), *self.snaps)


def translate(exc):
    return exception.CephError(str(exc))


def collect(done):
    return lambda data, error: done.append((data, error))


@pytest.mark.parametrize("remove", ["snapshot", "image"])
def test_a_served_snapshot_reads_and_notices_its_snapshot_or_image_removed(monkeypatch, remove,
                                                                            caplog):
    monkeypatch.setattr(served.ServedSnapshot, "CHECK_EVERY", 4096)
    ioctx, image, done = HeaderIoctx(), FakeImage(), []
    snapshot = served.ServedSnapshot(ioctx, image, "snap", translate)
    snapshot.read(0, 1024, collect(done))
    assert done == [(b"x" * 1024, 0)]
    snapshot.check()
    if remove == "snapshot":
        ioctx.snaps = [2]  # Glance removes the snapshot first, its header stays a while
    else:
        ioctx.header_exists = False
    snapshot.read(1024, 1024, collect(done))
    assert done[-1] == (b"x" * 1024, 0)  # not looked up yet: every CHECK_EVERY bytes
    snapshot.read(2048, 4096, collect(done))
    assert done[-1] == (None, 5) and image.reads == [(0, 1024), (1024, 1024)]
    snapshot.read(0, 1, collect(done))
    assert done[-1] == (None, 5)  # gone for good
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1  # a client reading on is not a flood of the journal
    with pytest.raises(exception.CephNotFound):
        snapshot.check()


def test_a_failed_read_of_a_served_snapshot_is_its_errno():
    done = []
    snapshot = served.ServedSnapshot(HeaderIoctx(), FakeImage(result=-61), "snap", translate)
    snapshot.read(0, 512, collect(done))
    assert done == [(None, 61)]


def test_a_short_snapcontext_reply_is_an_error():
    with pytest.raises(exception.CephError):
        served.snapshot_ids(struct.pack("<QI", 1, 3) + b"\0" * 8)


def test_the_served_cache_writes_zeroes_flushes_and_says_its_errors():
    image, done = FakeImage(), []
    cache = served.ServedCache(image)
    assert cache.writable and cache.size == 1 << 20
    cache.write(4096, b"abc", collect(done))
    cache.write_zeroes(0, 512, collect(done))
    cache.flush(collect(done))
    assert done == [(None, 0)] * 3 and image.writes == [(4096, b"abc"), (0, 512)]
    image.result = -28
    cache.write(0, b"x", collect(done))
    assert done[-1] == (None, 28)


def test_the_served_snapshot_offers_no_flush_and_a_flush_is_refused_without_a_traceback(caplog):
    """ServedSnapshot has no flush: a FLUSH a client sends all the same (qemu-img taken over by
    its image) is refused before it, each time, and logs nothing."""
    snapshot = served.ServedSnapshot(HeaderIoctx(), FakeImage(), "snap", translate)
    export = nbd.Export("/nonexistent/sock", snapshot)  # never entered: no socket
    assert not hasattr(snapshot, "flush") and not export.flags & nbd.SEND_FLUSH
    ours, theirs = socket.socketpair()
    thread = threading.Thread(target=nbd_requests.Transmission(ours, export).run)
    thread.start()
    for handle in range(1, 4):
        theirs.sendall(nbd_requests.REQUEST.pack(nbd_requests.REQUEST_MAGIC, 0,
                                                 nbd_requests.CMD_FLUSH, handle, 0, 0))
    theirs.sendall(nbd_requests.REQUEST.pack(nbd_requests.REQUEST_MAGIC, 0,
                                             nbd_requests.CMD_DISC, 0, 0, 0))
    thread.join(10)
    replies = [nbd_requests.SIMPLE_REPLY.unpack(nbd_requests.recv_exact(
        theirs, nbd_requests.SIMPLE_REPLY.size))[1:] for _ in range(3)]
    ours.close()
    theirs.close()
    assert sorted(replies) == [(errno.EINVAL, 1), (errno.EINVAL, 2), (errno.EINVAL, 3)]
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


class ClosingImage(FakeImage):
    """A writable image whose close fails as librbd's does when the pool is full (it cannot
    release its lock), and is tried once: a closed image closes no more."""

    def __init__(self):
        super().__init__()
        self.closes = 0
        self.closed = False

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def close(self):
        if not self.closed:
            self.closed = True
            self.closes += 1
            raise rbd.NoSpace("error while closing image")

    def flush(self):
        pass


def test_a_failed_close_of_the_served_cache_is_a_warning_naming_it(monkeypatch, tmp_path,
                                                                    caplog):
    image = ClosingImage()
    monkeypatch.setattr(served.rbd, "Image", lambda ioctx, name: image)
    with pytest.raises(exception.CephError, match="closing"):
        with served.serve_cache(contextlib.nullcontext, translate, ID + "_raw",
                                str(tmp_path / "sock")):
            pass
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert image.closes == 1 and len(warnings) == 1
    assert warnings[0].startswith("Cache %s_raw: closing its writable handle failed" % ID)


def test_a_failed_request_of_an_export_says_the_cluster_failed_qemu_img(tmp_path):
    """io_failed(): whether qemu-img saw an I/O error of the worker's, not of the image."""
    snap = served.ServedSnapshot(None, FakeImage(), "snap", lambda exc: exc)
    cache = served.ServedCache(FakeImage())
    assert not snap.io_failed() and not cache.io_failed()  # not served yet
    for backend in (snap, cache):
        with nbd.Export(str(tmp_path / "socket"), backend) as backend.export:
            assert not backend.io_failed()
            backend.export.failed.set()
            assert backend.io_failed()
