"""systemd's service notification protocol (sd_notify), for ``Type=notify`` units.

A datagram of ``KEY=VALUE`` lines sent to the unix socket named by ``NOTIFY_SOCKET`` (a leading
``@`` names an abstract socket). Without ``NOTIFY_SOCKET`` (not under systemd) every call does
nothing. A failed send is logged and ignored: a notification must never stop the daemon.
"""

import logging
import os
import socket
import time

LOG = logging.getLogger(__name__)


def _address():
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return None
    if path.startswith("@"):
        return "\0" + path[1:]
    return path


def notify(*fields):
    """Send ``KEY=VALUE`` fields; True when systemd was told."""
    address = _address()
    if address is None:
        return False
    message = "\n".join(fields).encode()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(message)
    except OSError as exc:
        LOG.warning("Could not notify systemd (%s): %s", fields[0] if fields else "", exc)
        return False
    return True


def ready(status=None):
    return notify("READY=1", *(["STATUS=%s" % status] if status else []))


def stopping(status=None):
    return notify("STOPPING=1", *(["STATUS=%s" % status] if status else []))


def watchdog():
    return notify("WATCHDOG=1")


def watchdog_interval():
    """Seconds between two WATCHDOG=1 pings (half the unit's WatchdogSec=), or None.

    systemd sets WATCHDOG_USEC, and WATCHDOG_PID when the pings must come from one process.
    """
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        seconds = int(usec) / 1e6
    except ValueError:
        return None
    return seconds / 2 if seconds > 0 else None


class Watchdog:
    """Pings systemd's watchdog (WatchdogSec=) while ``healthy()``; without pings systemd
    kills and restarts the service."""

    def __init__(self, healthy):
        self.healthy = healthy
        self.interval = watchdog_interval()
        self._last = None

    def tick(self, most):
        """Ping when due; returns how long the caller may wait before the next tick."""
        if self.interval is None:
            return most
        now = time.monotonic()
        if (self._last is None or now - self._last >= self.interval) and self.healthy():
            watchdog()
            self._last = now
        return min(most, self.interval)
