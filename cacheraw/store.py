"""The snapshots of the pool served to qemu-img over NBD (cacheraw.nbd) from read-only handles,
and what qemu-img needs to reach the cluster as our user."""

import contextlib
import errno
import logging

import rados
import rbd

from cacheraw import exception
from cacheraw import nbd
from cacheraw.ceph.connection import read_key
from cacheraw.ceph.connection import translated_error

LOG = logging.getLogger(__name__)


class ServedSnapshot:
    """A snapshot opened read-only and read for cacheraw.nbd: each read is an aio_read; every
    CHECK_EVERY bytes (and at check()) its header object is looked up, because a read-only handle
    reads on, as zeros, after the image is removed."""

    CHECK_EVERY = 256 * 1024 * 1024

    def __init__(self, ioctx, image):
        self.ioctx = ioctx
        self.image = image
        self.header = "rbd_header.%s" % image.id()
        self.export = None
        self.gone = False
        self._unchecked = 0

    def qemu_file(self):
        return self.export.qemu_file()

    def check(self):
        """Raise CephNotFound when the image was removed."""
        try:
            self.ioctx.stat(self.header)
        except rados.ObjectNotFound as exc:
            self.gone = True
            raise exception.CephNotFound("image removed while it was read: %s" % exc) from exc
        except rados.Error as exc:
            raise translated_error(exc) from exc

    def read(self, offset, length, done):
        self._unchecked += length
        try:
            if self.gone:
                raise exception.CephNotFound("image removed")
            if self._unchecked >= self.CHECK_EVERY:
                self._unchecked = 0
                self.check()
            self.image.aio_read(offset, length, lambda completion, data: done(
                data, 0 if data is not None else -completion.get_return_value() or errno.EIO))
        except (exception.CacherawError, rbd.Error, rados.Error) as exc:
            LOG.warning("Read of %d bytes at %d from %s failed: %s", length, offset,
                        self.image.get_name(), exc)
            done(None, errno.EIO)


class ServedImages:
    """The images that the worker serves to qemu-img, on the connection ``conn``."""

    def __init__(self, conn):
        self.conn = conn

    @contextlib.contextmanager
    def serve_snapshot(self, name, snapshot, path):
        """``with store.serve_snapshot(name, snapshot, path) as served:`` serves
        ``name@snapshot`` over NBD on the Unix socket ``path`` (cacheraw.nbd) from a read-only
        handle: no watch is set on the image, so that its owner can delete it meanwhile.
        ``served.qemu_file()`` names it to qemu-img; ``served.check()`` raises CephNotFound once
        the image is deleted (reads of a deleted image may return zeros)."""
        with contextlib.ExitStack() as stack:
            try:
                ioctx = stack.enter_context(self.conn.ioctx())
                image = stack.enter_context(rbd.Image(ioctx, name, snapshot=snapshot,
                                                      read_only=True))
                served = ServedSnapshot(ioctx, image)
                served.export = stack.enter_context(nbd.Export(path, image.size(), served.read))
            except (rbd.Error, rados.Error) as exc:
                raise translated_error(exc, self.conn.shut_out) from exc
            yield served

    # -- what qemu-img needs to reach the cluster as our user

    def qemu_file_options(self, name):
        """Options of qemu's rbd block driver for the image ``name`` in our pool."""
        return {"driver": "rbd", "pool": self.conn.pool, "image": name,
                "conf": self.conn.conffile, "user": self.conn.user}

    def qemu_environment(self):
        """Environment for qemu-img, whose own Ceph client reads CEPH_ARGS: our timeouts, so that
        a write into a pool that filled up (or an unreachable cluster) fails the conversion
        instead of blocking it until its wall-clock limit."""
        return {"CEPH_ARGS": "--rados_osd_op_timeout=%d --rados_mon_op_timeout=%d "
                             "--client_mount_timeout=%d"
                             % (self.conn.op_timeout, self.conn.op_timeout,
                                self.conn.connect_timeout)}

    def secret_key(self):
        """The user's key when an explicit keyring is configured (qemu cannot read one)."""
        return read_key(self.conn.keyring, self.conn.user) if self.conn.keyring else None
