"""The one connection of a process to the cluster, its handles, and the translation of the
libraries' errors into cacheraw.exception."""

from __future__ import annotations

import configparser
import contextlib
import json
import logging
import os
import re
import threading
from typing import Any, Callable, Iterator, List, Optional

import rados
import rbd
from oslo_config import cfg

from cacheraw import exception
from cacheraw import metrics
from cacheraw import retry
from cacheraw.ceph import lease

LOG = logging.getLogger(__name__)

TRANSIENT = (rados.TimedOut, rados.InterruptedOrTimeoutError, rbd.Timeout)
# What a blocklisted client gets for every request (EBLOCKLISTED is ESHUTDOWN).
SHUT_OUT = (rados.ConnectionShutdown, rbd.ConnectionShutdown)
# One entity address in what get_addrs() says: "[v2:127.0.0.1:0/123,v1:...]" or "1.2.3.4:0/123",
# or with IPv6, "[v2:[fd00::1]:0/123,v1:[fd00::1]:0/123]" (its IP in brackets, as the blocklist
# takes it).
_ADDRESS = re.compile(r"(?:^|[\[,])(?:v[12]:|any:)?"
                      r"(\[[0-9A-Fa-f:.]+(?:%\w+)?\]:\d+/\d+|[^,\[\]/:]+:\d+/\d+)")


def translated_error(exc: BaseException, shut_out: Optional[Callable[[], None]] = None
                     ) -> exception.CacherawError:
    """Our exception for a rados/rbd one; ``shut_out()`` is called when the cluster refuses
    this client (blocklisted)."""
    if isinstance(exc, (rbd.ImageNotFound, rados.ObjectNotFound)):
        return exception.CephNotFound(str(exc))
    if isinstance(exc, (rbd.ImageBusy, rados.ObjectBusy, rbd.ImageHasSnapshots)):
        return exception.CephBusy(str(exc))
    if isinstance(exc, TRANSIENT):
        return exception.CephUnavailable(str(exc))
    if isinstance(exc, SHUT_OUT):
        if shut_out is not None:
            shut_out()
        return exception.CephBlocklisted("the cluster refuses this client (blocklisted): %s"
                                         % (exc or type(exc).__name__))
    return exception.CephError("%s: %s" % (type(exc).__name__, exc))


# The public methods of this package's classes (each has ``conn`` and ``_retry``): rados/rbd
# errors become ours, the transient ones are retried, and a ``lease=`` is asked before every
# attempt. A decorated method never calls another one inside its retry.
translate_errors = retry.boundary(
    (rbd.Error, rados.Error), lambda self, exc, args: translated_error(exc, self.conn.shut_out))


def read_key(keyring_path: str, user: str) -> str:
    """The base64 secret of client.<user> in a keyring file."""
    parser = configparser.ConfigParser()
    try:
        with open(keyring_path) as f:
            parser.read_file(f)
        return parser["client.%s" % user]["key"].strip()
    except (OSError, configparser.Error, KeyError, UnicodeDecodeError) as exc:
        raise exception.ConfigError("cannot read the key of client.%s from keyring %s: %s"
                                    % (user, keyring_path, exc or type(exc).__name__)) from exc


def entity_address(addresses: str) -> Optional[str]:
    """The address ``ip:port/nonce`` that ``osd blocklist add`` takes, from get_addrs()."""
    match = _ADDRESS.search(addresses or "")
    return match.group(1) if match else None


def entity_addresses(addresses: str) -> List[str]:
    """Every address ``ip:port/nonce`` in get_addrs() (or a locker's address), without its
    ``v1:``/``v2:`` type."""
    return _ADDRESS.findall(addresses or "")


class Connection:
    """One connection to the cluster, shared by the threads of a worker (librados is
    thread-safe); connected at the first use."""

    def __init__(self, conf: cfg.ConfigOpts) -> None:
        self.conffile = conf.ceph.conf
        self.user = conf.ceph.user
        self.keyring = conf.ceph.keyring
        self.pool = conf.ceph.pool
        self.connect_timeout = conf.ceph.connect_timeout
        self.op_timeout = conf.ceph.op_timeout
        self.lock_duration = conf.ceph.lock_duration
        self.renewal_timeout = (conf.ceph.lock_renewal_timeout
                                or lease.default_renewal_timeout(self.lock_duration))
        self.retry = retry.policy(conf, exception.Transient)
        self.cluster: Optional[rados.Rados] = None
        self.client: Optional[str] = None
        self._shared: Optional[rados.Ioctx] = None
        self._shared_lock = threading.Lock()
        self._connect_lock = threading.Lock()  # one cluster handle, whichever thread needs it
        # Set once the cluster refused this client: the process must start again.
        self.blocklisted = threading.Event()
        # The caches this process has open for writing (served to its qemu-img): the RBD locks
        # its client holds on any other cache were left by a handle that could not release them.
        self.writing: set = set()

    def check_config(self) -> None:
        if not os.access(self.conffile, os.R_OK) or not os.path.isfile(self.conffile):
            raise exception.ConfigError("cannot read Ceph configuration file %s" % self.conffile)
        if self.keyring:
            read_key(self.keyring, self.user)
        lease.check_timing(self.lock_duration, self.renewal_timeout)

    def connect(self) -> None:
        self.check_config()
        # No RBD cache for the worker's own handles: it reads each image once (served to
        # qemu-img), and librbd's cache would hold up to 32 MiB per open image.
        conf = {"rados_osd_op_timeout": str(self.op_timeout),
                "rados_mon_op_timeout": str(self.op_timeout), "rbd_cache": "false"}
        if self.keyring:
            conf["keyring"] = self.keyring
        cluster = rados.Rados(conffile=self.conffile, rados_id=self.user, conf=conf)
        try:
            cluster.connect(timeout=self.connect_timeout)
            with cluster.open_ioctx(self.pool):
                pass
        except rados.Error as exc:
            cluster.shutdown()
            raise exception.CephUnavailable(
                "cannot connect to Ceph as client.%s with %s (pool %s): %s"
                % (self.user, self.conffile, self.pool, exc or type(exc).__name__)) from exc
        self.cluster = cluster
        metrics.ceph_connected()
        self.client = "client.%d" % cluster.get_instance_id()
        LOG.info("Connected to Ceph as %s from %s (user client.%s, pool %s)", self.client,
                 self.addresses(), self.user, self.pool)

    def addresses(self) -> str:
        cluster = self.cluster
        if cluster is None:
            return "unknown address"
        try:
            return str(cluster.get_addrs())
        except (rados.Error, AttributeError):
            return "unknown address"

    def address(self) -> Optional[str]:
        """This client's entity address, as another worker would blocklist it."""
        return entity_address(self.addresses())

    def shut_out(self) -> None:
        """The cluster refused this client: it was blocklisted (another worker took over one of
        its leases, or broke one of its locks, or an operator did it). Nothing this process sends
        is accepted any more."""
        if not self.blocklisted.is_set():
            LOG.error("Ceph refuses %s (blocklisted): this worker must restart", self.client)
            self.blocklisted.set()

    def close(self) -> None:
        with self._shared_lock:
            if self._shared is not None:
                self._shared.close()
                self._shared = None
        if self.cluster is not None:
            self.cluster.shutdown()
            self.cluster = None

    def shared_ioctx(self) -> Any:
        """A handle on the pool that lives as long as the connection, for requests whose answer
        may come after their caller stopped waiting (the lease's renewals)."""
        with self._shared_lock:
            if self._shared is None:
                self._shared = self.connected().open_ioctx(self.pool)
            return self._shared

    def connected(self) -> Any:
        """The cluster handle, connected now if it is not yet."""
        if self.cluster is None:
            with self._connect_lock:
                if self.cluster is None:
                    self.connect()
        return self.cluster

    @contextlib.contextmanager
    def ioctx(self) -> Iterator[Any]:
        with self.connected().open_ioctx(self.pool) as ioctx:
            yield ioctx

    @contextlib.contextmanager
    def image(self, name: Optional[str] = None, snapshot: Optional[str] = None,
              read_only: bool = False, image_id: Optional[str] = None) -> Iterator[Any]:
        """An RBD image of the pool, by name or by its RBD id."""
        with self.ioctx() as ioctx:
            kwargs = {"image_id": image_id} if image_id is not None else {}
            with rbd.Image(ioctx, name, snapshot=snapshot, read_only=read_only,
                           **kwargs) as image:
                yield image

    def mon_json(self, command: dict) -> Any:
        """A monitor command's JSON answer (CephError when it fails)."""
        ret, out, err = self.connected().mon_command(
            json.dumps(dict(command, format="json")), b"", timeout=self.op_timeout)
        if ret != 0:
            raise exception.CephError("ceph %s failed (%d): %s" % (command["prefix"], ret, err))
        return json.loads(out) if out else None
