"""How the data of a cache is made, under the conversion's lease: converted by qemu-img from the
image (through cacheraw.converter), or shared from the cache of an image with the same data
(cacheraw.identical). Both end with the cache published (its protected snapshot); what the image
then says is cacheraw.conversion's business.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any, Iterator, Optional, Protocol

from cacheraw import converter
from cacheraw import exception
from cacheraw import identical
from cacheraw import metrics
from cacheraw import properties
from cacheraw import stall
from cacheraw.qemu.job import Job

LOG = logging.getLogger(__name__)


class Core(Protocol):
    """What making a cache asks of the core (cacheraw.cacher.Cacher)."""
    conf: Any
    images: Any
    store: Any
    converter: Any

    @property
    def fsid(self) -> str:
        ...


@metrics.running
def convert(core: Core, image: dict, job: Job, lease: Any) -> int:
    """Convert the image into its new cache and publish it: the bytes the cache uses."""
    fmt = image["disk_format"]
    name = properties.cache_name(image["id"])
    store = core.store
    preparer = converter.SourcePreparer(core.conf, core.images, store, image, job,
                                        locate(core, image))
    with preparer as source:
        job.check()
        core.converter.inspect(source, fmt)
        with judged(source):
            info = core.converter.info(source, fmt, job)
            need = core.converter.data_bytes(source, fmt, job=job, bound=info["virtual-size"],
                                             info=info)
        check_space(core.conf, store, image, need, lease)
        job.check()
        job.on_progress = ProgressPublisher(store, lease, need)
        rbd_id = store.create(name, info["virtual-size"], lease)
        try:
            with preparer.serve_cache(name) as target, judged(source, target):
                core.converter.convert(source, fmt, target, job)
        finally:
            source.check()  # an image deleted while it was read is no cache
        job.check()
        lease.check()
        stall.point("before-publish")
        store.publish(name, rbd_id, lease)
        used: int = store.used_bytes(name)
        return used


@contextlib.contextmanager
def judged(source: converter.Source,
           target: Optional[converter.Served] = None) -> Iterator[None]:
    """``with judged(source[, target]):`` around qemu-img's runs: when qemu-img failed or
    refused the image while the worker's own reads (or writes) of Ceph failed under it, the
    image is not at fault: CephUnavailable, retried by the sweep, however brief the outage was.
    qemu-img fails alike on an image deleted while it is read: ImageDeleted then."""
    try:
        yield
    except (exception.UnsafeImage, exception.ConversionFailed) as exc:
        source.check()
        failed = ["reads of the image"] if source.io_failed() else []
        if target is not None and target.io_failed():
            failed.append("writes of the cache")
        if failed:
            raise exception.CephUnavailable("Ceph failed the worker's %s under qemu-img: %s"
                                            % (" and ".join(failed), exc)) from exc
        raise


def locate(core: Core, image: dict) -> Optional[converter.RBDSource]:
    """Where qemu-img reads the image in place in our pool, or None when it must be
    downloaded."""
    if image.get("direct_url") == properties.rbd_url(core.fsid, core.store.pool, image["id"]):
        return converter.RBDSource(core.store, image["id"], properties.CACHE_SNAP)
    return None


def check_space(conf: Any, store: Any, image: dict, need: int, lease: Any) -> None:
    """Reserve the pool space that the cache will take (NotEnoughSpace when it does not fit),
    after the operator's limit on how much an upload may expand."""
    ratio = conf.converter.max_expansion
    if ratio and need > ratio * (image.get("size") or 0):
        raise exception.ExpandsTooMuch(
            "image data of %d bytes once converted is more than [converter] max_expansion "
            "= %g times its upload of %d bytes" % (need, ratio, image.get("size") or 0))
    store.reserve(lease, need)


def share(conf: Any, store: Any, finder: identical.Finder, image: dict,
          lease: Any) -> Optional[str]:
    """Make the cache from the cache of a Cached image with the same data, without qemu-img
    ([converter] share_identical), and publish it: the RBD image whose data it shares. None
    when there is no such image or sharing failed (what it made is removed): the image is
    converted. A copy reserves its room first, as a conversion does (a clone takes none)."""
    twin = finder.twin(image)
    if twin is None:
        return None
    image_id, name = image["id"], properties.cache_name(image["id"])
    mode = finder.mode
    origin: str
    try:
        if mode == identical.Mode.COPY:
            check_space(conf, store, image, store.used_bytes(properties.cache_name(twin["id"]),
                                                             with_parent=True), lease)
        origin, rbd_id = store.clone_cache(properties.cache_name(twin["id"]), name, lease,
                                           independent=mode == identical.Mode.COPY)
        store.publish(name, rbd_id, lease)
    except (exception.CephBlocklisted, exception.LockLost):
        raise
    except exception.CacherawError as exc:
        LOG.warning("Image %s: could not %s the cache of image %s, which has the same data "
                    "(%s): converting it", image_id, mode, twin["id"], exc)
        store.remove_partial(name, lease=lease)
        return None
    LOG.info("Image %s: same data as image %s: cache made as a %s of %s@%s, no conversion",
             image_id, twin["id"], mode, origin, properties.CACHE_SNAP)
    return origin


class ProgressPublisher:
    """Publishes a conversion's progress on its lock object, where any process can read it
    (cacheraw-manage recache --wait), at most every PUBLISH_INTERVAL seconds."""

    PUBLISH_INTERVAL = 1.0

    def __init__(self, store: Any, lease: Any, data_bytes: int):
        self.store = store
        self.lease = lease
        self.data_bytes = data_bytes
        self._last = 0.0

    def __call__(self, percent: float) -> None:
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
