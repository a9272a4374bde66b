"""The options for oslo-config-generator (entry point ``oslo.config.opts``: ``cacheraw``)."""

import itertools

from cacheraw.conf import MODULES


def list_opts():
    return list(itertools.chain.from_iterable(module.list_opts() for module in MODULES))
