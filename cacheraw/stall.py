"""Test-only stall points: a process started with ``CACHERAW_TEST_STALL_AT=<point>[,<point>]``
in its environment stops itself (SIGSTOP) the first time it reaches each named point, as a paused
VM or a long pause would stop it there; the fencing tests resume it with SIGCONT. Without the
variable (always, outside the tests) a point does nothing.

The points: ``before-publish`` (qemu-img ended, the cache not yet published), ``in-publish``
(``snap`` created, not yet protected), ``in-removal`` (a cache opened for removal, not yet
removed), ``before-cached`` (the lease checked, ``Cached`` not yet written).
"""

from __future__ import annotations

import logging
import os
import signal
import threading

LOG = logging.getLogger(__name__)

VARIABLE = "CACHERAW_TEST_STALL_AT"
_reached: set[str] = set()
_lock = threading.Lock()


def point(name: str) -> None:
    wanted = os.environ.get(VARIABLE)
    if not wanted or name not in wanted.split(","):
        return
    with _lock:
        if name in _reached:
            return
        _reached.add(name)
    LOG.warning("Stall point %s: stopping this process (%s is set)", name, VARIABLE)
    os.kill(os.getpid(), signal.SIGSTOP)
    LOG.warning("Stall point %s: resumed", name)
