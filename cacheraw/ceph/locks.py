"""The conversion locks: one RADOS object ``cacheraw.lock.<id>`` per image in the pool, locked
exclusively with cls_lock (its requests encoded in cacheraw.ceph.cls_lock), and the record its
holder keeps on it. cacheraw.ceph.lease drives them; every worker on every controller shares them.

Fencing: the holder records its client's address on the lock object. Whoever takes a lock that
expired under another holder blocklists that address (``osd blocklist add``, for
``[ceph] blocklist_expiry``) before it touches anything of the image, so that a holder that
stalled past its lease (a paused VM, SIGSTOP, a slow cluster) cannot write or remove anything
once it wakes up: its next Ceph request fails, and the worker restarts with a new client.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
import threading
import time
import uuid
from typing import Any, Callable, List, Optional, Set

import rados

from cacheraw import exception
from cacheraw.ceph import connection
from cacheraw.ceph.cls_lock import LOCK_FLAG_MUST_RENEW
from cacheraw.ceph.cls_lock import LOCK_NAME
from cacheraw.ceph.cls_lock import assert_locked_op
from cacheraw.ceph.cls_lock import encode_string
from cacheraw.ceph.cls_lock import encoded
from cacheraw.ceph.cls_lock import get_info_op
from cacheraw.ceph.cls_lock import lock_op
from cacheraw.ceph.cls_lock import lockers_in_info

LOG = logging.getLogger(__name__)

LOCK_PREFIX = "cacheraw.lock."
# Extended attributes of a lock object: who holds it, and how far its conversion is.
HOLDER_XATTR = "cacheraw.holder"
PROGRESS_XATTR = "cacheraw.progress"


class _LiveCookies:
    """The cookies of the leases this process holds (their ``with`` block has not ended): a
    lock that expired under one of them is not fenced by blocklisting this very process."""

    def __init__(self) -> None:
        self._cookies: Set[str] = set()
        self._lock = threading.Lock()

    def add(self, cookie: str) -> None:
        with self._lock:
            self._cookies.add(cookie)

    def discard(self, cookie: str) -> None:
        with self._lock:
            self._cookies.discard(cookie)

    def __contains__(self, cookie: object) -> bool:
        with self._lock:
            return cookie in self._cookies


class RadosLocks:
    """The conversion locks on the connection ``conn``."""

    def __init__(self, conn: connection.Connection, blocklist_expiry: int) -> None:
        self.conn = conn
        self.blocklist_expiry = blocklist_expiry
        self._retry = conn.retry
        self._live = _LiveCookies()

    def _object(self, image_id: str) -> str:
        return LOCK_PREFIX + image_id

    def take(self, image_id: str, cookie: str, duration: float) -> None:
        """Take the lock (LockBusy when another holds it), fence its previous holder if its
        lease ran out, and record this holder. A retry after a lost reply finds the lock held
        with ``cookie`` already (EEXIST): that is its own earlier success."""
        self._take(image_id, cookie, duration)
        self._fence_previous(image_id, cookie)
        self._live.add(cookie)

    @connection.translate_errors
    def _take(self, image_id: str, cookie: str, duration: float) -> None:
        # cls_lock's request encoded here, as renew() sends it: the binding's lock_exclusive
        # leaves the microseconds of its duration unset, so that a lock it took could outlive
        # its duration by any amount (seen: a 1.5 s lock still held a minute later).
        with self.conn.ioctx() as ioctx, rados.WriteOpCtx() as op:
            op.execute("lock", "lock", lock_op(cookie, duration))
            try:
                ioctx.operate_write_op(op, self._object(image_id))
            except rados.ObjectExists:
                LOG.info("Image %s: the lock was taken by an earlier attempt whose answer was "
                         "lost", image_id)
            except rados.ObjectBusy as exc:
                raise exception.LockBusy("image %s is being cached by another worker"
                                         % image_id) from exc

    def _fence_previous(self, image_id: str, cookie: str) -> None:
        """A holder record left on the lock object is that of a lease that ran out (a released
        lock object is removed): blocklist its client, then record ours. When blocklisting
        fails, the lock is given back with the old record in place, for the next taker."""
        try:
            previous = self.holder_record(image_id)
            if previous and previous.get("cookie") != cookie:
                self._blocklist(image_id, previous)
            self._record_holder(image_id, cookie)
        except exception.CacherawError:
            self.release(image_id, cookie, remove=False)
            raise

    def _blocklist(self, image_id: str, previous: dict) -> None:
        address = previous.get("addr")
        if previous.get("cookie") in self._live:
            raise exception.LockBusy("image %s: an earlier lease of this worker still runs"
                                     % image_id)
        if not address:
            # Whoever held it cannot be fenced: as when a blocklist fails, nothing is touched.
            raise exception.CephError(
                "image %s: the lease of %s (host %s, pid %s) ran out and its record has no client "
                "address to blocklist; once that worker is known to be stopped, remove the object "
                "%s" % (image_id, previous.get("cookie"), previous.get("host"),
                        previous.get("pid"), self._object(image_id)))
        if address == self.conn.address():
            LOG.info("Image %s: the lease of %s ran out; nothing of it runs any more", image_id,
                     address)
            return
        LOG.warning("Image %s: the lease of %s (host %s, pid %s) ran out: blocklisting that "
                    "client for %d s before touching the image", image_id, address,
                    previous.get("host"), previous.get("pid"), self.blocklist_expiry)
        self._blocklist_address(address)

    @connection.translate_errors
    def _blocklist_address(self, address: str) -> None:
        self.conn.mon_json({"prefix": "osd blocklist", "blocklistop": "add", "addr": address,
                            "expire": float(self.blocklist_expiry)})
        # As librbd's lock breaker does: once this client has the map with the entry, every OSD
        # that serves its next request has it too, and refuses the fenced client from then on.
        self.conn.connected().wait_for_latest_osdmap()

    @connection.translate_errors
    def _record_holder(self, image_id: str, cookie: str) -> None:
        """The binding cannot list lockers: the holder says who it is on the lock object, with
        its client's address, in one operation with the check that it holds the lock (and
        clears an earlier holder's progress)."""
        address = self.conn.address()
        if not address:
            # A holder that no later taker could fence must not hold the lock.
            raise exception.CephError("image %s: this client's address (%s) cannot be recorded "
                                      "on the lock" % (image_id, self.conn.addresses()))
        record = {"host": socket.gethostname(), "pid": os.getpid(), "since": int(time.time()),
                  "cookie": cookie, "addr": address}
        with self.conn.ioctx() as ioctx:
            with rados.WriteOpCtx() as op:
                op.execute("lock", "assert_locked", assert_locked_op(cookie))
                op.set_xattr(HOLDER_XATTR, json.dumps(record).encode())
                op.set_xattr(PROGRESS_XATTR, b"")
                ioctx.operate_write_op(op, self._object(image_id))

    def renew(self, image_id: str, cookie: str, duration: float, timeout: float,
              late: Optional[Callable[[], None]] = None) -> None:
        """Once, never retried (the lease's renewer is the retry), waiting at most ``timeout``
        seconds (CephUnavailable after it; the request stays queued in librados, and ``late()``
        is called if it succeeds after all, e.g. once an OSD is back). LockLost when the lock
        is not held with ``cookie`` any more: MUST_RENEW never takes a lost lock again."""
        done = threading.Event()
        result: List[int] = []
        waiting = [True]

        def complete(completion: Any, _: Any) -> None:
            result.append(completion.get_return_value())
            done.set()
            if not waiting[0] and result[0] >= 0 and late is not None:
                late()

        try:
            # The connection's long-lived handle: a renewal that timed out may still be in
            # flight, and a handle closed under it could not take its answer.
            self.conn.shared_ioctx().aio_execute(
                self._object(image_id), "lock", "lock",
                lock_op(cookie, duration, LOCK_FLAG_MUST_RENEW), length=64, oncomplete=complete)
        except rados.Error as exc:
            raise connection.translated_error(exc, self.conn.shut_out) from exc
        if not done.wait(timeout):
            waiting[0] = False
            if not done.is_set():
                raise exception.CephUnavailable("image %s: renewing the lock took more than "
                                                "%.1f s" % (image_id, timeout))
        self._renewed(image_id, result[0])

    def _renewed(self, image_id: str, ret: int) -> None:
        if ret >= 0:
            return
        if -ret in (errno.ENOENT, errno.EBUSY, errno.EEXIST):
            raise exception.LockLost("image %s: the conversion lock is not ours any more"
                                     % image_id)
        if -ret == errno.ESHUTDOWN:
            self.conn.shut_out()
            raise exception.CephBlocklisted("the cluster refuses this client (blocklisted)")
        raise exception.CephUnavailable("image %s: renewing the lock failed: %s"
                                        % (image_id, os.strerror(-ret)))

    def release(self, image_id: str, cookie: str, remove: bool = True) -> None:
        """Remove the lock object (or, without ``remove``, only the lock) in one operation with
        the check that ``cookie`` holds it: a lock that another worker took meanwhile is never
        removed; one that expired under ``cookie`` and nobody touched since is (_remove_expired)."""
        self._live.discard(cookie)
        try:
            self._retry(self._fenced, image_id, cookie, lambda op: op.remove() if remove else
                        op.execute("lock", "unlock", encoded(encode_string(LOCK_NAME),
                                                             encode_string(cookie))))
        except exception.LockLost:
            if not remove or not self._remove_expired(image_id, cookie):
                raise
            LOG.info("Image %s: its lock had expired; removed it with its holder record",
                     image_id)

    @connection.translate_errors
    def _remove_expired(self, image_id: str, cookie: str) -> bool:
        """True when the object bore ``cookie``'s record and is removed, in one operation that
        takes the lock afresh (nobody holds it) and fails if the object was written since the
        record was read: left, it would have the next taker blocklist this (healthy) worker."""
        name = self._object(image_id)
        with self.conn.ioctx() as ioctx:
            try:
                record = json.loads(ioctx.get_xattr(name, HOLDER_XATTR).decode())
            except (rados.ObjectNotFound, rados.NoData, UnicodeDecodeError, ValueError):
                return False
            version = ioctx.get_last_version()
            if not isinstance(record, dict) or record.get("cookie") != cookie:
                return False
            with rados.WriteOpCtx() as op:
                op.assert_version(version)
                op.execute("lock", "lock", lock_op("release-%s" % uuid.uuid4().hex, 1))
                op.remove()
                try:
                    ioctx.operate_write_op(op, name)
                except rados.OSError as exc:  # held, or written since (its version): left
                    if exc.errno not in (errno.ENOENT, errno.EBUSY, errno.ERANGE, errno.EOVERFLOW):
                        raise
                    return False
        return True

    def _fenced(self, image_id: str, cookie: str, add: Callable[[Any], None]) -> None:
        with self.conn.ioctx() as ioctx:
            with rados.WriteOpCtx() as op:
                op.execute("lock", "assert_locked", assert_locked_op(cookie))
                add(op)
                try:
                    ioctx.operate_write_op(op, self._object(image_id))
                except (rados.ObjectNotFound, rados.ObjectBusy) as exc:
                    raise exception.LockLost("image %s: the conversion lock is not ours any "
                                             "more" % image_id) from exc
                except rados.Error as exc:
                    raise connection.translated_error(exc, self.conn.shut_out) from exc

    @connection.translate_errors
    def is_locked(self, image_id: str) -> bool:
        """True when some worker holds a live conversion lock on the image (cls_lock's
        get_info: a question, the lock is never taken to find out)."""
        with self.conn.ioctx() as ioctx:
            try:
                _, reply = ioctx.execute(self._object(image_id), "lock", "get_info",
                                         get_info_op(), length=1 << 16)
            except rados.ObjectNotFound:
                return False
        return lockers_in_info(reply) > 0

    @connection.translate_errors
    def holder_record(self, image_id: str) -> Optional[dict]:
        """The record of the lock's last holder ({"host", "pid", "since", "cookie", "addr"}),
        live or not, or None."""
        return self._xattr(image_id, HOLDER_XATTR)

    @connection.translate_errors
    def progress(self, image_id: str) -> Optional[dict]:
        return self._xattr(image_id, PROGRESS_XATTR)

    def _xattr(self, image_id: str, key: str) -> Optional[dict]:
        with self.conn.ioctx() as ioctx:
            try:
                value = ioctx.get_xattr(self._object(image_id), key)
            except (rados.ObjectNotFound, rados.NoData):
                return None
        try:
            record = json.loads(value.decode())
        except (UnicodeDecodeError, ValueError):
            return None
        return record if isinstance(record, dict) else None

    def set_progress(self, lease: Any, progress: dict) -> None:
        """Publish progress on the lock object, only while ``lease`` holds it."""
        if not lease.held():
            return
        value = json.dumps(progress).encode()
        self._fenced(lease.image_id, lease.cookie, lambda op: op.set_xattr(PROGRESS_XATTR, value))
