"""The conversion lease: a worker acts on an image only while it can prove it holds its lock.

The lock itself is a RADOS object lock (cacheraw.ceph.locks): taken for a duration, renewed
with cls_lock's MUST_RENEW flag, so that a renewal fails when the lock was lost in between instead
of silently taking it again. A lease is held while its last successful take or renewal is younger
than the lock's duration (less a margin, measured from before the request was sent, so that the
cluster's expiry always comes after ours) and no renewal said the lock is gone. Every destructive
step asks ``lease.check()`` first: a worker that stalled (a paused VM, a long GC, a slow cluster)
wakes up, finds its lease expired and touches nothing. A check cannot stop a step already past
it, so Ceph fences too: whoever takes a lock that expired under another holder blocklists that
holder's client first (cacheraw.ceph.locks), as Ceph's own rbd exclusive lock does.

Timing, for a lock of duration D: the lease counts as held for D - margin(D) (5D/6 from 60 s on)
after the last successful take or renewal was sent; renewals start every D/6 and each waits at
most ``renewal_timeout``. Two renewals in a row may fail (time out or be refused by a slow
cluster): the third one is sent by 3D/6 + 2 * renewal_timeout, which check_timing() requires to
be before the lease runs out.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from typing import Callable, Iterator, List, Optional, Protocol

from cacheraw import exception

LOG = logging.getLogger(__name__)

# Renewals started per lock duration; with check_timing(), two in a row may fail before the
# lease runs out.
RENEWALS_PER_DURATION = 6
TOLERATED_FAILURES = 2


class Locks(Protocol):
    """The locks a lease holds one of (cacheraw.ceph.locks.RadosLocks)."""

    def take(self, image_id: str, cookie: str, duration: float) -> None: ...

    def renew(self, image_id: str, cookie: str, duration: float, timeout: float,
              late: Optional[Callable[[], None]] = None) -> None: ...

    def release(self, image_id: str, cookie: str, remove: bool = True) -> None: ...


def margin(duration: float) -> float:
    """How long before the lock's own expiry the lease counts as expired: the clock drift and
    request delays it must cover."""
    return max(1.0, duration / 6.0)


def default_renewal_timeout(duration: float) -> float:
    """Half of what check_timing() allows for the lock's ``duration``."""
    return duration / 12.0


def check_timing(duration: float, renewal_timeout: float) -> None:
    """Raise ConfigError unless TOLERATED_FAILURES renewals in a row may fail (each after
    ``renewal_timeout``) and the next one is still sent while the lease holds."""
    interval = duration / RENEWALS_PER_DURATION
    last_sent = (TOLERATED_FAILURES + 1) * interval + TOLERATED_FAILURES * renewal_timeout
    validity = duration - margin(duration)
    if last_sent >= validity:
        raise exception.ConfigError(
            "[ceph] lock_renewal_timeout = %s is too long for lock_duration = %s: %d renewals "
            "in a row may fail only if 3 * lock_duration / %d + %d * lock_renewal_timeout "
            "(%.1f s) is less than the lease's validity (%.1f s); lower lock_renewal_timeout "
            "below %.1f s or raise lock_duration"
            % (renewal_timeout, duration, TOLERATED_FAILURES, RENEWALS_PER_DURATION,
               TOLERATED_FAILURES, last_sent, validity,
               (validity - (TOLERATED_FAILURES + 1) * interval) / TOLERATED_FAILURES))


def new_cookie() -> str:
    """A cookie per lease: two leases of one process (threads) are two holders."""
    return "%s-%d-%s" % (socket.gethostname(), os.getpid(), uuid.uuid4().hex[:12])


class Lease:
    """One holding of an image's conversion lock."""

    def __init__(self, locks: Locks, image_id: str, duration: float,
                 clock: Callable[[], float] = time.monotonic,
                 renewal_timeout: Optional[float] = None):
        self.locks = locks
        self.image_id = image_id
        self.cookie = new_cookie()
        self.duration = duration
        self.renewal_timeout = renewal_timeout or default_renewal_timeout(duration)
        self._clock = clock
        self._deadline: Optional[float] = None
        self._lost = threading.Event()
        self._mutex = threading.Lock()
        self._on_lost: List[Callable[[], None]] = []

    def take(self) -> None:
        """Raises LockBusy when another holds the lock."""
        sent = self._clock()
        self.locks.take(self.image_id, self.cookie, self.duration)
        self._extend(sent)

    def renew(self) -> None:
        """Renew the lock: LockLost when it is not ours any more; a transient error (the
        cluster does not answer) propagates and the lease runs out unless a later one works."""
        self.check()
        sent = self._clock()
        try:
            self.locks.renew(self.image_id, self.cookie, self.duration, self.renewal_timeout,
                             late=lambda: self._late(sent))
        except exception.LockLost as exc:
            self.lose(str(exc))
            raise
        self._extend(sent)

    def _extend(self, sent: float) -> None:
        with self._mutex:
            deadline = sent + self.duration - margin(self.duration)
            if self._deadline is None or deadline > self._deadline:
                self._deadline = deadline

    def _late(self, sent: float) -> None:
        """A renewal that timed out succeeded after all (an OSD came back): the cluster renewed
        the lock from no earlier than ``sent``. A lease already lost stays lost."""
        if self.held():
            LOG.info("Image %s: a renewal that timed out was applied after all", self.image_id)
            self._extend(sent)

    def held(self) -> bool:
        """True while this worker can prove it holds the lock."""
        with self._mutex:
            deadline = self._deadline
        return (deadline is not None and not self._lost.is_set()
                and self._clock() < deadline)

    def check(self) -> None:
        """Raise LockLost unless held(): call it before every step that writes or removes."""
        if not self.held():
            if not self._lost.is_set():
                self.lose("lease expired")
            raise exception.LockLost("image %s: lost the conversion lock" % self.image_id)

    def on_lost(self, callback: Callable[[], None]) -> None:
        self._on_lost.append(callback)

    def lose(self, why: str) -> None:
        if self._lost.is_set():
            return
        self._lost.set()
        LOG.error("Image %s: lost its conversion lock (%s): touching nothing of it any more",
                  self.image_id, why)
        for callback in self._on_lost:
            try:
                callback()
            except Exception:  # noqa: BLE001 - every callback runs
                LOG.exception("Image %s: lock-lost callback failed", self.image_id)

    def release(self) -> None:
        """Remove the lock object if it is still ours, in one operation with the check that it
        is (so even a lease that ran out may try): a lock that another worker took is left to
        it, and one that simply expired to the next holder."""
        try:
            self.locks.release(self.image_id, self.cookie)
        except exception.LockLost:
            LOG.info("Image %s: the lock was not ours any more at release", self.image_id)
        except exception.CacherawError as exc:
            LOG.warning("Image %s: could not release its lock (it expires): %s",
                        self.image_id, exc)


class Renewer(threading.Thread):
    """Renews a lease every RENEWALS_PER_DURATION-th of its duration until stopped or the lease
    is lost."""

    def __init__(self, lease: Lease):
        super().__init__(name="lease-%s" % lease.image_id, daemon=True)
        self.lease = lease
        self._stop_event = threading.Event()

    def run(self) -> None:
        interval = self.lease.duration / RENEWALS_PER_DURATION
        while not self._stop_event.wait(interval):
            try:
                self.lease.renew()
            except exception.LockLost:
                return
            except exception.CephBlocklisted as exc:
                self.lease.lose(str(exc))
                return
            except exception.CacherawError as exc:
                LOG.warning("Image %s: could not renew its lock: %s", self.lease.image_id, exc)
                if not self.lease.held():
                    self.lease.lose("renewals failed until the lease ran out")
                    return

    def stop(self) -> None:
        self._stop_event.set()
        if self is not threading.current_thread():
            self.join()


@contextlib.contextmanager
def hold(locks: Locks, image_id: str, duration: float,
         on_lost: Optional[Callable[[], None]] = None,
         clock: Callable[[], float] = time.monotonic,
         renewal_timeout: Optional[float] = None) -> Iterator[Lease]:
    """``with hold(...) as lease:`` takes the lock (LockBusy when another holds it), renews it
    while the block runs, calls ``on_lost`` at once if it is lost, and releases it at the end."""
    lease = Lease(locks, image_id, duration, clock, renewal_timeout)
    lease.take()
    if on_lost is not None:
        lease.on_lost(on_lost)
    renewer = Renewer(lease)
    renewer.start()
    try:
        yield lease
    finally:
        renewer.stop()
        lease.release()
