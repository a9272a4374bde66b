"""The lifecycle of a RAW cache: decide, queue, convert, publish, remove.

The image API is the durable record: ``Queued`` is written before a notification is acknowledged,
and the sweep finds again whatever a crash, a restart or an outage left unfinished. A RADOS lock
per image makes sure only one worker, on any controller, converts an image at a time.
"""

import logging
import re
import threading
import time

from oslo_utils import timeutils

from cacheraw import converter as conv
from cacheraw import exception
from cacheraw import identical
from cacheraw import metrics
from cacheraw import properties
from cacheraw import stall
from cacheraw.qemu.job import Job

LOG = logging.getLogger(__name__)

Status = properties.Status
QUEUED, CACHING, CACHED, ERROR = Status.QUEUED, Status.CACHING, Status.CACHED, Status.ERROR
NOT_NEEDED = Status.NOT_NEEDED
STATUS, URL, SIZE, ERROR_PROP = properties.STATUS, properties.URL, properties.SIZE, properties.ERROR
RAW_REASON = "image is already raw; clone it directly"
# What a raw image that asks for a cache says: no cache, and nothing of an earlier one.
NOT_NEEDED_PROPS = {STATUS: NOT_NEEDED, ERROR_PROP: None, URL: None, SIZE: None}
TRANSIENT_RE = re.compile(r"^temporary failure \(attempt (\d+) of (\d+)\)")
# The Error of a cache refused for want of pool space (cacheraw.ceph.space), retried by the sweep
# once the pool has room for it.
NO_SPACE_RE = re.compile(r"^not enough space in pool \S+: need (\d+)")
SHUTDOWN = exception.WorkerStopping("worker stopping")
DELETED = exception.ImageDeleted("image deleted")
LOST_LOCK = exception.LockLost("lost the conversion lock")


class Outcome(properties.StrEnum):
    """What Cacher.cache() ended with."""
    CACHED = "cached"
    SHARED = "shared"  # cached from the cache of an image with the same data
    ERROR = "error"
    ABORTED = "aborted"
    DELETED = "deleted"
    BUSY = "busy"
    SKIPPED = "skipped"


def wants_cache(image):
    """An active image whose cache_raw is true (a value that is not a boolean string, such as
    " True", counts as not set, and is warned about as invalid)."""
    return image.get("status") == "active" and properties.cache_raw(image)


def transient_attempt(image):
    """The attempt number of a transient Error, or None for any other status."""
    if image.get(STATUS) != ERROR:
        return None
    match = TRANSIENT_RE.match(image.get(ERROR_PROP) or "")
    return int(match.group(1)) if match else None


class Cacher:
    # Long: one image's lifecycle (request, convert under the lease, record, remove) in one
    # class, because every step shares the lease, the image API and the store and is short;
    # the sweep (Sweeper), the property warnings (PropertyProblems) and the progress
    # (ProgressPublisher) are classes of their own.

    def __init__(self, conf, images, store, converter, enqueue=None, cancel=None):
        self.conf = conf
        self.images = images
        self.store = store
        self.converter = converter
        self.enqueue = enqueue or (lambda image_id: False)
        self.cancel = cancel or (lambda image_id, reason: None)
        self._fsid = None
        # Events of one image are handled one at a time (they arrive on several threads).
        self._event_locks = [threading.Lock() for _ in range(64)]
        self._property_problems = PropertyProblems()
        self._finder = None

    @property
    def fsid(self):
        if self._fsid is None:
            self._fsid = self.store.fsid()
        return self._fsid

    @property
    def finder(self):
        """Finds a cached image with the same data ([converter] share_identical)."""
        if self._finder is None:
            self._finder = identical.Finder(self.conf.converter.share_identical, self.images,
                                            self.cache_valid)
        return self._finder

    def cache_url(self, image_id):
        return properties.cache_url(self.fsid, self.store.pool, image_id)

    def cache_valid(self, image):
        return (image.get(STATUS) == CACHED and image.get(URL) == self.cache_url(image["id"])
                and self.store.has_protected_snap(properties.cache_name(image["id"])))

    # -- what the image asks for

    def on_event(self, event_type, image_id, payload=None):
        """A notification: decide from the image's current state, never the event alone. An
        image.update that shows the image exactly as this worker last wrote it tells nothing
        new: the image is not read again for it."""
        if not properties.valid_id(image_id):
            LOG.warning("Ignoring %s for an image id that is not a UUID: %r", event_type, image_id)
            return
        with self._event_locks[hash(image_id) % len(self._event_locks)]:
            self._on_event(event_type, image_id, payload)

    def _on_event(self, event_type, image_id, payload):
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

    def request(self, image):
        """Mark an image that wants a cache Queued and queue it; True when newly queued here.
        A missing or wrong ``store`` is set in the same write as the status, if any."""
        image_id = image["id"]
        store = self.store_fix(image)
        wanted, only_if_absent, queue = self._decide(image)
        if wanted:
            try:
                written = self.images.update(image_id, dict(wanted, **store),
                                             only_if_absent=only_if_absent)
            except exception.ImageUpdateRefused as exc:
                if wanted.get(STATUS) not in (QUEUED, NOT_NEEDED):
                    raise
                LOG.warning("Image %s: not cached: the image API refuses its status: %s",
                            image_id, exc)
                if store:
                    self.fix_store_property(image)
                return False
            if store and written.get("store") != store["store"]:
                written = self.images.update(image_id, store)  # Queued by another worker
            if wanted.get(STATUS) == QUEUED and written.get(STATUS) == QUEUED:
                LOG.info("Image %s: queued", image_id)
        elif store:
            written = self.images.update(image_id, store)
        if store:
            LOG.info("Image %s: store = %s", image_id, store["store"])
            image.update(written)
        return bool(queue and self.enqueue(image_id))

    def _decide(self, image):
        """What an image that may want a cache needs: (properties to write or None, the
        property that must be absent for that write, whether to queue the image)."""
        if not wants_cache(image):
            return None, None, False
        if properties.needs_no_cache(image):
            if any(image.get(k) != v for k, v in NOT_NEEDED_PROPS.items()):
                LOG.info("Image %s: no cache needed: %s", image["id"], RAW_REASON)
                return dict(NOT_NEEDED_PROPS), None, False
            return None, None, False
        refusal = self.refusal(image)
        if refusal:
            if image.get(STATUS) != ERROR or image.get(ERROR_PROP) != refusal:
                LOG.info("Image %s: not cached: %s", image["id"], refusal)
                return {STATUS: ERROR, ERROR_PROP: refusal, URL: None, SIZE: None}, None, False
            return None, None, False
        status = image.get(STATUS)
        if status == ERROR:
            return None, None, False
        if status == CACHED:
            if self.cache_valid(image):
                return None, None, False
            LOG.warning("Image %s: Cached but its cache is missing in Ceph", image["id"])
        if status not in (QUEUED, CACHING, CACHED):
            return {STATUS: QUEUED, ERROR_PROP: None}, STATUS, True
        # Queued or Caching: unfinished, by a worker that runs (its lock makes ours a no-op)
        # or by one that died.
        return None, None, True

    def refusal(self, image):
        """Why an image that asks for a cache cannot have one, or None."""
        disk_format = image.get("disk_format")
        allowed = self.conf.converter.allowed_source_formats
        if disk_format not in allowed:
            return "disk_format %s is not converted here (allowed: %s)" % (
                disk_format, ", ".join(allowed))
        return None

    def store_fix(self, image):
        """``{"store": ...}`` when the image's ``store`` is missing or not where its data
        lives, else {}."""
        location = image.get("direct_url") or ""
        store = ("rbd" if location.startswith("rbd://")
                 else "file" if location.startswith("file://") else None)
        if image.get("status") == "active" and store and image.get("store") != store:
            return {"store": store}
        return {}

    def fix_store_property(self, image):
        """Set ``store`` to where the image's data lives, when it is missing or wrong."""
        store = self.store_fix(image)
        if store:
            LOG.info("Image %s: store = %s", image["id"], store["store"])
            image.update(self.images.update(image["id"], store))

    # -- the conversion

    def cache(self, image_id, job=None, force=False):
        """Convert one image under its lease. Returns what happened, an Outcome."""
        job = job or Job(image_id)
        try:
            lock = self.store.conversion_lock(image_id, on_lost=lambda: job.cancel(LOST_LOCK))
            with lock as lease:
                try:
                    outcome = self._cache_leased(image_id, job, force, lease)
                except exception.LockLost as exc:
                    LOG.warning("Image %s: stopped: %s; leaving it to the lock's holder or the "
                                "sweep", image_id, exc)
                    outcome = Outcome.ABORTED
                return metrics.ended(outcome)
        except exception.LockBusy:
            LOG.debug("Image %s: another worker is caching it", image_id)
            return Outcome.BUSY
        except exception.CephBlocklisted as exc:
            # Another worker took the lease over and fenced this one: it restarts.
            LOG.error("Image %s: stopped: %s", image_id, exc)
            return Outcome.ABORTED

    def _cache_leased(self, image_id, job, force, lease):
        image, outcome, attempt = self._begin(image_id, force, lease)
        if outcome is None and not force:  # a forced recache makes an independent cache
            outcome = self._share(image, lease)
        if outcome is not None:
            return outcome
        began = time.monotonic()
        try:
            used = self._convert(image, job, lease)
        except Exception as exc:  # noqa: BLE001 - every failure ends in a recorded outcome
            return self._failed(image_id, exc, attempt, lease)
        LOG.info("Image %s: converted to RAW in %.1f s", image_id, time.monotonic() - began)
        metrics.converted(time.monotonic() - began, image.get("size"), used)
        return self._finish(image_id, lease, used)

    def _begin(self, image_id, force, lease):
        """(the image as read under the lease, an Outcome when there is nothing to convert,
        the number of the temporary failures before)."""
        try:
            image = self.images.get(image_id)
        except exception.ImageNotFound:
            self._remove(image_id, lease)
            return None, Outcome.DELETED, 0
        outcome = self._not_converted(image, lease)
        if outcome is not None:
            return image, outcome, 0
        name = properties.cache_name(image_id)
        if not force and self.store.has_protected_snap(name):
            if image.get(STATUS) == CACHED and image.get(URL) == self.cache_url(image_id):
                return image, Outcome.SKIPPED, 0
            # Only a finished conversion is snapshotted: the cache is complete, record it.
            LOG.info("Image %s: found a finished cache: recording it", image_id)
            return image, self._finish(image_id, lease), 0
        if force:
            self._remove(image_id, lease)
        elif self.store.remove_partial(name, lease=lease) == "removed":
            LOG.info("Image %s: removed a partial cache", image_id)
        attempt = transient_attempt(image) or 0
        try:
            image = self.images.update(image_id, {STATUS: CACHING, ERROR_PROP: None, URL: None,
                                                  SIZE: None}, lease=lease)
        except exception.ImageUpdateRefused as exc:
            self._record_error(image_id, exc, lease=lease)
            return image, Outcome.ERROR, attempt
        LOG.info("Image %s: caching", image_id)
        return image, None, attempt

    def _not_converted(self, image, lease):
        """The Outcome of an image that gets no conversion (recorded on it), else None."""
        if not wants_cache(image):
            return Outcome.SKIPPED
        if properties.needs_no_cache(image):
            self._set_fenced(lease, image["id"], dict(NOT_NEEDED_PROPS))
            return Outcome.SKIPPED
        refusal = self.refusal(image)
        if refusal:
            self._set_fenced(lease, image["id"], {STATUS: ERROR, ERROR_PROP: refusal, URL: None,
                                                  SIZE: None})
            return Outcome.ERROR
        return None

    def _failed(self, image_id, exc, attempt, lease):
        """The outcome of a conversion that raised ``exc``: nothing is touched unless the
        lease still holds; only a partial cache is removed."""
        if isinstance(exc, exception.LockLost) or not lease.held():
            LOG.warning("Image %s: conversion stopped without its lock (%s): leaving the image "
                        "and its cache to the lock's holder or the sweep", image_id, exc)
            return Outcome.ABORTED
        if isinstance(exc, (exception.ImageDeleted, exception.ImageNotFound)):
            LOG.info("Image %s was deleted while it was converted", image_id)
            self._remove(image_id, lease)
            return Outcome.DELETED
        if isinstance(exc, exception.ConversionAborted):
            LOG.info("Image %s: conversion aborted: %s", image_id, exc)
            self.store.remove_partial(properties.cache_name(image_id), lease=lease)
            if isinstance(exc, exception.WorkerStopping):
                self._set_fenced(lease, image_id, {STATUS: QUEUED})
            return Outcome.ABORTED
        if isinstance(exc, exception.CephBlocklisted):
            LOG.error("Image %s: conversion stopped: %s", image_id, exc)
            return Outcome.ABORTED
        if not isinstance(exc, exception.CacherawError):
            # A bug of ours: leave no partial cache and tell the operator on the image.
            LOG.error("Image %s: unexpected error while converting", image_id, exc_info=exc)
            exc = "internal error: %s: %s" % (type(exc).__name__, exc)
            attempt = 0
        self.store.remove_partial(properties.cache_name(image_id), lease=lease)
        self._record_error(image_id, exc, attempt + 1, lease)
        return Outcome.ERROR

    def _finish(self, image_id, lease, used=None):
        """Record the finished (protected) cache on the image."""
        name = properties.cache_name(image_id)
        used = self.store.used_bytes(name) if used is None else used
        lease.check()
        stall.point("before-cached")
        try:
            self.images.update(image_id, {STATUS: CACHED, URL: self.cache_url(image_id),
                                          SIZE: str(used), ERROR_PROP: None}, lease=lease)
        except exception.ImageNotFound:
            LOG.info("Image %s was deleted while it was cached", image_id)
            self._remove(image_id, lease)
            return Outcome.DELETED
        except exception.ImageUpdateRefused as exc:
            # The cache stays (a protected snap is finished): recording it failed for a reason
            # that repeating cannot mend, so the image says so instead of being tried again.
            self._record_error(image_id, "the image API refused to record the finished cache: "
                               "%s" % exc, lease=lease)
            return Outcome.ERROR
        LOG.info("Image %s: cached as %s (%d bytes used)", image_id, name, used)
        return Outcome.CACHED

    def _share(self, image, lease):
        """Make the cache from the cache of a Cached image with the same data, without qemu-img
        ([converter] share_identical; cacheraw.identical). None when there is no such image or
        sharing failed: the image is converted."""
        twin = self.finder.twin(image)
        if twin is None:
            return None
        image_id, name = image["id"], properties.cache_name(image["id"])
        mode = self.finder.mode
        try:
            origin, rbd_id = self.store.clone_cache(properties.cache_name(twin["id"]), name, lease,
                                                    independent=mode == identical.Mode.COPY)
            self.store.publish(name, rbd_id, lease)
        except (exception.CephBlocklisted, exception.LockLost):
            raise
        except exception.CacherawError as exc:
            LOG.warning("Image %s: could not %s the cache of image %s, which has the same data "
                        "(%s): converting it", image_id, mode, twin["id"], exc)
            self.store.remove_partial(name, lease=lease)
            return None
        LOG.info("Image %s: same data as image %s: cache made as a %s of %s@%s, no conversion",
                 image_id, twin["id"], mode, origin, properties.CACHE_SNAP)
        outcome = self._finish(image_id, lease)
        if outcome != Outcome.CACHED:
            return outcome
        try:
            metrics.shared(mode, self.store.used_bytes(origin))
        except exception.CacherawError as exc:  # the cache shared went meanwhile
            LOG.debug("Image %s: cannot count the bytes of %s: %s", image_id, origin, exc)
        return Outcome.SHARED

    @metrics.running
    def _convert(self, image, job, lease):
        fmt = image["disk_format"]
        name = properties.cache_name(image["id"])
        preparer = conv.SourcePreparer(self.conf, self.images, self.store, image, job,
                                       self.locate(image))
        with preparer as source:
            job.check()
            self.converter.inspect(source, fmt)
            try:
                info = self.converter.info(source, fmt, job)
                need = self.converter.data_bytes(source, fmt, job=job,
                                                 bound=info["virtual-size"], info=info)
            except exception.UnreadableImage:
                # qemu-img fails alike on a broken image and on an image deleted while it is
                # read; the worker's own reads fail when the cluster is unreachable.
                self.store.check_reachable()
                source.check()
                raise
            self._check_space(image, need, lease)
            job.check()
            job.on_progress = ProgressPublisher(self.store, lease, need)
            rbd_id = self.store.create(name, info["virtual-size"], lease)
            try:
                with preparer.serve_cache(name) as target:
                    self.converter.convert(source, fmt, target, job)
            finally:
                source.check()  # an image deleted while it was read is no cache
            job.check()
            lease.check()
            stall.point("before-publish")
            self.store.publish(name, rbd_id, lease)
            return self.store.used_bytes(name)

    def locate(self, image):
        """Where qemu-img reads the image in place in our pool, or None when it must be
        downloaded."""
        if image.get("direct_url") == properties.rbd_url(self.fsid, self.store.pool, image["id"]):
            return conv.RBDSource(self.store, image["id"], properties.CACHE_SNAP)
        return None

    def _check_space(self, image, need, lease):
        """Reserve the pool space that the cache will take (NotEnoughSpace when it does not
        fit), after the operator's limit on how much an upload may expand."""
        ratio = self.conf.converter.max_expansion
        if ratio and need > ratio * (image.get("size") or 0):
            raise exception.ExpandsTooMuch(
                "image data of %d bytes once converted is more than [converter] max_expansion "
                "= %g times its upload of %d bytes" % (need, ratio, image.get("size") or 0))
        self.store.reserve(lease, need)

    def _record_error(self, image_id, exc, attempt=1, lease=None):
        metrics.error(exc)
        if isinstance(exc, exception.Transient):
            message = "temporary failure (attempt %d of %d): %s" % (
                attempt, self.conf.worker.error_retries, exception.one_line(exc))
        else:
            message = exception.one_line(exc)
        LOG.warning("Image %s: caching failed: %s", image_id, message)
        self._set_fenced(lease, image_id, {STATUS: ERROR, ERROR_PROP: message, URL: None,
                                           SIZE: None},
                         # never over a cache that another worker finished and recorded
                         only_if=lambda fresh: fresh.get(STATUS) != CACHED)

    def _set_fenced(self, lease, image_id, wanted, only_if=None):
        """Write ``wanted`` on the image if ``lease`` still holds; failures are logged (the
        sweep finds the image again)."""
        try:
            if lease is not None:
                lease.check()
            self.images.update(image_id, wanted, only_if=only_if, lease=lease)
        except exception.ImageNotFound:
            pass
        except exception.CacherawError as exc:
            LOG.warning("Image %s: could not record %s: %s", image_id, wanted, exc)

    # -- removal

    def forget(self, image_id):
        """The image is deleted (the image API says so): stop its conversion here and remove
        its cache, under its lease."""
        self.cancel(image_id, DELETED)
        try:
            with self.store.conversion_lock(image_id) as lease:
                removed = self._remove(image_id, lease) == "removed"
        except exception.LockBusy:
            # Its converter finds the image gone when it publishes, and removes the cache.
            LOG.info("Image %s deleted while another worker converts it", image_id)
            return
        if removed:
            self._purge_freed()

    def _purge_freed(self):
        """A removed cache may have been the last clone of a trashed cache whose data it
        shared: purge that one now rather than at the next sweep."""
        try:
            purged = self.store.purge_trash()
        except exception.CacherawError as exc:
            LOG.warning("Could not purge the trash: %s", exc)
            return
        for name in purged:
            LOG.info("Purged cache %s: its last clone is gone", name)

    def _remove(self, image_id, lease):
        outcome = self.store.remove(properties.cache_name(image_id), lease=lease)
        if outcome == "trashed":
            LOG.info("Image %s: cache has clones; moved to the trash until they are gone",
                     image_id)
        elif outcome == "removed":
            LOG.info("Image %s: cache removed", image_id)
        return outcome

    # -- what notifications missed (Sweeper)

    def sweep(self, confirmed=False):
        """The sweep; ``confirmed`` (an operator's command) removes orphaned caches even when
        the breaker would hold them back."""
        return Sweeper(self, confirmed).sweep()

    def purge_orphans(self):
        return Sweeper(self, confirmed=True).purge_orphans()


class Sweeper:
    """The sweep: from the list of every image and every cache, what notifications missed,
    what a crash left unfinished, what can be retried, and the caches of deleted images."""

    def __init__(self, cacher, confirmed=False):
        self.cacher = cacher
        self.confirmed = confirmed
        self.conf = cacher.conf
        self.images = cacher.images
        self.store = cacher.store
        self._available = None  # the pool's room for new caches, asked once per sweep

    def purge_orphans(self):
        """Remove the caches of images that no longer exist and the trashed caches whose
        clones are gone. Returns (orphans removed, names purged from the trash)."""
        return self._remove_orphans(set()), self.store.purge_trash()

    def sweep(self):
        """Queue every image that wants a cache and lacks one; remove orphaned caches."""
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
        try:
            purged = self.store.purge_trash()
        except exception.CacherawError as exc:
            LOG.warning("Sweep: could not purge the trash: %s", exc)
            purged = []
        for name in purged:
            LOG.info("Purged cache %s: its last clone is gone", name)
        LOG.info("Sweep: %d images queued, %d orphaned caches removed, %d purged from trash",
                 queued, removed, len(purged))
        return queued

    def _sweep_image(self, image):
        if not wants_cache(image) or not properties.valid_id(image["id"]):
            if image.get("status") == "active":
                self.cacher.fix_store_property(image)
            return False
        # A raw image's Error of an earlier version becomes NotNeeded (request() writes it).
        if image.get(STATUS) == ERROR and not properties.needs_no_cache(image):
            return self._retry_due(image) or self._space_back(image)
        return self.cacher.request(image)

    def _space_back(self, image):
        """Queue an image refused for want of space once the pool has room for it (and count
        that room as taken for the rest of this sweep)."""
        match = NO_SPACE_RE.match(image.get(ERROR_PROP) or "")
        if not match:
            return False
        if self._available is None:
            self._available = self.store.available_space()
        need = int(match.group(1))
        if need > self._available:
            return False
        self._available -= need
        LOG.info("Image %s: the pool has room for its cache again: retrying", image["id"])
        return bool(self.cacher.enqueue(image["id"]))

    def _retry_due(self, image):
        attempt = transient_attempt(image)
        if attempt is None or attempt >= self.conf.worker.error_retries:
            return False
        delay = min(self.conf.worker.error_retry_delay * 2 ** (attempt - 1),
                    self.conf.worker.error_retry_max_delay)
        updated = timeutils.parse_isotime(image["updated_at"])
        if timeutils.delta_seconds(updated, timeutils.utcnow(with_timezone=True)) < delay:
            return False
        LOG.info("Image %s: retrying after a temporary failure (attempt %d)", image["id"],
                 attempt + 1)
        self.cacher.enqueue(image["id"])
        return True

    def _remove_orphans(self, seen):
        caches = self.store.list_caches()
        gone = []
        for name in caches:
            image_id = name[:-len(properties.CACHE_SUFFIX)]
            if image_id in seen or not properties.valid_id(image_id):
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
                self.cacher.forget(image_id)
                removed += 1
            except exception.CephBlocklisted:
                raise
            except exception.CacherawError as exc:
                # One cache that cannot be removed now does not stop the sweep.
                LOG.warning("Image %s: could not remove its orphaned cache: %s", image_id, exc)
        return removed

    def _is_gone(self, image_id):
        try:
            return self.images.get(image_id).get("status") in properties.DELETED_STATUSES
        except exception.ImageNotFound:
            return True

    def _breaker_open(self, gone, caches):
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


class PropertyProblems:
    """Warns about an image's invalid extension properties (cacheraw.properties) when they
    change, not at each of the events that the daemon's own updates cause."""

    REMEMBERED = 4096

    def __init__(self):
        self._last = {}
        self._lock = threading.Lock()

    def warn(self, image):
        found = tuple(properties.problems(image))
        with self._lock:
            before = self._last.pop(image["id"], ())
            self._last[image["id"]] = found  # the most recently seen last
            while len(self._last) > self.REMEMBERED:
                del self._last[next(iter(self._last))]
        if found == before:
            return
        for problem in found:
            LOG.warning("Image %s: %s", image["id"], problem)


class ProgressPublisher:
    """Publishes a conversion's progress on its lock object, where any process can read it
    (cacheraw-manage recache --wait), at most every PUBLISH_INTERVAL seconds."""

    PUBLISH_INTERVAL = 1.0

    def __init__(self, store, lease, data_bytes):
        self.store = store
        self.lease = lease
        self.data_bytes = data_bytes
        self._last = 0.0

    def __call__(self, percent):
        now = time.monotonic()
        if now - self._last < self.PUBLISH_INTERVAL and percent < 100:
            return
        self._last = now
        try:
            self.store.set_progress(self.lease, {"percent": percent,
                                                    "data_bytes": self.data_bytes,
                                                    "time": time.time()})
        except exception.CacherawError as exc:
            LOG.debug("Image %s: could not publish progress: %s", self.lease.image_id, exc)
