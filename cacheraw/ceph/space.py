"""Pool space: what a new cache may still take, and the reservations of the conversions that
run, on every worker.

The room of the pool is what it can take before its fullest OSD reaches the ceiling: the
cluster's nearfull ratio, or ``[converter] max_pool_usage`` when lower. ``ceph df``'s MAX AVAIL
is the pool's room up to the full ratio (it counts the replicas, the OSDs' imbalance and the
full ratio); the part between the ceiling and the full ratio is taken off it. A quota of the pool
limits it further.

A conversion reserves the bytes it will write before it creates its cache: one omap entry per
lease on the object ``cacheraw.reservations``, keyed ``<image id>/<lease cookie>`` ({"bytes",
"cookie"}). The room counts, of every other image's entry whose image is locked now, what its
conversion has still to write (its progress on the lock object tells how far it is). A
conversion writes its entry first and counts the others after, so that two workers deciding at
the same moment each see the other (at worst both wait). An entry is removed by its own key when
its lease ends, without reading first, so that an old holder never removes a new holder's entry;
one left by a worker that died counts no more once its lock expired, and the next holder of that
image removes it when it reserves (in the write of its own entry).
"""

from __future__ import annotations

import json
import logging
from typing import Any, Dict, Iterable, Optional, Tuple

import rados

from cacheraw import exception
from cacheraw.ceph import connection
from cacheraw.ceph.connection import translate_errors
from cacheraw.ceph.locks import RadosLocks

LOG = logging.getLogger(__name__)

RESERVATIONS = "cacheraw.reservations"
MAX_ENTRIES = 10000


class PoolSpace:
    """The room of the pool and the reservations, on the connection ``conn``."""

    def __init__(self, conn: connection.Connection, locks: RadosLocks,
                 max_pool_usage: Optional[float] = None) -> None:
        self.conn = conn
        self.locks = locks
        self.max_pool_usage = max_pool_usage
        self._retry = conn.retry

    @translate_errors
    def room(self) -> Tuple[int, str]:
        """(bytes the pool can still take before its ceiling, what limits it)."""
        osd_map = self.conn.mon_json({"prefix": "osd dump"})
        df = self.conn.mon_json({"prefix": "df", "detail": "detail"})
        pool = next((p for p in osd_map["pools"] if p["pool_name"] == self.conn.pool), None)
        stats = next((p["stats"] for p in df["pools"] if p["name"] == self.conn.pool), None)
        if pool is None or stats is None:
            raise exception.CephError("pool %s is not in the cluster's maps" % self.conn.pool)
        nearfull, full = osd_map["nearfull_ratio"], osd_map["full_ratio"]
        ceiling, why = nearfull, "the nearfull ratio %.2f" % nearfull
        if self.max_pool_usage is not None and self.max_pool_usage < nearfull:
            ceiling = self.max_pool_usage
            why = "[converter] max_pool_usage %.2f" % ceiling
        above = max(0.0, full - ceiling) * df["stats"]["total_bytes"] / max(1, pool["size"])
        room = max(0, int(stats["max_avail"] - above))
        quota = self.conn.mon_json({"prefix": "osd pool get-quota", "pool": self.conn.pool})
        if quota.get("quota_max_bytes"):
            left = max(0, quota["quota_max_bytes"] - quota.get("current_num_bytes", 0))
            if left < room:
                return left, "its quota"
        return room, why

    def reserve(self, lease: Any, need: int) -> None:
        """Reserve ``need`` bytes for the conversion under ``lease``, or raise NotEnoughSpace
        (the reservation is not kept) when they do not fit beside the other conversions."""
        earlier = [key for key in self.entries() if image_of(key) == lease.image_id]
        self._write(entry_key(lease.image_id, lease.cookie),
                    {"bytes": int(need), "cookie": lease.cookie}, earlier, lease=lease)
        try:
            room, why = self.room()
            others = self.reserved(but=lease.image_id)
        except exception.CacherawError:
            self.release(lease.image_id, lease.cookie)
            raise
        if need + others > room:
            self.release(lease.image_id, lease.cookie)
            LOG.info("Image %s: pool %s can take %d bytes (limited by %s), %d of them reserved "
                     "by running conversions", lease.image_id, self.conn.pool, room, why, others)
            raise exception.NotEnoughSpace(
                exception.Room.POOL, self.conn.pool, need, max(0, room - others),
                " (limited by %s; %d reserved by running conversions)" % (why, others))

    def available(self) -> int:
        """The bytes a new cache may take now: the room less the reservations."""
        room, _ = self.room()
        return max(0, room - self.reserved())

    @translate_errors
    def _write(self, key: str, entry: dict, earlier: Iterable[str], lease: Any = None) -> None:
        """Write ``entry`` at ``key`` and remove the ``earlier`` entries of its image (of the
        leases before ``lease``, which holds the image's lock now)."""
        with self.conn.ioctx() as ioctx:
            with rados.WriteOpCtx() as op:
                stale = tuple(k for k in earlier if k != key)
                if stale:
                    ioctx.remove_omap_keys(op, stale)
                ioctx.set_omap(op, (key,), (json.dumps(entry).encode(),))
                ioctx.operate_write_op(op, RESERVATIONS)

    @translate_errors
    def entries(self) -> Dict[str, dict]:
        """The reservations by their key (``image_of(key)`` is their image)."""
        with self.conn.ioctx() as ioctx:
            with rados.ReadOpCtx() as op:
                found, _ = ioctx.get_omap_vals(op, "", "", MAX_ENTRIES)
                try:
                    ioctx.operate_read_op(op, RESERVATIONS)
                except rados.ObjectNotFound:
                    return {}
                return {key: _entry(value) for key, value in found}

    def reserved(self, but: Optional[str] = None) -> int:
        """What the running conversions (of images other than ``but``) have still to write."""
        total = 0
        for key, entry in self.entries().items():
            image_id = image_of(key)
            if image_id == but or not self.locks.is_locked(image_id):
                continue
            percent = (self.locks.progress(image_id) or {}).get("percent")
            if not isinstance(percent, (int, float)):
                percent = 0
            total += int(entry.get("bytes", 0) * (1 - min(100, max(0, percent)) / 100.0))
        return total

    def release(self, image_id: str, cookie: Optional[str]) -> None:
        """Remove the reservation of the lease ``cookie`` by its key, unread (a later holder's
        stays), or, when ``cookie`` is None (only while the caller's lease holds), every
        reservation of the image."""
        try:
            if cookie is not None:
                self._remove((entry_key(image_id, cookie),))
            else:
                self._remove(tuple(key for key in self.entries() if image_of(key) == image_id))
        except exception.CacherawError as exc:
            LOG.warning("Image %s: could not remove its space reservation: %s", image_id, exc)

    @translate_errors
    def _remove(self, keys: Iterable[str]) -> None:
        if not keys:
            return
        with self.conn.ioctx() as ioctx:
            with rados.WriteOpCtx() as op:
                ioctx.remove_omap_keys(op, keys)
                ioctx.operate_write_op(op, RESERVATIONS)


def entry_key(image_id: str, cookie: str) -> str:
    return "%s/%s" % (image_id, cookie)


def image_of(key: str) -> str:
    """The image of a reservation's key (an entry of an earlier version is keyed by it alone)."""
    return key.partition("/")[0]


def _entry(value: bytes) -> dict:
    try:
        entry = json.loads(value.decode())
    except (UnicodeDecodeError, ValueError):
        return {}
    if not isinstance(entry, dict) or type(entry.get("bytes")) is not int:
        return {}
    return entry
