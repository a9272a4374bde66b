"""The Ceph cluster: the images' RBD data, the RAW caches and the conversion locks.

Only this module imports rados and rbd. Every handle is a ``with``; every library error is
translated into cacheraw.exception at this boundary. Snapshot work is idempotent: creating what
exists or removing what is gone is "already done".
"""

import configparser
import contextlib
import functools
import json
import logging
import os
import re
import socket
import time
import uuid

import rados
import rbd

from cacheraw import exception
from cacheraw import metrics
from cacheraw import retry

LOG = logging.getLogger(__name__)

SNAP = "snap"
CACHE_SUFFIX = "_raw"
LOCK_PREFIX = "cacheraw.lock."
LOCK_NAME = "cacheraw"
# cls_lock: renew the lock when this cookie already holds it.
LOCK_FLAG_MAY_RENEW = 0x1
# Extended attributes of a lock object: who holds it, and how far its conversion is.
HOLDER_XATTR = "cacheraw.holder"
PROGRESS_XATTR = "cacheraw.progress"
SCRATCH_PREFIX = "cacheraw-check-"
# A cache is written without its object map, which is built once when the cache is published:
# updating the map at each first write of an object made conversions ~10% slower (make bench).
DEFERRED_FEATURES = rbd.RBD_FEATURE_OBJECT_MAP | rbd.RBD_FEATURE_FAST_DIFF

_TRANSIENT = (rados.TimedOut, rados.ConnectionShutdown, rados.InterruptedOrTimeoutError,
              rbd.Timeout)


def _trashed_caches(ioctx):
    """The RBD trash entries that are caches of ours; nothing else in the trash is touched."""
    return [e for e in rbd.RBD().trash_list(ioctx) if is_cache_name(e["name"])]


def translate_errors(func):
    """Turn rados/rbd exceptions into ours, and retry the transient ones."""
    @functools.wraps(func)
    def wrapper(self, *args, **kwargs):
        return self._retry(translated, self, *args, **kwargs)

    @functools.wraps(func)
    def translated(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except (rbd.ImageNotFound, rados.ObjectNotFound) as exc:
            raise exception.CephNotFound(str(exc)) from exc
        except (rbd.ImageBusy, rados.ObjectBusy, rbd.ImageHasSnapshots) as exc:
            raise exception.CephBusy(str(exc)) from exc
        except _TRANSIENT as exc:
            raise exception.CephUnavailable(str(exc)) from exc
        except (rbd.Error, rados.Error) as exc:
            raise exception.CephError("%s: %s" % (type(exc).__name__, exc)) from exc
    return wrapper


# Image ids name RBD images only once they match this: a lowercase UUID, nothing else.
IMAGE_ID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def valid_id(image_id):
    return isinstance(image_id, str) and IMAGE_ID_RE.fullmatch(image_id) is not None


def cache_name(image_id):
    return image_id + CACHE_SUFFIX


def is_cache_name(name):
    """True for ``<image uuid>_raw``: the only RBD images cacheraw ever removes unasked."""
    return name.endswith(CACHE_SUFFIX) and valid_id(name[:-len(CACHE_SUFFIX)])


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


class CephStore:
    """One connection to the cluster, shared by the threads of a worker (librados is
    thread-safe), and the operations cacheraw needs on its pool."""

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
        self._lock_cookie = "%s-%d-%s" % (socket.gethostname(), os.getpid(), uuid.uuid4().hex[:8])
        self._held = set()

    # -- the connection

    def check_config(self):
        if not os.access(self.conffile, os.R_OK) or not os.path.isfile(self.conffile):
            raise exception.ConfigError("cannot read Ceph configuration file %s" % self.conffile)
        if self.keyring:
            read_key(self.keyring, self.user)

    def connect(self):
        self.check_config()
        conf = {"rados_osd_op_timeout": str(self.op_timeout),
                "rados_mon_op_timeout": str(self.op_timeout)}
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

    @translate_errors
    def used_bytes(self, name, snapshot=SNAP):
        """Bytes allocated to ``name@snapshot``, as ``rbd du`` counts them (whole objects)."""
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

    @translate_errors
    def remove(self, name):
        """Remove the cache ``name``. A cache with clones is moved to the trash (the clones keep
        working) and purged by purge_trash() once its last clone is gone.

        Returns "removed", "trashed" or "absent".
        """
        try:
            with self._image(name) as image:
                if self._has_children(image):
                    with self._ioctx() as ioctx:
                        rbd.RBD().trash_move(ioctx, name)
                    return "trashed"
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

    @staticmethod
    def _has_children(image):
        if SNAP not in [s["name"] for s in image.list_snaps()]:
            return False
        image.set_snap(SNAP)
        try:
            return bool(list(image.list_children2()))
        finally:
            image.set_snap(None)

    @staticmethod
    def _break_stale_locks(image):
        """A cache is written only by our qemu-img, under our conversion lock: a lock left on a
        cache being removed is that of a qemu-img that was killed. librbd breaks it and blocklists
        the dead client, so that the removal need not wait for its watch to time out."""
        lockers = image.list_lockers()
        for client, cookie, _ in (lockers["lockers"] if lockers else []):
            image.break_lock(client, cookie)

    @staticmethod
    def _drop_snap(image):
        for snap in image.list_snaps():
            if image.is_protected_snap(snap["name"]):
                image.unprotect_snap(snap["name"])
            image.remove_snap(snap["name"])

    @translate_errors
    def purge_trash(self):
        """Remove the trashed caches whose clones are all gone. Returns their names."""
        purged = []
        with self._ioctx() as ioctx:
            for entry in _trashed_caches(ioctx):
                with rbd.Image(ioctx, image_id=entry["id"]) as image:
                    if self._has_children(image):
                        continue
                    self._drop_snap(image)
                rbd.RBD().trash_remove(ioctx, entry["id"], force=True)
                purged.append(entry["name"])
        return purged

    @translate_errors
    def list_caches(self):
        with self._ioctx() as ioctx:
            return [n for n in rbd.RBD().list(ioctx) if is_cache_name(n)]

    # -- conversion locks, shared by every worker on every controller

    @translate_errors
    def try_lock(self, image_id):
        """Take or renew the conversion lock of an image. Raises LockBusy when another holds it."""
        with self._ioctx() as ioctx:
            try:
                ioctx.lock_exclusive(LOCK_PREFIX + image_id, LOCK_NAME, self._lock_cookie,
                                     desc="cacheraw conversion", duration=self.lock_duration,
                                     flags=LOCK_FLAG_MAY_RENEW)
            except (rados.ObjectBusy, rados.ObjectExists) as exc:
                raise exception.LockBusy("image %s is being cached by another worker"
                                         % image_id) from exc
            if image_id not in self._held:
                self._held.add(image_id)
                self._record_holder(ioctx, image_id)

    @staticmethod
    def _record_holder(ioctx, image_id):
        """The binding cannot list lockers: the holder says who it is on the lock object."""
        record = {"host": socket.gethostname(), "pid": os.getpid(), "since": int(time.time())}
        try:
            ioctx.set_xattr(LOCK_PREFIX + image_id, HOLDER_XATTR, json.dumps(record).encode())
        except rados.Error as exc:
            LOG.warning("Image %s: could not record the lock holder: %s", image_id, exc)
        try:
            ioctx.rm_xattr(LOCK_PREFIX + image_id, PROGRESS_XATTR)  # a dead holder's
        except rados.Error:
            pass

    @translate_errors
    def unlock(self, image_id, remove=False):
        self._held.discard(image_id)
        with self._ioctx() as ioctx:
            try:
                ioctx.unlock(LOCK_PREFIX + image_id, LOCK_NAME, self._lock_cookie)
            except rados.ObjectNotFound:
                pass
            if remove:
                try:
                    ioctx.remove_object(LOCK_PREFIX + image_id)
                except rados.ObjectNotFound:
                    pass

    @translate_errors
    def is_locked(self, image_id):
        """True when some worker holds a live conversion lock on the image (a probe: the
        binding cannot list lockers)."""
        obj = LOCK_PREFIX + image_id
        probe = "probe-" + uuid.uuid4().hex
        with self._ioctx() as ioctx:
            try:
                ioctx.stat(obj)
            except rados.ObjectNotFound:
                return False
            try:
                ioctx.lock_exclusive(obj, LOCK_NAME, probe, desc="probe", duration=1)
            except (rados.ObjectBusy, rados.ObjectExists):
                return True
            ioctx.unlock(obj, LOCK_NAME, probe)
            return False

    @translate_errors
    def lock_holder(self, image_id):
        """Who holds the image's conversion lock ({"host", "pid", "since"}), or None when the
        lock is free: a record left by a holder that died is not a holder."""
        if not self.is_locked(image_id):
            return None
        return self._lock_xattr(image_id, HOLDER_XATTR) or {"host": "unknown"}

    def set_progress(self, image_id, progress):
        """Publish how far the conversion of an image we hold the lock of is, for any reader.
        Best effort, never retried: the conversion must not wait for it."""
        if image_id not in self._held:
            return
        try:
            with self._ioctx() as ioctx:
                ioctx.set_xattr(LOCK_PREFIX + image_id, PROGRESS_XATTR,
                                json.dumps(progress).encode())
        except rados.Error as exc:
            raise exception.CephError("%s: %s" % (type(exc).__name__, exc)) from exc

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
        facts["used"] = self.used_bytes(name)
        return facts

    @translate_errors
    def trashed_caches(self):
        """The caches in the RBD trash: [{"name", "id", "clones"}]."""
        found = []
        with self._ioctx() as ioctx:
            for entry in _trashed_caches(ioctx):
                with rbd.Image(ioctx, image_id=entry["id"], read_only=True) as image:
                    clones = 0
                    if SNAP in [s["name"] for s in image.list_snaps()]:
                        image.set_snap(SNAP)
                        clones = len(list(image.list_children2()))
                found.append({"name": entry["name"], "id": entry["id"], "clones": clones})
        return found

    def check_rbd_caps(self):
        """Do, on a scratch image, each RBD step a cache needs; the scratch image goes in every
        outcome. Raises CacherawError naming the step that failed."""
        name = SCRATCH_PREFIX + uuid.uuid4().hex[:12]
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
                ioctx.lock_exclusive(name, LOCK_NAME, self._lock_cookie, duration=10)
                ioctx.unlock(name, LOCK_NAME, self._lock_cookie)
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
