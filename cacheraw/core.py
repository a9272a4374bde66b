"""The core as the daemon and cacheraw-manage both run it: one place wires Ceph, the image API
and the converter to the cacher."""

from cacheraw import cacher
from cacheraw import converter
from cacheraw import image_api
from cacheraw import store as ceph_store


def build(conf, store=None, enqueue=None, cancel=None):
    """A Cacher connected to Ceph (``store``, or a new CephStore) and to the image API."""
    store = store or ceph_store.CephStore(conf)
    store.connect()
    return cacher.Cacher(conf, image_api.ImageAPI(conf), store, converter.Converter(conf, store),
                         enqueue=enqueue, cancel=cancel)
