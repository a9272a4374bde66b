"""The options of cacheraw, one module per group."""

from oslo_config import cfg

from cacheraw.conf import ceph
from cacheraw.conf import converter
from cacheraw.conf import image_api
from cacheraw.conf import metrics
from cacheraw.conf import notifications
from cacheraw.conf import worker

CONF = cfg.CONF

MODULES = (ceph, converter, image_api, metrics, notifications, worker)


def register_opts(conf):
    for module in MODULES:
        module.register_opts(conf)


register_opts(CONF)
