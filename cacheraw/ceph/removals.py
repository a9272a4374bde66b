"""Removing caches: at once, to the trash while clones use them, and from the trash once the
last clone is gone."""

from __future__ import annotations

import logging
from typing import Any, Callable, List, Optional

import rados
import rbd

from cacheraw import properties
from cacheraw import stall
from cacheraw.ceph import connection
from cacheraw.ceph.caches import SNAP
from cacheraw.ceph.caches import is_finished
from cacheraw.ceph.caches import snapshots
from cacheraw.ceph.connection import translate_errors

LOG = logging.getLogger(__name__)
# The name of the lock librbd takes on an image's header object (its exclusive lock).
RBD_LOCK_NAME = "rbd_lock"


def drop_snaps(image: Any) -> None:
    for snap in image.list_snaps():
        if image.is_protected_snap(snap["name"]):
            image.unprotect_snap(snap["name"])
        image.remove_snap(snap["name"])


def has_children(image: Any) -> bool:
    """True when the cache's snapshot has clones, in any pool. A clone in a pool our user may
    not read (no ``profile rbd-read-only`` there, docs/install.md: "Ceph caps") counts as a
    clone: the cache waits in the trash rather than being removed under it."""
    if SNAP not in snapshots(image):
        return False
    image.set_snap(SNAP)
    try:
        return bool(list(image.list_children2()))
    except rbd.PermissionError as exc:
        LOG.warning("Cache %s: cannot list its clones (%s): the Ceph user needs "
                    "'profile rbd-read-only' on the pools of the clones; keeping the cache",
                    image.get_name(), exc)
        return True
    finally:
        image.set_snap(None)


class CacheRemovals:
    """Removals of caches on the connection ``conn``, under the image's conversion lease."""

    def __init__(self, conn: connection.Connection) -> None:
        self.conn = conn
        self._retry = conn.retry
        # cacheraw-manage's hook: before_remove(outcome, name) is told of each removal that
        # remove() and purge_trash() are about to make ("trashed", "removed", "purged") or
        # leave ("kept"); when it returns False the cache is left as it is (a dry run).
        self.before_remove: Optional[Callable[[str, str], Any]] = None

    @translate_errors
    def remove(self, name: str, lease: Any = None) -> str:
        """Remove the cache ``name``, finished or not (the delete path and a forced recache,
        under the image's conversion ``lease``, asked before each attempt). A cache with clones
        is moved to the trash (the clones keep working) and purged by purge_trash() once its
        last clone is gone.

        Returns "removed", "trashed" or "absent".
        """
        return self._remove(name, finished_too=True)

    @translate_errors
    def remove_partial(self, name: str, lease: Any = None) -> str:
        """Remove the cache ``name`` only when it is partial (no protected ``snap``: its
        conversion never finished), under the image's conversion ``lease``.

        Returns "removed", "absent" or "finished" (a finished cache, left alone).
        """
        return self._remove(name, finished_too=False)

    def _remove(self, name: str, finished_too: bool) -> str:
        try:
            with self.conn.image(name) as image:
                if not finished_too and is_finished(image):
                    return "finished"
                if has_children(image):
                    if self._may_remove("trashed", name):
                        with self.conn.ioctx() as ioctx:
                            rbd.RBD().trash_move(ioctx, name)
                    return "trashed"
                if not self._may_remove("removed", name):
                    return "removed"
                stall.point("in-removal")
                self._break_stale_locks(image)
                drop_snaps(image)
        except rbd.ImageNotFound:
            return "absent"
        with self.conn.ioctx() as ioctx:
            try:
                rbd.RBD().remove(ioctx, name)
            except rbd.ImageNotFound:
                return "absent"
        return "removed"

    def _may_remove(self, outcome: str, name: str) -> bool:
        return self.before_remove is None or self.before_remove(outcome, name) is not False

    def _break_stale_locks(self, image: Any) -> None:
        """A cache is written only through the writable handle of a worker under the image's
        conversion lease (served to its qemu-img), which the caller holds now: another client's
        lock on it is that of a worker that lost its lease (stalled or gone). librbd breaks it
        and blocklists that client, fencing it (and the qemu-img it serves) off the cache, so
        that the removal need not wait for its watch to time out. Our own client's locks (a
        thread of this worker publishing) are never broken: that would blocklist this
        worker."""
        lockers = image.list_lockers()
        own = set(connection.entity_addresses(self.conn.addresses()))
        for client, cookie, address in (lockers["lockers"] if lockers else []):
            if client == self.conn.client or own & set(connection.entity_addresses(address)):
                self._release_own_lock(image, client, cookie)
                continue
            LOG.info("Breaking the stale lock of %s at %s on %s", client, address,
                     image.get_name())
            image.break_lock(client, cookie)

    def _release_own_lock(self, image: Any, client: str, cookie: str) -> None:
        """A lock of our own client on a cache that no handle of this process writes was left
        by a handle whose close could not release it (the pool was full): unlock it as the
        client that holds it. Breaking it would blocklist this very worker."""
        name = image.get_name()
        if name in self.conn.writing:
            LOG.warning("Not breaking our own lock on %s (%s)", name, client)
            return
        LOG.info("Releasing the lock this worker's client left on %s (%s)", name, client)
        with self.conn.ioctx() as ioctx:
            try:
                ioctx.unlock("rbd_header.%s" % image.id(), RBD_LOCK_NAME, cookie)
            except rados.ObjectNotFound:
                pass  # released meanwhile

    @translate_errors
    def purge_trash(self) -> List[str]:
        """Remove the trashed caches whose clones are all gone, in passes while the last one
        purged some: a cache that shares another's data is a clone of it, so purging it may free
        its parent. Returns their names."""
        purged: List[str] = []
        kept: dict = {}
        done: set = set()
        with self.conn.ioctx() as ioctx:
            freed = True
            while freed:
                freed = False
                for entry in [e for e in rbd.RBD().trash_list(ioctx)
                              if properties.is_cache_name(e["name"]) and e["id"] not in done]:
                    outcome = self._purge_checked(ioctx, entry)
                    if outcome == "kept":
                        kept[entry["id"]] = entry["name"]
                        continue
                    done.add(entry["id"])
                    kept.pop(entry["id"], None)
                    if outcome == "purged":
                        purged.append(entry["name"])
                        freed = True
        for name in kept.values():
            self._may_remove("kept", name)
        return purged

    def _purge_checked(self, ioctx: Any, entry: dict) -> str:
        """"purged", "kept" (clones use it) or "failed" (one cache that cannot be purged does
        not keep the others); nothing else in the trash is touched."""
        try:
            return "purged" if self._purge_one(ioctx, entry) else "kept"
        except connection.TRANSIENT + connection.SHUT_OUT:
            raise
        except (rbd.Error, rados.Error) as exc:
            LOG.warning("Trashed cache %s: cannot purge it: %s: %s", entry["name"],
                        type(exc).__name__, exc)
            return "failed"

    def _purge_one(self, ioctx: Any, entry: dict) -> bool:
        with rbd.Image(ioctx, image_id=entry["id"]) as image:
            if has_children(image):
                return False
            if not self._may_remove("purged", entry["name"]):
                return True
            drop_snaps(image)
        rbd.RBD().trash_remove(ioctx, entry["id"], force=True)
        return True
