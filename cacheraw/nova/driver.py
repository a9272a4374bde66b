"""Nova's libvirt driver, creating RBD root disks as clones of an image's RAW cache.

With ``[libvirt] images_type = rbd`` upstream Nova clones only raw images: for a qcow2 image
each compute host downloads it, converts it to RAW and imports the whole of it into RBD for
every instance. This driver's RBD image backend clones ``<pool>/<id>_raw@snap`` instead when
the image says its cache is ``Cached`` and Ceph agrees; in every other case, and on any error,
it hands over to the parent's ``clone``, so that the disk is made the ordinary way: the cache
can make a boot faster, never make it fail.

Nova loads compute drivers from ``nova.virt`` only; operators set, in nova.conf of the compute
hosts::

    [DEFAULT]
    compute_driver = cacheraw.LibvirtDriver

which the shim package ``nova.virt.cacheraw`` (the ``cacheraw-nova`` distribution) maps to
``CacheRawLibvirtDriver`` here.
"""

from oslo_log import log as logging

from nova.storage import rbd_utils
from nova.virt.libvirt import driver as libvirt_driver
from nova.virt.libvirt import imagebackend

from cacheraw import clone_checks

LOG = logging.getLogger(__name__)


class CacheRawRbd(imagebackend.Rbd):
    """The RBD image backend, cloning an image's RAW cache made by cacheraw."""

    def clone(self, context, image_id_or_uri, *args, **kwargs):
        cache = self._usable_cache(context, image_id_or_uri)
        if cache is not None:
            LOG.info("Disk %s: cloning the RAW cache %s/%s@%s of image %s", self.rbd_name,
                     cache.pool, cache.name, cache.snapshot, cache.image_id)
            try:
                return self.driver.clone({"url": cache.url}, self.rbd_name)
            except Exception as exc:  # a cache never makes a boot fail
                # The cache went between the checks and the clone (a recache, a delete).
                LOG.warning("Image %s: cloning its cache failed (%s: %s); creating disk %s "
                            "without it", cache.image_id, type(exc).__name__, exc,
                            self.rbd_name)
        return super().clone(context, image_id_or_uri, *args, **kwargs)

    def _usable_cache(self, context, image_id):
        """The image's cache when its properties and Ceph both confirm it, else None."""
        consumer = "disk %s" % self.rbd_name
        try:
            image = imagebackend.IMAGE_API.get(context, image_id)
            cache = clone_checks.cached(image.get("id"), image.get("properties") or {},
                                        consumer)
            if cache is None:
                return None
            with rbd_utils.RADOSClient(self.driver) as client:
                size = clone_checks.protected_snap_size(
                    client.cluster, cache, lambda ioctx: rbd_utils.rbd.Image(
                        ioctx, cache.name, snapshot=cache.snapshot, read_only=True))
        except Exception as exc:  # a cache never makes a boot fail
            LOG.warning("Image %s: its cache is not usable (%s: %s); creating %s without it",
                        image_id, type(exc).__name__, exc, consumer)
            return None
        return cache if size is not None else None


class CacheRawLibvirtDriver(libvirt_driver.LibvirtDriver):
    """LibvirtDriver whose ``images_type = rbd`` backend is CacheRawRbd."""

    def __init__(self, virtapi, *args, **kwargs):
        super().__init__(virtapi, *args, **kwargs)
        # The backends are chosen from this per-driver dict (imagebackend.Backend).
        self.image_backend.BACKEND["rbd"] = CacheRawRbd
