"""RBD images served to qemu-img over NBD (cacheraw.qemu.nbd) through the worker's own librbd.

qemu-img holds no Ceph key and opens no connection to the cluster: it reads the image it converts
from a snapshot served read-only (no watch, so that its owner can delete it meanwhile) and writes
the new cache through a writable export of that one image. Nothing else of the pool is within
its reach. Every handle is a ``with``; rados/rbd errors are translated by the store's
``translate``.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import struct
from typing import Any, Callable, ContextManager, Iterator, List, Optional

import rados
import rbd

from cacheraw import exception
from cacheraw.qemu import nbd

LOG = logging.getLogger(__name__)


def _errno(completion: Any) -> int:
    """A completion's error as a positive errno, 0 on success."""
    value = completion.get_return_value()
    return -value if value < 0 else 0


def snapshot_ids(reply: bytes) -> List[int]:
    """The snapshot ids in cls_rbd's get_snapcontext reply (a SnapContext: u64 seq, then a
    u32-counted list of u64 ids)."""
    if len(reply) < 12:
        raise exception.CephError("short reply from cls_rbd get_snapcontext")
    count, = struct.unpack_from("<I", reply, 8)
    if len(reply) < 12 + 8 * count:
        raise exception.CephError("short reply from cls_rbd get_snapcontext")
    return list(struct.unpack_from("<%dQ" % count, reply, 12))


class ServedSnapshot:
    """A snapshot opened read-only, an NBD backend: each read is an aio_read. Every CHECK_EVERY
    bytes (and at check()) the image's header is asked whether the snapshot is still there,
    because a read-only handle reads on, as zeros, after the snapshot or its image is removed
    (Glance removes the snapshot first)."""

    CHECK_EVERY = 256 * 1024 * 1024
    writable = False

    def __init__(self, ioctx: Any, image: Any, snapshot: str,
                 translate: Callable[[Exception], Exception]):
        self.ioctx = ioctx
        self.image = image
        self.size: int = image.size()
        self.header = "rbd_header.%s" % image.id()
        self.snap_id = image.snap_get_id(snapshot)
        self.translate = translate
        self.export: Optional[nbd.Export] = None
        self.gone = False
        self._unchecked = 0
        self._warned = False  # once: qemu-img may go on reading after an error

    def check(self) -> None:
        """Raise CephNotFound when the snapshot or its image was removed."""
        try:
            _ret, reply = self.ioctx.execute(self.header, "rbd", "get_snapcontext", b"")
        except rados.ObjectNotFound as exc:
            self.gone = True
            raise exception.CephNotFound("image removed while it was read: %s" % exc) from exc
        except rados.Error as exc:
            raise self.translate(exc) from exc
        if self.snap_id not in snapshot_ids(reply):
            self.gone = True
            raise exception.CephNotFound("snapshot removed while it was read")

    def read(self, offset: int, length: int, done: nbd.Done) -> None:
        self._unchecked += length
        try:
            if self.gone:
                raise exception.CephNotFound("image removed")
            if self._unchecked >= self.CHECK_EVERY:
                self._unchecked = 0
                self.check()
            self.image.aio_read(offset, length, lambda completion, data: done(
                data, 0 if data is not None else _errno(completion) or errno.EIO))
        except (exception.CacherawError, rbd.Error, rados.Error) as exc:
            if not self._warned:
                self._warned = True
                LOG.warning("Read of %d bytes at %d from %s failed (later failures are not "
                            "logged): %s", length, offset, self.image.get_name(), exc)
            done(None, errno.EIO)

    def io_failed(self) -> bool:
        """Whether a read of qemu-img's failed here: the cluster's fault, not the image's."""
        return export_failed(self.export)


class ServedCache:
    """The one new cache image, opened read-write, an NBD backend that qemu-img writes the
    conversion through."""

    writable = True

    def __init__(self, image: Any):
        self.image = image
        self.size: int = image.size()
        self.export: Optional[nbd.Export] = None

    def read(self, offset: int, length: int, done: nbd.Done) -> None:
        self.image.aio_read(offset, length, lambda completion, data: done(
            data, 0 if data is not None else _errno(completion) or errno.EIO))

    def write(self, offset: int, data: bytes, done: nbd.Done) -> None:
        self.image.aio_write(data, offset, lambda completion: done(None, _errno(completion)))

    def write_zeroes(self, offset: int, length: int, done: nbd.Done) -> None:
        self.image.aio_write_zeroes(offset, length,
                                    lambda completion: done(None, _errno(completion)))

    def flush(self, done: nbd.Done) -> None:
        self.image.aio_flush(lambda completion: done(None, _errno(completion)))

    def io_failed(self) -> bool:
        """Whether a request of qemu-img's failed here: the cluster's fault, not the image's."""
        return export_failed(self.export)


def export_failed(export: Optional[nbd.Export]) -> bool:
    """Whether a request of the backend behind ``export`` failed (qemu-img saw an I/O error)."""
    return export is not None and export.failed.is_set()


@contextlib.contextmanager
def serve_snapshot(open_ioctx: Callable[[], ContextManager[Any]],
                   translate: Callable[[Exception], Exception], name: str, snapshot: str,
                   path: str) -> Iterator[ServedSnapshot]:
    """``with serve_snapshot(...) as served:`` serves ``name@snapshot`` read-only on the Unix
    socket ``path``; ``served.check()`` raises CephNotFound once the snapshot is removed."""
    try:
        with open_ioctx() as ioctx, \
                rbd.Image(ioctx, name, snapshot=snapshot, read_only=True) as image:
            served = ServedSnapshot(ioctx, image, snapshot, translate)
            with nbd.Export(path, served) as served.export:
                yield served
    except (rbd.Error, rados.Error) as exc:
        raise translate(exc) from exc


@contextlib.contextmanager
def serve_cache(open_ioctx: Callable[[], ContextManager[Any]],
                translate: Callable[[Exception], Exception], name: str,
                path: str) -> Iterator[ServedCache]:
    """``with serve_cache(...) as served:`` serves the cache ``name`` writable on the Unix socket
    ``path``; once qemu-img is done with it, what it wrote is flushed."""
    try:
        with open_ioctx() as ioctx, _writable(ioctx, name) as image:
            served = ServedCache(image)
            with nbd.Export(path, served) as served.export:
                yield served
            image.flush()  # every request has ended with the export
    except (rbd.Error, rados.Error) as exc:
        raise translate(exc) from exc


@contextlib.contextmanager
def _writable(ioctx: Any, name: str) -> Iterator:
    """The cache ``name`` opened read-write; a close that fails (the pool is full) is logged
    here: the RBD lock of its handle stays, for the cache's removal to release. (A close is
    tried once: the ``with`` closes a closed image no more.)"""
    with rbd.Image(ioctx, name) as image:
        try:
            yield image
        finally:
            try:
                image.close()
            except (rbd.Error, rados.Error) as exc:
                LOG.warning("Cache %s: closing its writable handle failed, its RBD lock stays "
                            "until the cache is removed: %s", name, exc)
                raise
