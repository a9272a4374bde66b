"""Cinder's RBD volume driver, creating volumes from an image as a clone of its RAW cache.

Upstream Cinder clones only images whose disk format is raw; a qcow2 image is downloaded,
converted and imported at each volume create. This driver clones ``<pool>/<id>_raw@snap``
instead when the image says its cache is ``Cached`` and Ceph agrees; in every other case it
hands over to the parent's ``clone_image``, so that the volume is made the ordinary way: the
cache can make a create faster, never make it fail.

Operators set, in the backend's section of cinder.conf::

    volume_driver = cacheraw.cinder.driver.CacheRawRBDDriver
"""

from oslo_log import log as logging
from oslo_utils import units

from cinder import exception as cinder_exception
from cinder.volume.drivers import rbd as rbd_driver

from cacheraw import clone_checks
from cacheraw import properties

LOG = logging.getLogger(__name__)

# cacheraw's facts about one image's cache, which a volume (and an image uploaded from it) must
# not inherit: Glance reserves them to cacheraw's service user.
NOT_INHERITED = (properties.STATUS, properties.URL, properties.SIZE, properties.ERROR,
                 properties.STORE)


class CacheRawRBDDriver(rbd_driver.RBDDriver):
    """RBDDriver that clones an image's RAW cache made by cacheraw."""

    def clone_image(self, context, volume, image_location, image_meta, image_service):
        image_props = image_meta.get("properties") or {}
        cache = dict(image_props)
        # The volume's image metadata is made from image_meta after this call.
        for key in NOT_INHERITED:
            image_props.pop(key, None)
        source = self._cache_source(volume, image_meta.get("id"), cache)
        if source is None:
            return super().clone_image(context, volume, image_location, image_meta,
                                       image_service)
        pool, name = source
        LOG.info("Volume %s: cloning the RAW cache %s/%s@%s of image %s", volume.id, pool,
                 name, properties.CACHE_SNAP, image_meta.get("id"))
        try:
            volume_update = self._clone(volume, pool, name, properties.CACHE_SNAP)
        except self.rbd.Error as exc:
            # The cache went between the checks and the clone (a recache, a delete).
            LOG.warning("Image %s: cloning its cache failed (%s); creating volume %s without "
                        "it", image_meta.get("id"), exc, volume.id)
            return super().clone_image(context, volume, image_location, image_meta,
                                       image_service)
        volume_update["provider_location"] = None
        self._resize(volume)
        return volume_update, True

    def _cache_source(self, volume, image_id, props):
        """(pool, cache image) to clone for ``volume``, or None when the cache is not usable."""
        cache = clone_checks.cached(image_id, props, "volume %s" % volume.id)
        if cache is None:
            return None
        try:
            size = self._protected_snap_size(cache)
        except (self.rbd.Error, self.rados.Error, cinder_exception.CinderException) as exc:
            LOG.warning("Image %s: cache %s/%s@%s is not usable (%s); creating volume %s "
                        "without it", image_id, cache.pool, cache.name, cache.snapshot, exc,
                        volume.id)
            return None
        if size is None or size > int(volume.size) * units.Gi:
            LOG.info("Image %s: cache %s/%s is not a protected snapshot of this cluster that "
                     "fits volume %s; creating the volume without it", image_id, cache.pool,
                     cache.name, volume.id)
            return None
        return cache.pool, cache.name

    def _protected_snap_size(self, cache):
        """Size of the cache's snapshot, opened read-only on one connection to the backend's
        cluster; None when the cache is in another cluster, in no pool of this one, or not
        protected."""
        with rbd_driver.RADOSClient(self) as client:
            return clone_checks.protected_snap_size(
                client.cluster, cache, lambda ioctx: rbd_driver.RBDVolumeProxy(
                    self, cache.name, snapshot=cache.snapshot, read_only=True,
                    client=client.cluster, ioctx=ioctx))
