"""What a consumer checks before it clones an image's RAW cache instead of using the image.

The Cinder volume driver and the Nova image backend ask the same two questions: do the image's
properties say that its cache is finished (status ``Cached``, a ``cache_raw_url`` naming this
image's cache), and does Ceph agree (the consumer's own cluster, a pool that exists, a
protected ``snap``)? Any other answer means "use the image the upstream way": a cache can make
a volume create or a boot faster, never make it fail. Each consumer connects to Ceph with its
own host's helpers and hands the connection in; this module imports no Ceph binding.
"""

from __future__ import annotations

import collections
from typing import Callable, ContextManager, Mapping, Optional

from oslo_log import log as logging

from cacheraw import properties

LOG = logging.getLogger(__name__)

# The cache of one image, as its cache_raw_url names it: rbd://<fsid>/<pool>/<name>/snap.
Cache = collections.namedtuple("Cache", "image_id fsid pool name snapshot url")


def cached(image_id: str, props: Mapping, consumer: str) -> Optional[Cache]:
    """The cache that ``props`` (an image's properties) say is finished, else None.

    ``consumer`` names what is being made ("volume <id>"), for the log.
    """
    url = props.get(properties.URL)
    if props.get(properties.STATUS) != properties.Status.CACHED or url is None:
        return None
    parsed = properties.parse_cache_url(url)
    if parsed is None or parsed[2] != image_id:
        LOG.warning("Image %s: cache_raw_url %.200r does not name this image's cache; "
                    "creating %s without it", image_id, url, consumer)
        return None
    fsid, pool, _ = parsed
    return Cache(image_id, fsid, pool, properties.cache_name(image_id), properties.CACHE_SNAP,
                 url)


def protected_snap_size(cluster, cache: Cache,
                        open_snap: Callable[[object], ContextManager]) -> Optional[int]:
    """Size of the cache's snapshot when Ceph confirms it, else None: the cache is in another
    cluster than ``cluster`` (a connected ``rados.Rados``), in no pool of it, or its snapshot is
    not protected (a cache being made or being removed).

    ``open_snap(ioctx)`` opens the cache's snapshot read-only in the cache's pool, with the
    consumer's own helper. Ceph's errors reach the caller.
    """
    if cluster.get_fsid() != cache.fsid:
        LOG.info("Cache %s/%s is in another Ceph cluster (%s)", cache.pool, cache.name,
                 cache.fsid)
        return None
    # Opening a missing pool would be retried by some consumers for seconds.
    if not cluster.pool_exists(cache.pool):
        LOG.info("Cache %s/%s: this cluster has no pool %s", cache.pool, cache.name, cache.pool)
        return None
    with cluster.open_ioctx(cache.pool) as ioctx, open_snap(ioctx) as snap:
        if not snap.is_protected_snap(cache.snapshot):
            LOG.info("Cache %s/%s: its snapshot %s is not protected", cache.pool, cache.name,
                     cache.snapshot)
            return None
        return snap.size()
