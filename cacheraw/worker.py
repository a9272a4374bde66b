"""The daemon: listens to image events and runs the caching work."""

import logging
import os
import signal
import threading

from cacheraw import __version__
from cacheraw import messaging
from cacheraw import store as ceph_store

LOG = logging.getLogger(__name__)


class Worker:

    def __init__(self, conf):
        self.conf = conf
        self.store = ceph_store.CephStore(conf)
        self.listener = None
        self._stopping = threading.Event()
        self._signals = 0

    def start(self):
        LOG.info("cacheraw-worker %s starting (pool %s, notification pool %s)",
                 __version__, self.conf.ceph.pool, self.conf.notifications.pool)
        self.store.connect()
        self.listener = messaging.build_listener(self.conf, self.on_event)
        self.listener.start()
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        LOG.info("cacheraw-worker %s started", __version__)

    def on_event(self, event_type, image_id):
        LOG.info("Image %s: %s", image_id, event_type)

    def _on_signal(self, signum, frame):
        self._signals += 1
        if self._signals > 1:
            LOG.warning("Second signal %d: stopping at once", signum)
            os._exit(1)
        LOG.info("Signal %d: stopping", signum)
        self._stopping.set()

    def wait(self):
        while not self._stopping.wait(1):
            pass
        self.stop()
        return 0

    def stop(self):
        if self.listener is not None:
            self.listener.stop()
            self.listener.wait()
        self.store.close()
        LOG.info("cacheraw-worker %s stopped", __version__)
