"""The Ceph cluster: the images' RBD data, the RAW caches and the conversion locks.

Only this module imports rados and rbd. Every handle is a ``with``; every library error is
translated into cacheraw.exception at this boundary. Snapshot work is idempotent: creating what
exists or removing what is gone is "already done".
"""

import configparser
import contextlib
import errno
import functools
import json
import logging
import os
import socket
import struct
import threading
import time

import rados
import rbd

from cacheraw import exception
from cacheraw import lease as lease_mod
from cacheraw import metrics
from cacheraw import nbd
from cacheraw import properties
from cacheraw import retry

LOG = logging.getLogger(__name__)

SNAP = properties.CACHE_SNAP
CACHE_SUFFIX = properties.CACHE_SUFFIX
LOCK_PREFIX = "cacheraw.lock."
LOCK_NAME = "cacheraw"
# cls_lock: renew the lock only when this cookie still holds it (ENOENT otherwise), never
# take it anew as MAY_RENEW (0x1) would after it was lost.
LOCK_FLAG_MUST_RENEW = 0x2
LOCK_TYPE_EXCLUSIVE = 1
# Extended attributes of a lock object: who holds it, and how far its conversion is.
HOLDER_XATTR = "cacheraw.holder"
PROGRESS_XATTR = "cacheraw.progress"
# A cache is written without its object map, which is built once when the cache is published:
# updating the map at each first write of an object made conversions ~10% slower (make bench).
DEFERRED_FEATURES = rbd.RBD_FEATURE_OBJECT_MAP | rbd.RBD_FEATURE_FAST_DIFF
# How far clone_cache() follows a cache that shares another's data to the cache it shares.
MAX_SHARED_DEPTH = 8

_TRANSIENT = (rados.TimedOut, rados.InterruptedOrTimeoutError, rbd.Timeout)
# What a blocklisted client gets for every request (EBLOCKLISTED is ESHUTDOWN).
_SHUT_OUT = (rados.ConnectionShutdown, rbd.ConnectionShutdown)


def _trashed_caches(ioctx):
    """The RBD trash entries that are caches of ours; nothing else in the trash is touched."""
    return [e for e in rbd.RBD().trash_list(ioctx) if is_cache_name(e["name"])]


def _live_id(ioctx, name):
    """The RBD id of the image ``name`` (not in the trash), or None."""
    try:
        with rbd.Image(ioctx, name, read_only=True) as image:
            return image.id()
    except rbd.ImageNotFound:
        return None


def translated_error(exc, shut_out=None):
    """Our exception for a rados/rbd one; ``shut_out()`` is called when the cluster refuses
    this client (blocklisted)."""
    if isinstance(exc, (rbd.ImageNotFound, rados.ObjectNotFound)):
        return exception.CephNotFound(str(exc))
    if isinstance(exc, (rbd.ImageBusy, rados.ObjectBusy, rbd.ImageHasSnapshots)):
        return exception.CephBusy(str(exc))
    if isinstance(exc, _TRANSIENT):
        return exception.CephUnavailable(str(exc))
    if isinstance(exc, _SHUT_OUT):
        if shut_out is not None:
            shut_out()
        return exception.CephBlocklisted("the cluster refuses this client (blocklisted): %s"
                                         % (exc or type(exc).__name__))
    return exception.CephError("%s: %s" % (type(exc).__name__, exc))


def translate_errors(func):
    """Turn rados/rbd exceptions into ours, and retry the transient ones (only here, at the
    public methods: a decorated method never calls another one inside its retry)."""
    @functools.wraps(func)
    def wrapper(self, *args, **kwargs):
        return self._retry(translated, self, *args, **kwargs)

    @functools.wraps(func)
    def translated(self, *args, **kwargs):
        try:
            return func(self, *args, **kwargs)
        except (rbd.Error, rados.Error) as exc:
            raise translated_error(exc, self.shut_out) from exc
    return wrapper


def _encode_string(text):
    data = text.encode()
    return struct.pack("<I", len(data)) + data


def _encoded(*fields):
    """Ceph's versioned encoding (ENCODE_START(1, 1)) of the fields, already encoded."""
    body = b"".join(fields)
    return struct.pack("<BBI", 1, 1, len(body)) + body


def assert_locked_op(cookie):
    """cls_lock's assert_locked input: the exclusive lock LOCK_NAME held with ``cookie``."""
    return _encoded(_encode_string(LOCK_NAME), struct.pack("<B", LOCK_TYPE_EXCLUSIVE),
                    _encode_string(cookie), _encode_string(""))


def lockers_in_info(reply):
    """The number of live lockers in cls_lock's get_info reply (the OSD drops the expired)."""
    if len(reply) < 10:
        raise exception.CephError("short reply from cls_lock get_info")
    return struct.unpack_from("<I", reply, 6)[0]


# The names of caches are facts of the image properties' spec (cacheraw.properties).
valid_id = properties.valid_id
cache_name = properties.cache_name
is_cache_name = properties.is_cache_name


def read_key(keyring_path, user):
    """The base64 secret of client.<user> in a keyring file."""
    parser = configparser.ConfigParser()
    try:
        with open(keyring_path) as f:
            parser.read_file(f)
        return parser["client.%s" % user]["key"].strip()
    except (OSError, configparser.Error, KeyError, UnicodeDecodeError) as exc:
        raise exception.ConfigError("cannot read the key of client.%s from keyring %s: %s"
                                    % (user, keyring_path, exc or type(exc).__name__)) from exc


class ServedSnapshot:
    """A snapshot opened read-only and read for cacheraw.nbd: each read is an aio_read; every
    CHECK_EVERY bytes (and at check()) its header object is looked up, because a read-only handle
    reads on, as zeros, after the image is removed."""

    CHECK_EVERY = 256 * 1024 * 1024

    def __init__(self, ioctx, image):
        self.ioctx = ioctx
        self.image = image
        self.header = "rbd_header.%s" % image.id()
        self.export = None
        self.gone = False
        self._unchecked = 0

    def qemu_file(self):
        return self.export.qemu_file()

    def check(self):
        """Raise CephNotFound when the image was removed."""
        try:
            self.ioctx.stat(self.header)
        except rados.ObjectNotFound as exc:
            self.gone = True
            raise exception.CephNotFound("image removed while it was read: %s" % exc) from exc
        except rados.Error as exc:
            raise translated_error(exc) from exc

    def read(self, offset, length, done):
        self._unchecked += length
        try:
            if self.gone:
                raise exception.CephNotFound("image removed")
            if self._unchecked >= self.CHECK_EVERY:
                self._unchecked = 0
                self.check()
            self.image.aio_read(offset, length, lambda completion, data: done(
                data, 0 if data is not None else -completion.get_return_value() or errno.EIO))
        except (exception.CacherawError, rbd.Error, rados.Error) as exc:
            LOG.warning("Read of %d bytes at %d from %s failed: %s", length, offset,
                        self.image.get_name(), exc)
            done(None, errno.EIO)


class RadosLocks:
    """The conversion locks: one RADOS object ``cacheraw.lock.<id>`` per image in the pool,
    locked exclusively with cls_lock. cacheraw.lease drives them; every worker on every
    controller shares them."""

    def __init__(self, store):
        self._store = store

    @contextlib.contextmanager
    def _ioctx(self):
        try:
            with self._store._ioctx() as ioctx:
                yield ioctx
        except (rados.Error, rbd.Error) as exc:
            raise translated_error(exc, self._store.shut_out) from exc

    def take(self, image_id, cookie, duration):
        """Raises LockBusy when another holds the lock."""
        self._store._retry(self._take, image_id, cookie, duration)

    def _take(self, image_id, cookie, duration):
        with self._ioctx() as ioctx:
            try:
                ioctx.lock_exclusive(LOCK_PREFIX + image_id, LOCK_NAME, cookie,
                                     desc="cacheraw conversion", duration=duration)
            except (rados.ObjectBusy, rados.ObjectExists) as exc:
                raise exception.LockBusy("image %s is being cached by another worker"
                                         % image_id) from exc
            self._record_holder(ioctx, image_id, cookie)

    def renew(self, image_id, cookie, duration):
        """Once, never retried (the lease's renewer is the retry). LockLost when the lock is
        not held with ``cookie`` any more: MUST_RENEW never takes a lost lock again."""
        with self._ioctx() as ioctx:
            try:
                ioctx.lock_exclusive(LOCK_PREFIX + image_id, LOCK_NAME, cookie,
                                     desc="cacheraw conversion", duration=duration,
                                     flags=LOCK_FLAG_MUST_RENEW)
            except (rados.ObjectNotFound, rados.ObjectBusy, rados.ObjectExists) as exc:
                raise exception.LockLost("image %s: the conversion lock is not ours any more"
                                         % image_id) from exc

    def release(self, image_id, cookie):
        """Remove the lock object in one operation with the check that ``cookie`` holds it:
        a lock that another worker took meanwhile is never removed."""
        self._store._retry(self._fenced, image_id, cookie, lambda op: op.remove())

    def _fenced(self, image_id, cookie, add):
        with self._ioctx() as ioctx:
            with rados.WriteOpCtx() as op:
                op.execute("lock", "assert_locked", assert_locked_op(cookie))
                add(op)
                try:
                    ioctx.operate_write_op(op, LOCK_PREFIX + image_id)
                except (rados.ObjectNotFound, rados.ObjectBusy) as exc:
                    raise exception.LockLost("image %s: the conversion lock is not ours any "
                                             "more" % image_id) from exc

    def _record_holder(self, ioctx, image_id, cookie):
        """The binding cannot list lockers: the holder says who it is on the lock object (and
        clears a dead holder's progress)."""
        record = {"host": socket.gethostname(), "pid": os.getpid(), "since": int(time.time())}
        try:
            with rados.WriteOpCtx() as op:
                op.execute("lock", "assert_locked", assert_locked_op(cookie))
                op.set_xattr(HOLDER_XATTR, json.dumps(record).encode())
                op.set_xattr(PROGRESS_XATTR, b"")
                ioctx.operate_write_op(op, LOCK_PREFIX + image_id)
        except rados.Error as exc:
            LOG.warning("Image %s: could not record the lock holder: %s", image_id, exc)

    def is_locked(self, image_id):
        """True when some worker holds a live conversion lock on the image (cls_lock's
        get_info: a question, the lock is never taken to find out)."""
        return self._store._retry(self._is_locked, image_id)

    def _is_locked(self, image_id):
        with self._ioctx() as ioctx:
            try:
                _, reply = ioctx.execute(LOCK_PREFIX + image_id, "lock", "get_info",
                                         _encoded(_encode_string(LOCK_NAME)), length=1 << 16)
            except rados.ObjectNotFound:
                return False
        return lockers_in_info(reply) > 0

    def set_progress(self, lease, progress):
        """Publish progress on the lock object, only while ``lease`` holds it."""
        if not lease.held():
            return
        value = json.dumps(progress).encode()
        self._fenced(lease.image_id, lease.cookie, lambda op: op.set_xattr(PROGRESS_XATTR, value))


class OperatorViews:
    """What cacheraw-manage and the operator's checks read of the pool, and the conversion
    locks as the rest of cacheraw asks for them: a part of CephStore (its connection and
    handles), kept apart so that each class reads at a glance."""

    # -- conversion locks, shared by every worker on every controller

    def conversion_lock(self, image_id, on_lost=None):
        """``with store.conversion_lock(image_id) as lease:``: the image's lock, taken (LockBusy
        when another holds it), renewed while the block runs and released after it; ``on_lost``
        is called as soon as it is lost. See cacheraw.lease."""
        return lease_mod.hold(self.locks, image_id, self.lock_duration, on_lost)

    def is_locked(self, image_id):
        return self.locks.is_locked(image_id)

    def lock_holder(self, image_id):
        """Who holds the image's conversion lock ({"host", "pid", "since"}), or None when the
        lock is free: a record left by a holder that died is not a holder."""
        if not self.locks.is_locked(image_id):
            return None
        return self._holder_record(image_id) or {"host": "unknown"}

    @translate_errors
    def _holder_record(self, image_id):
        return self._lock_xattr(image_id, HOLDER_XATTR)

    def set_progress(self, lease, progress):
        """Publish how far the conversion under ``lease`` is, for any reader. Best effort, never
        retried: the conversion must not wait for it."""
        self.locks.set_progress(lease, progress)

    @translate_errors
    def progress(self, image_id):
        """The progress last published by the holder of the image's lock, or None."""
        return self._lock_xattr(image_id, PROGRESS_XATTR)

    def _lock_xattr(self, image_id, key):
        with self._ioctx() as ioctx:
            try:
                value = ioctx.get_xattr(LOCK_PREFIX + image_id, key)
            except (rados.ObjectNotFound, rados.NoData):
                return None
        try:
            record = json.loads(value.decode())
        except (UnicodeDecodeError, ValueError):
            return None
        return record if isinstance(record, dict) else None

    # -- what an operator looks at

    @translate_errors
    def cache_facts(self, name):
        """What Ceph holds for the cache ``name``: exists, protected, used bytes, clones."""
        facts = {"exists": False, "protected": False, "used": None, "clones": None}
        try:
            with self._image(name, read_only=True) as image:
                facts["exists"] = True
                if SNAP not in [s["name"] for s in image.list_snaps()]:
                    return facts
                facts["protected"] = image.is_protected_snap(SNAP)
                image.set_snap(SNAP)
                facts["clones"] = len(list(image.list_children2()))
        except rbd.ImageNotFound:
            return facts
        facts["used"] = self._used_bytes(name, SNAP)
        return facts

    @translate_errors
    def sharing(self, name):
        """Which caches the cache ``name`` shares data with: {"parent": the cache it is a clone
        of, "parent_trashed": whether that one is in the trash, "sharers": the caches cloned
        from it}. Clones that are not caches (volumes) are left out."""
        found = {"parent": None, "parent_trashed": False, "sharers": []}
        try:
            with self._image(name, snapshot=SNAP, read_only=True) as image:
                found["sharers"] = sorted(
                    c["image"] for c in image.list_children2()
                    if c["pool"] == self.pool and is_cache_name(c["image"]))
                try:
                    pool, parent, _ = image.parent_info()
                    parent_id = image.parent_id()
                except rbd.ImageNotFound:
                    return found
        except rbd.ImageNotFound:
            return found
        if pool == self.pool and is_cache_name(parent):
            found["parent"] = parent
            with self._ioctx() as ioctx:
                found["parent_trashed"] = _live_id(ioctx, parent) != parent_id
        return found

    def check_rbd_caps(self):
        """Do, on a scratch image, each RBD step a cache needs; the scratch image goes in every
        outcome. Raises CacherawError naming the step that failed."""
        name = properties.scratch_name()
        step = "connect"
        try:
            with self._ioctx() as ioctx:
                step = "create an RBD image"
                rbd.RBD().create(ioctx, name, 1 << 20, old_format=False)
                with rbd.Image(ioctx, name) as image:
                    for step, action in (("create a snapshot", image.create_snap),
                                         ("protect a snapshot", image.protect_snap),
                                         ("unprotect a snapshot", image.unprotect_snap),
                                         ("remove a snapshot", image.remove_snap)):
                        action(SNAP)
                step = "remove an RBD image"
                rbd.RBD().remove(ioctx, name)
                step = "take a lock"
                cookie = lease_mod.new_cookie()
                ioctx.lock_exclusive(name, LOCK_NAME, cookie, duration=10)
                ioctx.unlock(name, LOCK_NAME, cookie)
                ioctx.remove_object(name)
        except (rados.Error, rbd.Error) as exc:
            self._remove_scratch(name)
            raise exception.CephError("client.%s cannot %s in pool %s: %s" % (
                self.user, step, self.pool, exc or type(exc).__name__)) from exc
        return name

    def _remove_scratch(self, name):
        try:
            with self._ioctx() as ioctx:
                try:
                    with rbd.Image(ioctx, name) as image:
                        self._drop_snap(image)
                    rbd.RBD().remove(ioctx, name)
                except rbd.ImageNotFound:
                    pass
                try:
                    ioctx.remove_object(name)
                except rados.ObjectNotFound:
                    pass
        except (rados.Error, rbd.Error) as exc:
            LOG.warning("Could not remove the scratch image %s: %s", name, exc)


class CacheRemovals:
    """Removing caches: at once, to the trash while clones use them, and from the trash once the
    last clone is gone. A part of CephStore (its connection, handles and ``before_remove`` hook),
    kept apart so that each class reads at a glance."""

    # cacheraw-manage's hook: before_remove(outcome, name) is told of each removal that
    # remove() and purge_trash() are about to make ("trashed", "removed", "purged") or leave
    # ("kept"); when it returns False the cache is left as it is (a dry run).
    before_remove = None

    @translate_errors
    def remove(self, name):
        """Remove the cache ``name``, finished or not (the delete path and a forced recache,
        under the image's conversion lease). A cache with clones is moved to the trash (the
        clones keep working) and purged by purge_trash() once its last clone is gone.

        Returns "removed", "trashed" or "absent".
        """
        return self._remove(name, finished_too=True)

    @translate_errors
    def remove_partial(self, name):
        """Remove the cache ``name`` only when it is partial (no protected ``snap``: its
        conversion never finished), under the image's conversion lease.

        Returns "removed", "absent" or "finished" (a finished cache, left alone).
        """
        return self._remove(name, finished_too=False)

    def _remove(self, name, finished_too):
        try:
            with self._image(name) as image:
                if not finished_too and self._protected(image):
                    return "finished"
                if self._has_children(image):
                    if self._may_remove("trashed", name):
                        with self._ioctx() as ioctx:
                            rbd.RBD().trash_move(ioctx, name)
                    return "trashed"
                if not self._may_remove("removed", name):
                    return "removed"
                self._break_stale_locks(image)
                self._drop_snap(image)
        except rbd.ImageNotFound:
            return "absent"
        with self._ioctx() as ioctx:
            try:
                rbd.RBD().remove(ioctx, name)
            except rbd.ImageNotFound:
                return "absent"
        return "removed"

    def _may_remove(self, outcome, name):
        return self.before_remove is None or self.before_remove(outcome, name) is not False

    @staticmethod
    def _protected(image):
        return SNAP in [s["name"] for s in image.list_snaps()] and image.is_protected_snap(SNAP)

    @staticmethod
    def _has_children(image):
        """True when the cache's snapshot has clones, in any pool. A clone in a pool our user
        may not read (no ``profile rbd-read-only`` there, README: "Ceph caps") counts as a
        clone: the cache waits in the trash rather than being removed under it."""
        if SNAP not in [s["name"] for s in image.list_snaps()]:
            return False
        image.set_snap(SNAP)
        try:
            return bool(list(image.list_children2()))
        except rbd.PermissionError as exc:
            LOG.warning("Cache %s: cannot list its clones (%s): the Ceph user needs "
                        "'profile rbd-read-only' on the pools of the clones; keeping the cache",
                        image.get_name(), exc)
            return True
        finally:
            image.set_snap(None)

    def _break_stale_locks(self, image):
        """A cache is written only by a qemu-img under the image's conversion lease, which the
        caller holds now: another client's lock on it is that of a qemu-img that was killed, or
        of one whose worker lost its lease (stalled or gone). librbd breaks it and blocklists
        that client, fencing it off the cache, so that the removal need not wait for its watch
        to time out. Our own client's locks (a thread of this worker publishing) are never
        broken: that would blocklist this worker."""
        lockers = image.list_lockers()
        for client, cookie, address in (lockers["lockers"] if lockers else []):
            if client == self._client or (address and address in str(self._addresses())):
                LOG.warning("Not breaking our own lock on %s (%s)", image.get_name(), client)
                continue
            LOG.info("Breaking the stale lock of %s at %s on %s", client, address,
                     image.get_name())
            image.break_lock(client, cookie)

    @staticmethod
    def _drop_snap(image):
        for snap in image.list_snaps():
            if image.is_protected_snap(snap["name"]):
                image.unprotect_snap(snap["name"])
            image.remove_snap(snap["name"])

    @translate_errors
    def purge_trash(self):
        """Remove the trashed caches whose clones are all gone, in passes while the last one
        purged some: a cache that shares another's data is a clone of it, so purging it may free
        its parent. Returns their names."""
        purged, kept, done = [], {}, set()
        with self._ioctx() as ioctx:
            freed = True
            while freed:
                freed = False
                for entry in [e for e in _trashed_caches(ioctx) if e["id"] not in done]:
                    outcome = self._purge_checked(ioctx, entry)
                    if outcome == "kept":
                        kept[entry["id"]] = entry["name"]
                        continue
                    done.add(entry["id"])
                    kept.pop(entry["id"], None)
                    if outcome == "purged":
                        purged.append(entry["name"])
                        freed = True
        for name in kept.values():
            self._may_remove("kept", name)
        return purged

    def _purge_checked(self, ioctx, entry):
        """"purged", "kept" (clones use it) or "failed" (one cache that cannot be purged does
        not keep the others)."""
        try:
            return "purged" if self._purge_one(ioctx, entry) else "kept"
        except _TRANSIENT:
            raise
        except (rbd.Error, rados.Error) as exc:
            LOG.warning("Trashed cache %s: cannot purge it: %s: %s", entry["name"],
                        type(exc).__name__, exc)
            return "failed"

    def _purge_one(self, ioctx, entry):
        with rbd.Image(ioctx, image_id=entry["id"]) as image:
            if self._has_children(image):
                return False
            if not self._may_remove("purged", entry["name"]):
                return True
            self._drop_snap(image)
        rbd.RBD().trash_remove(ioctx, entry["id"], force=True)
        return True

    @translate_errors
    def list_caches(self):
        with self._ioctx() as ioctx:
            return [n for n in rbd.RBD().list(ioctx) if is_cache_name(n)]


class CephStore(OperatorViews, CacheRemovals):
    """One connection to the cluster, shared by the threads of a worker (librados is
    thread-safe), and the operations cacheraw needs on its pool."""
    # Every rbd call on the pool goes through this class's connection and its error
    # translation; the locks (RadosLocks), what an operator reads (OperatorViews) and the
    # removals (CacheRemovals) are classes of their own.

    def __init__(self, conf):
        self.conffile = conf.ceph.conf
        self.user = conf.ceph.user
        self.keyring = conf.ceph.keyring
        self.pool = conf.ceph.pool
        self.connect_timeout = conf.ceph.connect_timeout
        self.lock_duration = conf.ceph.lock_duration
        self.op_timeout = conf.ceph.op_timeout
        self._retry = retry.policy(conf, exception.Transient)
        self._cluster = None
        self._client = None
        self.locks = RadosLocks(self)
        # Set once the cluster refused this client: the process must start again.
        self.blocklisted = threading.Event()

    # -- the connection

    def check_config(self):
        if not os.access(self.conffile, os.R_OK) or not os.path.isfile(self.conffile):
            raise exception.ConfigError("cannot read Ceph configuration file %s" % self.conffile)
        if self.keyring:
            read_key(self.keyring, self.user)

    def connect(self):
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
        self._cluster = cluster
        metrics.ceph_connected()
        self._client = "client.%d" % cluster.get_instance_id()
        LOG.info("Connected to Ceph as %s from %s (user client.%s, pool %s)", self._client,
                 self._addresses(), self.user, self.pool)

    def _addresses(self):
        try:
            return self._cluster.get_addrs()
        except (rados.Error, AttributeError):
            return "unknown address"

    def shut_out(self):
        """The cluster refused this client: it was blocklisted (another client broke one of our
        locks, or an operator did it). Nothing this process sends is accepted any more."""
        if not self.blocklisted.is_set():
            LOG.error("Ceph refuses %s (blocklisted): this worker must restart", self._client)
            self.blocklisted.set()

    def close(self):
        if self._cluster is not None:
            self._cluster.shutdown()
            self._cluster = None

    def __enter__(self):
        self.connect()
        return self

    def __exit__(self, *exc_info):
        self.close()

    @contextlib.contextmanager
    def _ioctx(self):
        if self._cluster is None:
            self.connect()
        with self._cluster.open_ioctx(self.pool) as ioctx:
            yield ioctx

    @contextlib.contextmanager
    def _image(self, name, snapshot=None, read_only=False):
        with self._ioctx() as ioctx:
            with rbd.Image(ioctx, name, snapshot=snapshot, read_only=read_only) as image:
                yield image

    # -- facts

    @translate_errors
    def fsid(self):
        if self._cluster is None:
            self.connect()
        return self._cluster.get_fsid()

    @translate_errors
    def check_reachable(self):
        """Raise CephUnavailable unless the pool answers now."""
        with self._ioctx() as ioctx:
            try:
                ioctx.stat("rbd_directory")
            except rados.ObjectNotFound:
                pass

    @translate_errors
    def has_protected_snap(self, name):
        """True when ``name@snap`` exists and is protected: a finished cache or Glance image."""
        try:
            with self._image(name, read_only=True) as image:
                if SNAP not in [s["name"] for s in image.list_snaps()]:
                    return False
                return image.is_protected_snap(SNAP)
        except rbd.ImageNotFound:
            return False

    @translate_errors
    def read(self, name, offset, length, snapshot=SNAP):
        with self._image(name, snapshot=snapshot, read_only=True) as image:
            length = max(0, min(length, image.size() - offset))
            return image.read(offset, length) if length else b""

    @contextlib.contextmanager
    def serve_snapshot(self, name, snapshot, path):
        """``with store.serve_snapshot(name, snapshot, path) as served:`` serves
        ``name@snapshot`` over NBD on the Unix socket ``path`` (cacheraw.nbd) from a read-only
        handle: no watch is set on the image, so that its owner can delete it meanwhile.
        ``served.qemu_file()`` names it to qemu-img; ``served.check()`` raises CephNotFound once
        the image is deleted (reads of a deleted image may return zeros)."""
        with contextlib.ExitStack() as stack:
            try:
                ioctx = stack.enter_context(self._ioctx())
                image = stack.enter_context(rbd.Image(ioctx, name, snapshot=snapshot,
                                                      read_only=True))
                served = ServedSnapshot(ioctx, image)
                served.export = stack.enter_context(nbd.Export(path, image.size(), served.read))
            except (rbd.Error, rados.Error) as exc:
                raise translated_error(exc, self.shut_out) from exc
            yield served

    @translate_errors
    def used_bytes(self, name, snapshot=SNAP):
        """Bytes allocated to ``name@snapshot``, as ``rbd du`` counts them (whole objects)."""
        return self._used_bytes(name, snapshot)

    def _used_bytes(self, name, snapshot):
        used = 0

        def count(offset, length, exists):
            nonlocal used
            if exists:
                used += length

        with self._image(name, snapshot=snapshot, read_only=True) as image:
            image.diff_iterate(0, image.size(), None, count, include_parent=False,
                               whole_object=True)
        return used

    def _mon_json(self, command):
        ret, out, err = self._cluster.mon_command(json.dumps(dict(command, format="json")), b"",
                                                  timeout=self.op_timeout)
        if ret != 0:
            raise exception.CephError("ceph %s failed (%d): %s" % (command["prefix"], ret, err))
        return json.loads(out)

    @translate_errors
    def pool_space(self):
        """(bytes the pool can still take, what limits it): the smaller of what its quota
        leaves and the cluster's free space divided by the pool's replica count."""
        if self._cluster is None:
            self.connect()
        replicas = self._mon_json({"prefix": "osd pool get", "pool": self.pool,
                                   "var": "size"}).get("size", 1) or 1
        free = self._cluster.get_cluster_stats()["kb_avail"] * 1024 // replicas
        quota = self._mon_json({"prefix": "osd pool get-quota", "pool": self.pool})
        if quota.get("quota_max_bytes"):
            left = max(0, quota["quota_max_bytes"] - quota.get("current_num_bytes", 0))
            if left < free:
                return left, "quota"
        return free, "free space"

    # -- caches

    def _default_features(self):
        """The features the cluster gives new images (None unless it says them as a number)."""
        try:
            return int(self._cluster.conf_get("rbd_default_features"))
        except (TypeError, ValueError, rados.Error):
            return None

    @translate_errors
    def create(self, name, size):
        with self._ioctx() as ioctx:
            features = self._default_features()
            rbd.RBD().create(ioctx, name, size, old_format=False,
                             features=None if features is None else features & ~DEFERRED_FEATURES)

    @translate_errors
    def publish(self, name):
        """Build the object map that create() left out, snapshot ``name`` as ``snap`` and
        protect it; what is done already is skipped."""
        with self._image(name) as image:
            snapshots = [s["name"] for s in image.list_snaps()]
            missing = (self._default_features() or 0) & DEFERRED_FEATURES & ~image.features()
            if missing and SNAP not in snapshots:
                image.update_features(missing, True)
                image.rebuild_object_map()
            if SNAP not in snapshots:
                image.create_snap(SNAP)
            if not image.is_protected_snap(SNAP):
                image.protect_snap(SNAP)

    # -- a cache made from the cache of an image with the same data (cacheraw.identical)

    @translate_errors
    def clone_cache(self, source, target, independent=False):
        """Make ``target`` from the finished cache ``source@snap``, in RADOS, without qemu-img:
        a copy-on-write clone that shares its data, or with ``independent`` the same clone
        flattened (every byte copied, no parent left). It is not published: a crash before
        publish() leaves a partial cache. When ``source`` is itself an unchanged clone of a
        live cache, that cache is cloned instead, so that sharing makes no chain of clones.
        Returns the name of the cache cloned."""
        with self._ioctx() as ioctx:
            origin = self._origin(ioctx, source)
            rbd.RBD().clone(ioctx, origin, SNAP, ioctx, target,
                            features=self._default_features())
            if independent:
                with rbd.Image(ioctx, target) as image:
                    image.flatten()
        return origin

    def _origin(self, ioctx, name):
        for _ in range(MAX_SHARED_DEPTH):
            with rbd.Image(ioctx, name, snapshot=SNAP, read_only=True) as image:
                try:
                    pool, parent, snap = image.parent_info()
                    parent_id = image.parent_id()
                except rbd.ImageNotFound:
                    return name
            if pool != self.pool or snap != SNAP or not is_cache_name(parent) \
                    or _live_id(ioctx, parent) != parent_id:
                return name  # not a cache of ours, or one in the trash
            name = parent
        return name

    # -- what qemu-img needs to reach the cluster as our user

    def qemu_file_options(self, name):
        """Options of qemu's rbd block driver for the image ``name`` in our pool."""
        return {"driver": "rbd", "pool": self.pool, "image": name, "conf": self.conffile,
                "user": self.user}

    def qemu_environment(self):
        """Environment for qemu-img, whose own Ceph client reads CEPH_ARGS: our timeouts, so that
        a write into a pool that filled up (or an unreachable cluster) fails the conversion
        instead of blocking it until its wall-clock limit."""
        return {"CEPH_ARGS": "--rados_osd_op_timeout=%d --rados_mon_op_timeout=%d "
                             "--client_mount_timeout=%d"
                             % (self.op_timeout, self.op_timeout, self.connect_timeout)}

    def secret_key(self):
        """The user's key when an explicit keyring is configured (qemu cannot read one)."""
        return read_key(self.keyring, self.user) if self.keyring else None
