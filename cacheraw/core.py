"""The core as the daemon and cacheraw-manage both run it: one place wires Ceph, the image API
and the converter to the cacher."""

from __future__ import annotations

from typing import Callable, Optional

from oslo_config import cfg

from cacheraw import cacher
from cacheraw import converter
from cacheraw import exception
from cacheraw import image_api
from cacheraw.ceph.store import CephStore


def build(conf: cfg.ConfigOpts, store: Optional[CephStore] = None,
          enqueue: Optional[Callable[[str], bool]] = None,
          cancel: Optional[Callable[[str, exception.ConversionAborted], None]] = None
          ) -> cacher.Cacher:
    """A Cacher on the image API and on Ceph: ``store`` (connected), or a new CephStore
    connected here."""
    if store is None:
        store = CephStore(conf)
        store.connect()
    return cacher.Cacher(conf, image_api.ImageAPI(conf), store, converter.Converter(conf),
                         enqueue=enqueue, cancel=cancel)
