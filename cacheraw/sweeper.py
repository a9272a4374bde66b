"""The sweep: from the list of every image and every cache, what notifications missed, what a
crash left unfinished, what can be retried, and the caches of deleted images (held back by a
breaker when most of them read as gone at once).
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Dict, List, Protocol, Set, Tuple

from oslo_utils import timeutils

from cacheraw import converter
from cacheraw import exception
from cacheraw import metrics
from cacheraw import properties
from cacheraw import removal
from cacheraw import wants
from cacheraw.properties import ERROR
from cacheraw.properties import STATUS
from cacheraw.properties import Status

LOG = logging.getLogger(__name__)


class Core(Protocol):
    """What the sweep asks of the core (cacheraw.cacher.Cacher)."""
    conf: Any
    images: Any
    store: Any
    enqueue: Callable[[str], bool]

    def request(self, image: dict) -> bool:
        ...

    def fix_store_property(self, image: dict) -> None:
        ...

    def forget(self, image_id: str) -> None:
        ...


class Sweeper:
    """One sweep; ``confirmed`` (an operator's command) removes orphaned caches even when the
    breaker would hold them back."""

    def __init__(self, core: Core, confirmed: bool = False):
        self.core = core
        self.confirmed = confirmed
        self.conf = core.conf
        self.images = core.images
        self.store = core.store
        # The room for new caches (the pool) and downloads (conversion_dir), asked once a sweep.
        self._available: Dict[exception.Room, int] = {}

    def purge_orphans(self) -> Tuple[int, List[str]]:
        """Remove the caches of images that no longer exist and the trashed caches whose
        clones are gone. Returns (orphans removed, names purged from the trash)."""
        return self._remove_orphans(set()), self.store.purge_trash()

    def sweep(self) -> int:
        """Queue every image that wants a cache and lacks one; remove orphaned caches. Returns
        the number of images queued."""
        seen = set()
        queued = 0
        for hidden in (False, True):
            for image in self.images.list(os_hidden=str(hidden).lower()):
                seen.add(image["id"])
                try:
                    queued += bool(self._sweep_image(image))
                except exception.CephBlocklisted:
                    raise
                except exception.CacherawError as exc:
                    LOG.warning("Image %s: sweep failed: %s", image["id"], exc)
        removed = self._remove_orphans(seen)
        purged = removal.purge_trash(self.store)
        LOG.info("Sweep: %d images queued, %d orphaned caches removed, %d purged from trash",
                 queued, removed, len(purged))
        return queued

    def _sweep_image(self, image: dict) -> bool:
        if not wants.wants_cache(image) or not properties.valid_id(image["id"]):
            if image.get("status") == "active":
                self.core.fix_store_property(image)
            return False
        # A raw image's Error of an earlier version becomes NotNeeded (request() writes it).
        if image.get(STATUS) == Status.ERROR and not properties.needs_no_cache(image):
            return self._retry_due(image) or self._space_back(image)
        return self.core.request(image)

    def _space_back(self, image: dict) -> bool:
        """Queue an image refused for want of space (NotEnoughSpace, in the pool or in
        conversion_dir) once there is room for it (and count that room as taken for the rest of
        this sweep)."""
        refused = exception.NotEnoughSpace.parse(image.get(ERROR))
        if refused is None:
            return False
        room, need = refused
        if room not in self._available:
            self._available[room] = (
                self.store.available_space() if room == exception.Room.POOL
                else converter.free_bytes(self.conf.converter.conversion_dir))
        if need > self._available[room]:
            return False
        self._available[room] -= need
        LOG.info("Image %s: the %s has room for its %s again: retrying", image["id"], room.value,
                 "cache" if room == exception.Room.POOL else "download")
        return bool(self.core.enqueue(image["id"]))

    def _retry_due(self, image: dict) -> bool:
        attempt = wants.transient_attempt(image)
        if attempt is None or attempt >= self.conf.worker.error_retries:
            return False
        delay = min(self.conf.worker.error_retry_delay * 2 ** (attempt - 1),
                    self.conf.worker.error_retry_max_delay)
        updated = timeutils.parse_isotime(image["updated_at"])
        if timeutils.delta_seconds(updated, timeutils.utcnow(with_timezone=True)) < delay:
            return False
        LOG.info("Image %s: retrying after a temporary failure (attempt %d)", image["id"],
                 attempt + 1)
        self.core.enqueue(image["id"])
        return True

    def _remove_orphans(self, seen: Set[str]) -> int:
        caches = self.store.list_caches()
        gone = []
        for name in caches:
            image_id = properties.image_id_of(name)
            if image_id is None or image_id in seen:
                continue
            try:
                if self._is_gone(image_id):
                    gone.append(image_id)
            except exception.CacherawError as exc:
                LOG.warning("Image %s: could not tell whether it is gone: %s", image_id, exc)
        if self._breaker_open(len(gone), len(caches)):
            return 0
        removed = 0
        for image_id in gone:
            try:
                LOG.info("Image %s is gone: removing its orphaned cache", image_id)
                self.core.forget(image_id)
                removed += 1
            except exception.CephBlocklisted:
                raise
            except exception.CacherawError as exc:
                # One cache that cannot be removed now does not stop the sweep.
                LOG.warning("Image %s: could not remove its orphaned cache: %s", image_id, exc)
        return removed

    def _is_gone(self, image_id: str) -> bool:
        try:
            return self.images.get(image_id).get("status") in properties.DELETED_STATUSES
        except exception.ImageNotFound:
            return True

    def _breaker_open(self, gone: int, caches: int) -> bool:
        """Whether to hold back the removal of ``gone`` orphaned caches among ``caches``: a
        service user that lost its view of the images (a role or policy change) reads them
        all as gone at once."""
        worker = self.conf.worker
        held = not self.confirmed and gone >= worker.orphan_breaker_min \
            and gone > worker.orphan_breaker_ratio * caches
        metrics.orphan_breaker(held)
        if held:
            LOG.error("Sweep: the image API says the images of %d of the %d caches in pool %s "
                      "are gone: removing none of them, as when the service user lost its role "
                      "or view of the images. Mend that, or remove them with 'cacheraw-manage "
                      "reconcile'", gone, caches, self.store.pool)
        return held
