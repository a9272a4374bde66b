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
        source = None
        if self._cache_can_serve(volume, image_meta.get("id")):
            source = self._cache_source(volume, image_meta.get("id"), cache)
        if source is not None:
            volume_update = self._clone_cache(volume, image_meta.get("id"), *source)
            if volume_update is not None:
                return volume_update, True
        return super().clone_image(context, volume, image_location, image_meta, image_service)

    def _cache_can_serve(self, volume, image_id):
        """False for a volume type a clone of the cache cannot be: a replicated one. Ceph
        mirrors no clone whose parent is not mirrored, and the cache is not."""
        if not self._is_replicated_type(volume.volume_type):
            return True
        LOG.info("Volume %s: its type is replicated; creating it without the cache of image "
                 "%s", volume.id, image_id)
        return False

    def _clone_cache(self, volume, image_id, pool, name):
        """The volume update of ``volume`` made as a clone of the cache, resized to the volume;
        None when that failed and the half-made clone is removed: the volume is then created
        without the cache. Raises the failure only when the clone cannot be removed."""
        LOG.info("Volume %s: cloning the RAW cache %s/%s@%s of image %s", volume.id, pool,
                 name, properties.CACHE_SNAP, image_id)
        try:
            volume_update = self._clone(volume, pool, name, properties.CACHE_SNAP)
            volume_update["provider_location"] = None
            self._resize(volume)
            return volume_update
        except Exception as exc:  # the cache must never be why a volume create fails
            expected = (self.rbd.Error, self.rados.Error, cinder_exception.CinderException)
            # A cache removed between the checks and the clone, a volume type the clone
            # cannot take, a resize that failed: anything else is logged with its traceback.
            LOG.warning("Volume %s: creating it as a clone of the cache of image %s failed "
                        "(%s: %s); creating it without the cache", volume.id, image_id,
                        type(exc).__name__, exc, exc_info=not isinstance(exc, expected))
            if not self._remove_half_made_clone(volume):
                raise
        return None

    def _remove_half_made_clone(self, volume):
        """Removes what a failed clone left under the volume's name (the parent's own
        delete_volume: a missing image is already removed); False when that failed."""
        try:
            self.delete_volume(volume)
        except Exception as exc:
            LOG.error("Volume %s: its half-made clone could not be removed (%s: %s)",
                      volume.id, type(exc).__name__, exc)
            return False
        return True

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
