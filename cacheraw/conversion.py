"""One image's conversion under its lease: read the image again, decide whether there is anything
to make, make the cache (cacheraw.making) and record on the image what happened. Every write and
removal is fenced by the lease: a worker that cannot prove it holds it touches nothing.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Optional, Protocol, Tuple, Union

from cacheraw import exception
from cacheraw import identical
from cacheraw import making
from cacheraw import metrics
from cacheraw import properties
from cacheraw import removal
from cacheraw import stall
from cacheraw import wants
from cacheraw.properties import ERROR
from cacheraw.properties import SIZE
from cacheraw.properties import STATUS
from cacheraw.properties import URL
from cacheraw.properties import Status
from cacheraw.qemu.job import Job

LOG = logging.getLogger(__name__)

LOST_LOCK = exception.LockLost("lost the conversion lock")


class Outcome(properties.StrEnum):
    """What a conversion (Cacher.cache()) ended with."""
    CACHED = "cached"
    SHARED = "shared"  # cached from the cache of an image with the same data
    ERROR = "error"
    ABORTED = "aborted"
    DELETED = "deleted"
    BUSY = "busy"
    SKIPPED = "skipped"


class Core(making.Core, Protocol):
    """What a conversion asks of the core (cacheraw.cacher.Cacher)."""

    @property
    def finder(self) -> identical.Finder:
        ...

    def cache_url(self, image_id: str) -> str:
        ...


class Conversion:
    """The conversion of one image, from taking its lease to releasing it."""

    def __init__(self, core: Core, image_id: str, job: Optional[Job] = None,
                 force: bool = False):
        self.core = core
        self.conf = core.conf
        self.images = core.images
        self.store = core.store
        self.image_id = image_id
        self.job = job or Job(image_id)
        self.force = force  # a forced recache makes an independent cache

    def run(self) -> Outcome:
        """Convert the image under its lease: what happened."""
        try:
            lock = self.store.conversion_lock(self.image_id,
                                              on_lost=lambda: self.job.cancel(LOST_LOCK))
            with lock as lease:
                try:
                    outcome = self._leased(lease)
                except exception.LockLost as exc:
                    LOG.warning("Image %s: stopped: %s; leaving it to the lock's holder or the "
                                "sweep", self.image_id, exc)
                    outcome = Outcome.ABORTED
                return metrics.ended(outcome)
        except exception.LockBusy:
            LOG.debug("Image %s: another worker is caching it", self.image_id)
            return Outcome.BUSY
        except exception.CephBlocklisted as exc:
            # Another worker took the lease over and fenced this one: it restarts.
            LOG.error("Image %s: stopped: %s", self.image_id, exc)
            return Outcome.ABORTED

    def _leased(self, lease: Any) -> Outcome:
        image, outcome, attempt = self._begin(lease)
        if outcome is None and not self.force:
            outcome = self._share(image, lease)
        if outcome is not None:
            return outcome
        began = time.monotonic()
        try:
            used = making.convert(self.core, image, self.job, lease)
        except Exception as exc:  # noqa: BLE001 - every failure ends in a recorded outcome
            return self._failed(exc, attempt, lease)
        LOG.info("Image %s: converted to RAW in %.1f s", self.image_id, time.monotonic() - began)
        metrics.converted(time.monotonic() - began, image.get("size"), used)
        return self._finish(lease, used)

    def _begin(self, lease: Any) -> Tuple[dict, Optional[Outcome], int]:
        """(the image as read under the lease (its id alone when it is gone), an Outcome when
        there is nothing to convert, the number of the temporary failures before)."""
        image_id = self.image_id
        try:
            image = self.images.get(image_id)
        except exception.ImageNotFound:
            removal.remove(self.store, image_id, lease)
            return {"id": image_id}, Outcome.DELETED, 0
        outcome = self._not_converted(image, lease)
        if outcome is not None:
            return image, outcome, 0
        name = properties.cache_name(image_id)
        if not self.force and self.store.has_protected_snap(name):
            if image.get(STATUS) == Status.CACHED and \
                    image.get(URL) == self.core.cache_url(image_id):
                return image, Outcome.SKIPPED, 0
            # Only a finished conversion is snapshotted: the cache is complete, record it.
            LOG.info("Image %s: found a finished cache: recording it", image_id)
            return image, self._finish(lease), 0
        if self.force:
            removal.remove(self.store, image_id, lease)
        elif self.store.remove_partial(name, lease=lease) == "removed":
            LOG.info("Image %s: removed a partial cache", image_id)
        attempt = wants.transient_attempt(image) or 0
        try:
            image = self.images.update(image_id, {STATUS: Status.CACHING, ERROR: None, URL: None,
                                                  SIZE: None}, lease=lease)
        except exception.ImageUpdateRefused as exc:
            self._record_error(exc, lease=lease)
            return image, Outcome.ERROR, attempt
        LOG.info("Image %s: caching", image_id)
        return image, None, attempt

    def _not_converted(self, image: dict, lease: Any) -> Optional[Outcome]:
        """The Outcome of an image that gets no conversion (recorded on it), else None."""
        if not wants.wants_cache(image):
            return Outcome.SKIPPED
        if properties.needs_no_cache(image):
            self._set_fenced(lease, dict(wants.NOT_NEEDED_PROPS))
            return Outcome.SKIPPED
        refusal = wants.refusal(self.conf, image)
        if refusal:
            self._set_fenced(lease, wants.error_props(refusal))
            return Outcome.ERROR
        return None

    def _share(self, image: dict, lease: Any) -> Optional[Outcome]:
        """SHARED (or what recording it ended with) when the cache was made from the cache of
        an image with the same data; None when the image is to be converted."""
        origin = making.share(self.core.conf, self.store, self.core.finder, image, lease)
        if origin is None:
            return None
        outcome = self._finish(lease)
        if outcome != Outcome.CACHED:
            return outcome
        try:
            metrics.shared(self.core.finder.mode, self.store.used_bytes(origin))
        except exception.CacherawError as exc:  # the cache shared went meanwhile
            LOG.debug("Image %s: cannot count the bytes of %s: %s", self.image_id, origin, exc)
        return Outcome.SHARED

    def _failed(self, exc: BaseException, attempt: int, lease: Any) -> Outcome:
        """The outcome of a conversion that raised ``exc``: nothing is touched unless the
        lease still holds; only a partial cache is removed."""
        image_id = self.image_id
        if isinstance(exc, exception.LockLost) or not lease.held():
            LOG.warning("Image %s: conversion stopped without its lock (%s): leaving the image "
                        "and its cache to the lock's holder or the sweep", image_id, exc)
            return Outcome.ABORTED
        if isinstance(exc, (exception.ImageDeleted, exception.ImageNotFound)):
            LOG.info("Image %s was deleted while it was converted", image_id)
            removal.remove(self.store, image_id, lease)
            return Outcome.DELETED
        if isinstance(exc, exception.ConversionAborted):
            LOG.info("Image %s: conversion aborted: %s", image_id, exc)
            self.store.remove_partial(properties.cache_name(image_id), lease=lease)
            if isinstance(exc, exception.WorkerStopping):
                self._set_fenced(lease, {STATUS: Status.QUEUED})
            return Outcome.ABORTED
        if isinstance(exc, exception.CephBlocklisted):
            LOG.error("Image %s: conversion stopped: %s", image_id, exc)
            return Outcome.ABORTED
        error: Union[BaseException, str] = exc
        if not isinstance(exc, exception.CacherawError):
            # A bug of ours: leave no partial cache and tell the operator on the image.
            LOG.error("Image %s: unexpected error while converting", image_id, exc_info=exc)
            error = "internal error: %s: %s" % (type(exc).__name__, exc)
            attempt = 0
        self.store.remove_partial(properties.cache_name(image_id), lease=lease)
        self._record_error(error, attempt + 1, lease)
        return Outcome.ERROR

    def _finish(self, lease: Any, used: Optional[int] = None) -> Outcome:
        """Record the finished (protected) cache on the image."""
        image_id = self.image_id
        name = properties.cache_name(image_id)
        used = self.store.used_bytes(name) if used is None else used
        lease.check()
        stall.point("before-cached")
        try:
            self.images.update(image_id, {STATUS: Status.CACHED,
                                          URL: self.core.cache_url(image_id),
                                          SIZE: str(used), ERROR: None}, lease=lease)
        except exception.ImageNotFound:
            LOG.info("Image %s was deleted while it was cached", image_id)
            removal.remove(self.store, image_id, lease)
            return Outcome.DELETED
        except exception.ImageUpdateRefused as exc:
            # The cache stays (a protected snap is finished): recording it failed for a reason
            # that repeating cannot mend, so the image says so instead of being tried again.
            self._record_error("the image API refused to record the finished cache: %s" % exc,
                               lease=lease)
            return Outcome.ERROR
        LOG.info("Image %s: cached as %s (%d bytes used)", image_id, name, used)
        return Outcome.CACHED

    def _record_error(self, exc: Union[BaseException, str], attempt: int = 1,
                      lease: Any = None) -> None:
        metrics.error(exc)
        if isinstance(exc, exception.Transient):
            message = "temporary failure (attempt %d of %d): %s" % (
                attempt, self.conf.worker.error_retries, exception.one_line(exc))
        else:
            message = exception.one_line(exc)
        LOG.warning("Image %s: caching failed: %s", self.image_id, message)
        self._set_fenced(lease, wants.error_props(message),
                         # never over a cache that another worker finished and recorded
                         only_if=lambda fresh: fresh.get(STATUS) != Status.CACHED)

    def _set_fenced(self, lease: Any, wanted: dict,
                    only_if: Optional[Callable[[dict], bool]] = None) -> None:
        """Write ``wanted`` on the image if ``lease`` still holds; failures are logged (the
        sweep finds the image again)."""
        try:
            if lease is not None:
                lease.check()
            self.images.update(self.image_id, wanted, only_if=only_if, lease=lease)
        except exception.ImageNotFound:
            pass
        except exception.CacherawError as exc:
            LOG.warning("Image %s: could not record %s: %s", self.image_id, wanted, exc)
