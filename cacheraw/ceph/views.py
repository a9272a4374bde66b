"""What cacheraw-manage and the operator's checks read of the pool: who holds a conversion lock
and how far it is, and whether our Ceph user may do each step a cache needs."""

from __future__ import annotations

import logging
from typing import Optional

import rados
import rbd

from cacheraw import exception
from cacheraw import properties
from cacheraw.ceph import connection
from cacheraw.ceph import lease
from cacheraw.ceph.caches import SNAP
from cacheraw.ceph.cls_lock import LOCK_NAME
from cacheraw.ceph.locks import RadosLocks
from cacheraw.ceph.removals import drop_snaps

LOG = logging.getLogger(__name__)

# What the caps check blocklists for a minute, as a worker fences one whose lease ran out: an
# address of TEST-NET-1 (RFC 5737), which no client has.
CHECK_ADDRESS = "192.0.2.1:0/1"


class OperatorViews:
    """Questions about the pool, on the connection ``conn`` and its ``locks``."""

    def __init__(self, conn: connection.Connection, locks: RadosLocks) -> None:
        self.conn = conn
        self.locks = locks

    def lock_holder(self, image_id: str) -> Optional[dict]:
        """Who holds the image's conversion lock ({"host", "pid", "since", ...}), or None when
        the lock is free: a record left by a holder that died is not a holder."""
        if not self.locks.is_locked(image_id):
            return None
        return self.locks.holder_record(image_id) or {"host": "unknown"}

    def check_rbd_caps(self) -> str:
        """Do, on a scratch image, each RBD step a cache needs; the scratch image goes in every
        outcome. Raises CacherawError naming the step that failed."""
        name = properties.scratch_name()
        step = "connect"
        try:
            with self.conn.ioctx() as ioctx:
                step = "create an RBD image"
                rbd.RBD().create(ioctx, name, 1 << 20, old_format=False)
                with rbd.Image(ioctx, name) as image:
                    for step, action in (("create a snapshot", image.create_snap),
                                         ("protect a snapshot", image.protect_snap),
                                         ("unprotect a snapshot", image.unprotect_snap),
                                         ("remove a snapshot", image.remove_snap)):
                        action(SNAP)
                step = "remove an RBD image"
                rbd.RBD().remove(ioctx, name)
                step = "take a lock"
                cookie = lease.new_cookie()
                ioctx.lock_exclusive(name, LOCK_NAME, cookie, duration=10)
                ioctx.unlock(name, LOCK_NAME, cookie)
                ioctx.remove_object(name)
                step = "blocklist a client (osd blocklist add)"
                self.conn.mon_json({"prefix": "osd blocklist", "blocklistop": "add",
                                    "addr": CHECK_ADDRESS, "expire": 60.0})
        except (rados.Error, rbd.Error, exception.CephError) as exc:
            self._remove_scratch(name)
            raise exception.CephError("client.%s cannot %s in pool %s: %s" % (
                self.conn.user, step, self.conn.pool, exc or type(exc).__name__)) from exc
        return name

    def _remove_scratch(self, name: str) -> None:
        try:
            with self.conn.ioctx() as ioctx:
                try:
                    with rbd.Image(ioctx, name) as image:
                        drop_snaps(image)
                    rbd.RBD().remove(ioctx, name)
                except rbd.ImageNotFound:
                    pass
                try:
                    ioctx.remove_object(name)
                except rados.ObjectNotFound:
                    pass
        except (rados.Error, rbd.Error) as exc:
            LOG.warning("Could not remove the scratch image %s: %s", name, exc)
