"""The daemon: listens to image events, runs a bounded pool of conversions and sweeps.

Stopping: the first SIGTERM (or SIGINT) stops the listener, lets running conversions finish
within [worker] shutdown_timeout, then aborts the rest (their partial caches are removed and their
images left Queued for the next start); a second one stops at once.
"""

from __future__ import annotations

import collections
import logging
import os
import signal
import threading
import time
from types import FrameType
from typing import Any, Callable, Deque, Dict, List, Optional, Set

from oslo_config import cfg

from cacheraw import __version__
from cacheraw import converter
from cacheraw import core
from cacheraw import exception
from cacheraw import messaging
from cacheraw import metrics
from cacheraw import sdnotify
from cacheraw.cacher import SHUTDOWN
from cacheraw.cacher import Cacher
from cacheraw.ceph import store
from cacheraw.qemu.job import Job

LOG = logging.getLogger(__name__)

# How long a stopping worker waits for a sweep in progress (it holds no lock and writes nothing
# that the next sweep would not redo).
SWEEP_STOP_TIMEOUT = 30


class WorkQueue:
    """A FIFO of image ids that holds each id once, whether waiting or running."""

    def __init__(self) -> None:
        self._ids: Deque[str] = collections.deque()
        self._held: Set[str] = set()
        self._cond = threading.Condition()
        self._closed = False

    def put(self, image_id: str) -> bool:
        with self._cond:
            if self._closed or image_id in self._held:
                return False
            self._held.add(image_id)
            self._ids.append(image_id)
            self._cond.notify()
            return True

    def get(self) -> Optional[str]:
        """The next id, or None once the queue is closed."""
        with self._cond:
            while not self._ids and not self._closed:
                self._cond.wait()
            return None if self._closed else self._ids.popleft()

    def done(self, image_id: str) -> None:
        with self._cond:
            self._held.discard(image_id)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def __len__(self) -> int:
        return len(self._ids)


class Worker:

    def __init__(self, conf: cfg.ConfigOpts):
        self.conf = conf
        self.store = store.CephStore(conf)
        self.queue = WorkQueue()
        self.jobs: Dict[str, Job] = {}
        self._jobs_lock = threading.Lock()
        self._stopping = threading.Event()
        self._signals = 0
        self._threads: List[threading.Thread] = []
        self.listener: Any = None
        self.cacher: Optional[Cacher] = None

    def start(self) -> None:
        LOG.info("cacheraw-worker %s starting (pool %s, notification pool %s, %d conversions "
                 "at once)", __version__, self.conf.ceph.pool, self.conf.notifications.pool,
                 self.conf.worker.max_concurrent_conversions)
        metrics.serve(self.conf)
        metrics.watch_queue(self.queue)
        self.store.connect()
        for name in converter.clean_conversion_dir(self.conf.converter.conversion_dir,
                                              in_use=self.store.is_locked):
            LOG.info("Removed %s, left in %s by a conversion that did not end", name,
                     self.conf.converter.conversion_dir)
        self.cacher = built = core.build(self.conf, self.store, enqueue=self.queue.put,
                                         cancel=self.cancel)
        for n in range(self.conf.worker.max_concurrent_conversions):
            self._spawn("converter-%d" % n, self._convert_forever, built)
        self._spawn("sweeper", self._sweep_forever, built)
        self.listener = messaging.build_listener(self.conf, built.on_event)
        self.listener.start()
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        LOG.info("cacheraw-worker %s started", __version__)
        sdnotify.ready("listening on exchange %s" % self.conf.notifications.exchange)

    def _spawn(self, name: str, target: Callable[[Cacher], None],
               cacher: Cacher) -> None:
        thread = threading.Thread(target=target, args=(cacher,), name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _convert_forever(self, cacher: Cacher) -> None:
        while True:
            image_id = self.queue.get()
            if image_id is None:
                return
            job = Job(image_id)
            with self._jobs_lock:
                self.jobs[image_id] = job
            try:
                cacher.cache(image_id, job)
            except exception.Transient as exc:
                LOG.warning("Image %s: caching failed, the sweep retries it: %s", image_id, exc)
                metrics.error(exc)
            except Exception:  # noqa: BLE001 - the sweep finds the image again
                LOG.exception("Image %s: caching failed", image_id)
                metrics.error("internal")
            finally:
                with self._jobs_lock:
                    self.jobs.pop(image_id, None)
                self.queue.done(image_id)

    def _sweep_forever(self, cacher: Cacher) -> None:
        interval = self.conf.worker.sweep_interval
        while not self._stopping.is_set():
            try:
                cacher.sweep()
                metrics.swept()
            except exception.Transient as exc:
                LOG.warning("Sweep failed, the next one tries again: %s", exc)
                metrics.error(exc)
            except Exception:  # noqa: BLE001 - the next sweep tries again
                LOG.exception("Sweep failed")
                metrics.error("internal")
            if not interval:
                return
            self._stopping.wait(interval)

    def cancel(self, image_id: str, reason: exception.ConversionAborted) -> None:
        with self._jobs_lock:
            job = self.jobs.get(image_id)
        if job is not None:
            LOG.info("Image %s: stopping its conversion: %s", image_id, reason)
            job.cancel(reason)

    def _on_signal(self, signum: int, frame: Optional[FrameType]) -> None:
        self._signals += 1
        if self._signals > 1:
            LOG.warning("Second signal %d: stopping at once", signum)
            os._exit(1)
        LOG.info("Signal %d: stopping", signum)
        self._stopping.set()

    def wait(self) -> int:
        """Run until a signal (exit status 0) or until Ceph refuses this worker's client
        (blocklisted: exit status 1, so that systemd starts it again with a new client)."""
        watchdog = sdnotify.Watchdog(self._converters_alive)
        while not self._stopping.wait(watchdog.tick(1)):
            if self.store.blocklisted.is_set():
                LOG.error("Ceph blocklisted this worker's client: stopping so that a new "
                          "worker starts with a new client")
                break
        self.stop()
        return 1 if self.store.blocklisted.is_set() else 0

    def _converters_alive(self) -> bool:
        return all(t.is_alive() for t in self._threads if t.name.startswith("converter-"))

    def stop(self) -> None:
        sdnotify.stopping("finishing running conversions")
        self._stopping.set()
        if self.listener is not None:
            self.listener.stop()
            self.listener.wait()
        self.queue.close()
        deadline = time.monotonic() + self.conf.worker.shutdown_timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        with self._jobs_lock:
            running = list(self.jobs.values())
        for job in running:
            job.cancel(SHUTDOWN)
        for thread in self._threads:
            thread.join(SWEEP_STOP_TIMEOUT if thread.name == "sweeper" else None)
        if not any(thread.is_alive() for thread in self._threads):
            self.store.close()  # never under a thread that still uses it
        LOG.info("cacheraw-worker %s stopped", __version__)

