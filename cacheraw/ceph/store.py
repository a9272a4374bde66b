"""CephStore: what the rest of cacheraw asks of the cluster, each question answered by the
module of this package that holds it (the connection, the locks and leases, the caches, the
removals, the pool's space, the operator's views, the snapshots served to qemu-img)."""

from __future__ import annotations

import contextlib
from typing import Any, Callable, ContextManager, Iterator, List, Optional, Tuple

from oslo_config import cfg

from cacheraw import properties
from cacheraw.ceph import caches
from cacheraw.ceph import connection
from cacheraw.ceph import locks
from cacheraw.ceph import removals
from cacheraw.ceph import served
from cacheraw.ceph import space
from cacheraw.ceph import views
from cacheraw.ceph.lease import Lease
from cacheraw.ceph.lease import hold

SNAP = properties.CACHE_SNAP


class CephStore:
    """One connection to the cluster, shared by the threads of a worker, and the operations
    cacheraw needs on its pool."""

    def __init__(self, conf: cfg.ConfigOpts) -> None:
        self.conn = connection.Connection(conf)
        self.pool = self.conn.pool
        self.lock_duration = self.conn.lock_duration
        self.locks = locks.RadosLocks(self.conn, conf.ceph.blocklist_expiry)
        self.caches = caches.Caches(self.conn)
        self.removals = removals.CacheRemovals(self.conn)
        self.space = space.PoolSpace(self.conn, self.locks, conf.converter.max_pool_usage)
        self.views = views.OperatorViews(self.conn, self.locks)
        self.blocklisted = self.conn.blocklisted
        self._retry = self.conn.retry

    # -- the connection

    def check_config(self) -> None:
        self.conn.check_config()

    def connect(self) -> None:
        self.conn.connect()

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> "CephStore":
        self.connect()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def shut_out(self) -> None:
        self.conn.shut_out()

    @connection.translate_errors
    def fsid(self) -> str:
        return self.conn.connected().get_fsid()

    # -- conversion locks, shared by every worker on every controller

    @contextlib.contextmanager
    def conversion_lock(self, image_id: str, on_lost: Optional[Callable[[], None]] = None
                        ) -> Iterator[Lease]:
        """``with store.conversion_lock(image_id) as lease:``: the image's lock, taken (LockBusy
        when another holds it; the previous holder fenced if its lease ran out), renewed while
        the block runs and released after it, with the space the conversion reserved;
        ``on_lost`` is called as soon as it is lost. See cacheraw.ceph.lease."""
        with hold(self.locks, image_id, self.lock_duration, on_lost,
                            renewal_timeout=self.conn.renewal_timeout) as lease:
            try:
                yield lease
            finally:
                # While the lease holds, a reservation of another lease is one that ran out.
                self.space.release(image_id, None if lease.held() else lease.cookie)

    def is_locked(self, image_id: str) -> bool:
        return self.locks.is_locked(image_id)

    def lock_holder(self, image_id: str) -> Optional[dict]:
        return self.views.lock_holder(image_id)

    def set_progress(self, lease: Lease, progress: dict) -> None:
        """Publish how far the conversion under ``lease`` is, for any reader. Best effort, never
        retried: the conversion must not wait for it."""
        self.locks.set_progress(lease, progress)

    def progress(self, image_id: str) -> Optional[dict]:
        """The progress last published by the holder of the image's lock, or None."""
        return self.locks.progress(image_id)

    # -- space

    def pool_space(self) -> Tuple[int, str]:
        """(bytes the pool can still take below its ceiling, what limits it)."""
        return self.space.room()

    def available_space(self) -> int:
        """The bytes a new cache may take now, beside the running conversions."""
        return self.space.available()

    def reserve(self, lease: Lease, need: int) -> None:
        """Reserve ``need`` bytes for the conversion under ``lease`` until it ends, or raise
        NotEnoughSpace."""
        self.space.reserve(lease, need)

    # -- caches

    def create(self, name: str, size: int, lease: Lease) -> str:
        """Create the empty cache ``name``; returns its RBD id (for publish())."""
        return self.caches.create(name, size, lease=lease)

    def publish(self, name: str, rbd_id: str, lease: Lease) -> None:
        self.caches.publish(name, rbd_id, lease=lease)

    def has_protected_snap(self, name: str) -> bool:
        return self.caches.has_protected_snap(name)

    def read(self, name: str, offset: int, length: int, snapshot: str = SNAP) -> bytes:
        return self.caches.read(name, offset, length, snapshot)

    def used_bytes(self, name: str, snapshot: str = SNAP, with_parent: bool = False) -> int:
        return self.caches.used_bytes(name, snapshot, with_parent)

    def cache_facts(self, name: str) -> dict:
        return self.caches.cache_facts(name)

    def list_caches(self) -> List[str]:
        return self.caches.list_caches()

    def check_rbd_caps(self) -> str:
        return self.views.check_rbd_caps()

    # -- removals

    @property
    def before_remove(self) -> Optional[Callable[[str, str], Any]]:
        return self.removals.before_remove

    @before_remove.setter
    def before_remove(self, hook: Optional[Callable[[str, str], Any]]) -> None:
        self.removals.before_remove = hook

    def remove(self, name: str, lease: Any = None) -> str:
        return self.removals.remove(name, lease=lease)

    def remove_partial(self, name: str, lease: Any = None) -> str:
        return self.removals.remove_partial(name, lease=lease)

    def purge_trash(self) -> List[str]:
        return self.removals.purge_trash()

    # -- caches that share the data of an identical image's (cacheraw.identical)

    def clone_cache(self, source: str, target: str, lease: Lease,
                    independent: bool = False) -> Tuple[str, str]:
        return self.caches.clone_cache(source, target, independent, lease=lease)

    def sharing(self, name: str) -> dict:
        return self.caches.sharing(name)

    # -- the images served to qemu-img over NBD (cacheraw.ceph.served)

    def serve_snapshot(self, name: str, snapshot: str,
                       path: str) -> ContextManager[served.ServedSnapshot]:
        """``with store.serve_snapshot(name, snapshot, path) as served:`` serves
        ``name@snapshot`` read-only to qemu-img over NBD on the Unix socket ``path``;
        ``served.check()`` raises CephNotFound once it is removed."""
        return served.serve_snapshot(self.conn.ioctx, self._translated, name, snapshot, path)

    @contextlib.contextmanager
    def serve_cache(self, name: str, path: str) -> Iterator[served.ServedCache]:
        """``with store.serve_cache(name, path) as served:`` serves the cache ``name`` writable
        to qemu-img over NBD on the Unix socket ``path``."""
        self.conn.writing.add(name)
        try:
            with served.serve_cache(self.conn.ioctx, self._translated, name, path) as cache:
                yield cache
        finally:
            self.conn.writing.discard(name)

    def _translated(self, exc: Exception) -> Exception:
        return connection.translated_error(exc, self.conn.shut_out)
