"""The RAW caches: created empty for qemu-img, published (object map, ``snap``, protected) by
the lease that created them, and the facts the rest of cacheraw reads of them."""

from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional, Tuple

import rados
import rbd

from cacheraw import exception
from cacheraw import properties
from cacheraw import stall
from cacheraw.ceph import connection
from cacheraw.ceph.connection import translate_errors

LOG = logging.getLogger(__name__)

SNAP = properties.CACHE_SNAP
# A cache is written without its object map, which is built once when the cache is published:
# updating the map at each first write of an object made conversions ~10% slower (make bench).
DEFERRED_FEATURES = rbd.RBD_FEATURE_OBJECT_MAP | rbd.RBD_FEATURE_FAST_DIFF
# Image metadata: the lease (its cookie) that created the cache, and the one that snapshots it.
CREATED_BY = "cacheraw.created_by"
PUBLISHED_BY = "cacheraw.published_by"
# How far clone_cache() follows a cache that shares another's data to the cache it shares.
MAX_SHARED_DEPTH = 8


def snapshots(image: Any) -> List[str]:
    return [s["name"] for s in image.list_snaps()]


def is_finished(image: Any) -> bool:
    """Whether the open ``image`` has a protected ``snap``: a finished cache (or Glance image)."""
    return SNAP in snapshots(image) and image.is_protected_snap(SNAP)


def live_id(ioctx: Any, name: str) -> Optional[str]:
    """The RBD id of the image ``name`` (not in the trash), or None."""
    try:
        with rbd.Image(ioctx, name, read_only=True) as image:
            return image.id()
    except rbd.ImageNotFound:
        return None


def default_features(cluster: Any) -> Optional[int]:
    """The features the cluster gives new images (None unless it says them as a number)."""
    try:
        return int(cluster.conf_get("rbd_default_features"))
    except (TypeError, ValueError, rados.Error):
        return None


def has_parent(image: Any) -> bool:
    """Whether ``image`` is a clone still (librbd refuses to flatten one that is not)."""
    try:
        image.parent_id()
    except rbd.ImageNotFound:
        return False
    return True


def metadata(image: Any, key: str) -> Optional[str]:
    try:
        return image.metadata_get(key)
    except KeyError:
        return None


class Caches:
    """The caches of the pool, on the connection ``conn``."""

    def __init__(self, conn: connection.Connection) -> None:
        self.conn = conn
        self._retry = conn.retry

    def _default_features(self) -> Optional[int]:
        return default_features(self.conn.connected())

    @translate_errors
    def create(self, name: str, size: int, lease: Any) -> str:
        """Create the empty cache ``name`` for the conversion under ``lease`` (asked before
        each attempt); returns its RBD id. A retry whose earlier attempt created the image but
        lost the answer finds it and recognises it as its own."""
        features = self._default_features()
        with self.conn.ioctx() as ioctx:
            try:
                rbd.RBD().create(ioctx, name, size, old_format=False, features=None
                                 if features is None else features & ~DEFERRED_FEATURES)
            except rbd.ImageExists:
                LOG.info("Cache %s exists already: checking that an earlier attempt of this "
                         "conversion made it", name)
            with rbd.Image(ioctx, name) as image:
                self._claim(image, name, size, lease.cookie)
                return image.id()

    @staticmethod
    def _claim(image: Any, name: str, size: int, cookie: str) -> None:
        """Mark ``image`` as this lease's: it must be new (no snapshot, the size asked, made by
        no other lease); the caller removed any partial cache under this lease before."""
        owner = metadata(image, CREATED_BY)
        if owner not in (None, cookie) or snapshots(image) or image.size() != size:
            raise exception.CephError("cache %s exists and was not made by this conversion"
                                      % name)
        if owner is None:
            image.metadata_set(CREATED_BY, cookie)

    @translate_errors
    def publish(self, name: str, rbd_id: str, lease: Any) -> None:
        """Build the object map that create() left out, snapshot the cache as ``snap`` and
        protect it, on the image that ``lease`` created (by its RBD id, not its name); what this
        lease did already is skipped, a ``snap`` that it did not make is refused."""
        with self.conn.image(image_id=rbd_id) as image:
            if image.get_name() != name or metadata(image, CREATED_BY) != lease.cookie:
                raise exception.CephError("cache %s (id %s) was not created by this conversion"
                                          % (name, rbd_id))
            if SNAP not in snapshots(image):
                missing = (self._default_features() or 0) & DEFERRED_FEATURES & ~image.features()
                if missing:
                    image.update_features(missing, True)
                    image.rebuild_object_map()
                image.metadata_set(PUBLISHED_BY, lease.cookie)
                image.create_snap(SNAP)
            elif metadata(image, PUBLISHED_BY) != lease.cookie:
                raise exception.CephError("cache %s has a snapshot %s that this conversion did "
                                          "not make" % (name, SNAP))
            stall.point("in-publish")
            if not image.is_protected_snap(SNAP):
                image.protect_snap(SNAP)

    # -- a cache made from the cache of an image with the same data (cacheraw.identical)

    @translate_errors
    def clone_cache(self, source: str, target: str, independent: bool = False, *,
                    lease: Any) -> Tuple[str, str]:
        """Make ``target`` from the finished cache ``source@snap`` for the lease ``lease``, in
        RADOS, without qemu-img: a copy-on-write clone that shares its data, or with
        ``independent`` the same clone flattened (every byte copied, no parent left). It is not
        published: a crash before publish() leaves a partial cache. When ``source`` is itself an
        unchanged clone of a live cache, that cache is cloned instead, so that sharing makes no
        chain of clones. A retry whose earlier attempt made the clone (or flattened it) but lost
        the answer goes on from there. Returns the name of the cache cloned and the new cache's
        RBD id."""
        with self.conn.ioctx() as ioctx:
            origin = self._origin(ioctx, source)
            with rbd.Image(ioctx, origin, read_only=True) as parent:
                inherited = metadata(parent, CREATED_BY)
            try:
                rbd.RBD().clone(ioctx, origin, SNAP, ioctx, target,
                                features=self._default_features())
            except rbd.ImageExists:
                LOG.info("Cache %s exists already: checking that an earlier attempt of this "
                         "conversion made it", target)
            with rbd.Image(ioctx, target) as image:
                self._claim_clone(image, target, lease.cookie, inherited)
                if independent and has_parent(image):
                    image.flatten()
                return origin, image.id()

    @staticmethod
    def _claim_clone(image: Any, name: str, cookie: str, inherited: Optional[str]) -> None:
        """Mark the clone ``image`` as this lease's, as _claim() does a new cache. librbd copies
        the parent's metadata into a clone: the mark ``inherited`` of the lease that made the
        parent is no other conversion's claim on this one."""
        owner = metadata(image, CREATED_BY)
        if owner not in (None, inherited, cookie) or snapshots(image):
            raise exception.CephError("cache %s exists and was not made by this conversion"
                                      % name)
        if owner != cookie:
            image.metadata_set(CREATED_BY, cookie)

    def _origin(self, ioctx: Any, name: str) -> str:
        for _ in range(MAX_SHARED_DEPTH):
            with rbd.Image(ioctx, name, snapshot=SNAP, read_only=True) as image:
                try:
                    pool, parent, snap = image.parent_info()
                    parent_id = image.parent_id()
                except rbd.ImageNotFound:
                    return name
            if pool != self.conn.pool or snap != SNAP or not properties.is_cache_name(parent) \
                    or live_id(ioctx, parent) != parent_id:
                return name  # not a cache of ours, or one in the trash
            name = parent
        return name

    @translate_errors
    def sharing(self, name: str) -> dict:
        """Which caches the cache ``name`` shares data with: {"parent": the cache it is a clone
        of, "parent_trashed": whether that one is in the trash, "sharers": the caches cloned
        from it}. Clones that are not caches (volumes) are left out."""
        found: Dict[str, Any] = {"parent": None, "parent_trashed": False, "sharers": []}
        try:
            with self.conn.image(name, snapshot=SNAP, read_only=True) as image:
                found["sharers"] = sorted(
                    c["image"] for c in image.list_children2()
                    if c["pool"] == self.conn.pool and properties.is_cache_name(c["image"]))
                try:
                    pool, parent, _ = image.parent_info()
                    parent_id = image.parent_id()
                except rbd.ImageNotFound:
                    return found
        except rbd.ImageNotFound:
            return found
        if pool == self.conn.pool and properties.is_cache_name(parent):
            found["parent"] = parent
            with self.conn.ioctx() as ioctx:
                found["parent_trashed"] = live_id(ioctx, parent) != parent_id
        return found

    @translate_errors
    def has_protected_snap(self, name: str) -> bool:
        """True when ``name@snap`` exists and is protected: a finished cache or Glance image."""
        try:
            with self.conn.image(name, read_only=True) as image:
                return is_finished(image)
        except rbd.ImageNotFound:
            return False

    @translate_errors
    def read(self, name: str, offset: int, length: int, snapshot: str = SNAP) -> bytes:
        with self.conn.image(name, snapshot=snapshot, read_only=True) as image:
            length = max(0, min(length, image.size() - offset))
            return image.read(offset, length) if length else b""

    @translate_errors
    def used_bytes(self, name: str, snapshot: str = SNAP, with_parent: bool = False) -> int:
        """Bytes allocated to ``name@snapshot``, as ``rbd du`` counts them (whole objects); with
        ``with_parent``, those of the clone's parent under it too (what a flattened copy
        takes)."""
        return self.count_used(name, snapshot, with_parent)

    def count_used(self, name: str, snapshot: str, with_parent: bool = False) -> int:
        used = 0

        def count(offset: int, length: int, exists: bool) -> None:
            nonlocal used
            if exists:
                used += length

        with self.conn.image(name, snapshot=snapshot, read_only=True) as image:
            image.diff_iterate(0, image.size(), None, count, include_parent=with_parent,
                               whole_object=True)
        return used

    @translate_errors
    def cache_facts(self, name: str) -> dict:
        """What Ceph holds for the cache ``name``: exists, protected, used bytes, clones."""
        facts: Dict[str, Any] = {"exists": False, "protected": False, "used": None,
                                 "clones": None}
        try:
            with self.conn.image(name, read_only=True) as image:
                facts["exists"] = True
                facts["protected"] = is_finished(image)
                if not facts["protected"] and SNAP not in snapshots(image):
                    return facts
                image.set_snap(SNAP)
                facts["clones"] = len(list(image.list_children2()))
        except rbd.ImageNotFound:
            return facts
        facts["used"] = self.count_used(name, SNAP)
        return facts

    @translate_errors
    def list_caches(self) -> List[str]:
        with self.conn.ioctx() as ioctx:
            return [n for n in rbd.RBD().list(ioctx) if properties.is_cache_name(n)]
