"""The lifecycle of a RAW cache: decide, queue, convert, publish, remove.

The image API is the durable record: ``Queued`` is written before a notification is acknowledged,
and the sweep finds again whatever a crash, a restart or an outage left unfinished. A RADOS lock
per image makes sure only one worker, on any controller, converts an image at a time.

The Cacher is what the daemon and cacheraw-manage ask: it decides here what an image's event
asks for, and hands the conversion (cacheraw.conversion), the removal (cacheraw.removal) and the
sweep (cacheraw.sweeper) to the modules that hold them.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable, List, MutableMapping, Optional, Tuple

import cachetools

from cacheraw import conversion
from cacheraw import exception
from cacheraw import identical
from cacheraw import properties
from cacheraw import removal
from cacheraw import sweeper
from cacheraw import wants
from cacheraw.properties import ERROR
from cacheraw.properties import STATUS
from cacheraw.properties import URL
from cacheraw.properties import Status
from cacheraw.qemu.job import Job

LOG = logging.getLogger(__name__)

# Why a conversion stopped when its worker stops: the image is left Queued.
SHUTDOWN = exception.WorkerStopping("worker stopping")


class Cacher:
    """One pool's caches: what each image's event asks for, and the entry to its conversion,
    its removal and the sweep."""

    def __init__(self, conf: Any, images: Any, store: Any, converter: Any,
                 enqueue: Optional[Callable[[str], bool]] = None,
                 cancel: Optional[Callable[[str, exception.ConversionAborted], None]] = None):
        self.conf = conf
        self.images = images
        self.store = store
        self.converter = converter
        self.enqueue = enqueue or (lambda image_id: False)
        self.cancel = cancel or (lambda image_id, reason: None)
        self._fsid: Optional[str] = None
        # Events of one image are handled one at a time (they arrive on several threads).
        self._event_locks = [threading.Lock() for _ in range(64)]
        self._property_problems = PropertyProblems()
        self._finder: Optional[identical.Finder] = None

    @property
    def fsid(self) -> str:
        if self._fsid is None:
            self._fsid = self.store.fsid()
        return self._fsid

    @property
    def finder(self) -> identical.Finder:
        """Finds a cached image with the same data ([converter] share_identical)."""
        if self._finder is None:
            self._finder = identical.Finder(self.conf.converter.share_identical, self.images,
                                            self.cache_valid)
        return self._finder

    def cache_url(self, image_id: str) -> str:
        return properties.cache_url(self.fsid, self.store.pool, image_id)

    def cache_valid(self, image: dict) -> bool:
        return (image.get(STATUS) == Status.CACHED and image.get(URL) == self.cache_url(image["id"])
                and self.store.has_protected_snap(properties.cache_name(image["id"])))

    # -- what the image asks for

    def on_event(self, event_type: str, image_id: str, payload: Optional[dict] = None) -> None:
        """A notification: decide from the image's current state, never the event alone. An
        image.update that shows the image exactly as this worker last wrote it tells nothing
        new: the image is not read again for it."""
        if not properties.valid_id(image_id):
            LOG.warning("Ignoring %s for an image id that is not a UUID: %r", event_type, image_id)
            return
        with self._event_locks[hash(image_id) % len(self._event_locks)]:
            self._on_event(event_type, image_id, payload)

    def _on_event(self, event_type: str, image_id: str, payload: Optional[dict]) -> None:
        if event_type == "image.update" and self.images.shows_own_write(image_id, payload):
            LOG.debug("Image %s: %s of our own write", image_id, event_type)
            return
        # Even image.delete is only a hint: a forged or replayed one must not remove the cache
        # of a live image, so the image API has the last word.
        try:
            image = self.images.get(image_id)
        except exception.ImageNotFound:
            LOG.info("Image %s is gone", image_id)
            self.forget(image_id)
            return
        if image.get("status") in properties.DELETED_STATUSES:
            LOG.info("Image %s is %s", image_id, image["status"])
            self.forget(image_id)
            return
        if event_type == "image.delete":
            LOG.warning("Image %s: ignoring image.delete: the image API still has the image "
                        "(status %s)", image_id, image.get("status"))
            return
        self._property_problems.warn(image)
        try:
            self.request(image)
        except exception.ImageNotFound:
            # Deleted since it was read (a scratch image of cacheraw-manage check, an upload
            # deleted at once): its image.delete does the rest.
            LOG.info("Image %s is gone", image_id)

    def request(self, image: dict) -> bool:
        """Mark an image that wants a cache Queued and queue it; True when newly queued here.
        A missing or wrong ``store`` is set in the same write as the status, if any."""
        image_id = image["id"]
        store = wants.store_fix(image)
        wanted, only_if_absent, queue = self._decide(image)
        if wanted:
            try:
                written = self.images.update(image_id, dict(wanted, **store),
                                             only_if_absent=only_if_absent)
            except exception.ImageUpdateRefused as exc:
                if wanted.get(STATUS) not in (Status.QUEUED, Status.NOT_NEEDED):
                    raise
                LOG.warning("Image %s: not cached: the image API refuses its status: %s",
                            image_id, exc)
                if store:
                    self.fix_store_property(image)
                return False
            if store and written.get("store") != store["store"]:
                written = self.images.update(image_id, store)  # Queued by another worker
            if wanted.get(STATUS) == Status.QUEUED and written.get(STATUS) == Status.QUEUED:
                LOG.info("Image %s: queued", image_id)
        elif store:
            written = self.images.update(image_id, store)
        if store:
            LOG.info("Image %s: store = %s", image_id, store["store"])
            image.update(written)
        return bool(queue and self.enqueue(image_id))

    def _decide(self, image: dict) -> Tuple[Optional[dict], Optional[str], bool]:
        """What an image that may want a cache needs: (properties to write or None, the
        property that must be absent for that write, whether to queue the image)."""
        if not wants.wants_cache(image):
            return None, None, False
        if properties.needs_no_cache(image):
            if any(image.get(k) != v for k, v in wants.NOT_NEEDED_PROPS.items()):
                LOG.info("Image %s: no cache needed: %s", image["id"], wants.RAW_REASON)
                return dict(wants.NOT_NEEDED_PROPS), None, False
            return None, None, False
        refusal = wants.refusal(self.conf, image)
        if refusal:
            if image.get(STATUS) != Status.ERROR or image.get(ERROR) != refusal:
                LOG.info("Image %s: not cached: %s", image["id"], refusal)
                return wants.error_props(refusal), None, False
            return None, None, False
        status = image.get(STATUS)
        if status == Status.ERROR:
            return None, None, False
        if status == Status.CACHED:
            if self.cache_valid(image):
                return None, None, False
            LOG.warning("Image %s: Cached but its cache is missing in Ceph", image["id"])
        if status not in (Status.QUEUED, Status.CACHING, Status.CACHED):
            return {STATUS: Status.QUEUED, ERROR: None}, STATUS, True
        # Queued or Caching: unfinished, by a worker that runs (its lock makes ours a no-op)
        # or by one that died.
        return None, None, True

    def fix_store_property(self, image: dict) -> None:
        """Set ``store`` to where the image's data lives, when it is missing or wrong."""
        store = wants.store_fix(image)
        if store:
            LOG.info("Image %s: store = %s", image["id"], store["store"])
            image.update(self.images.update(image["id"], store))

    # -- the conversion, the removal, the sweep

    def cache(self, image_id: str, job: Optional[Job] = None,
              force: bool = False) -> conversion.Outcome:
        """Convert one image under its lease. Returns what happened, an Outcome."""
        return conversion.Conversion(self, image_id, job, force).run()

    def forget(self, image_id: str) -> None:
        """The image is deleted (the image API says so): stop its conversion here and remove
        its cache, under its lease."""
        removal.forget(self.store, image_id, self.cancel)

    def sweep(self, confirmed: bool = False) -> int:
        """The sweep; ``confirmed`` (an operator's command) removes orphaned caches even when
        the breaker would hold them back."""
        return sweeper.Sweeper(self, confirmed).sweep()

    def purge_orphans(self) -> Tuple[int, List[str]]:
        return sweeper.Sweeper(self, confirmed=True).purge_orphans()


class PropertyProblems:
    """Warns about an image's invalid extension properties (cacheraw.properties) when they
    change, not at each of the events that the daemon's own updates cause."""

    REMEMBERED = 4096

    def __init__(self) -> None:
        self._last: MutableMapping[str, Tuple[str, ...]] = cachetools.LRUCache(
            maxsize=self.REMEMBERED)
        self._lock = threading.Lock()

    def warn(self, image: dict) -> None:
        found = tuple(properties.problems(image))
        with self._lock:
            before = self._last.pop(image["id"], ())
            self._last[image["id"]] = found
        if found == before:
            return
        for problem in found:
            LOG.warning("Image %s: %s", image["id"], problem)
