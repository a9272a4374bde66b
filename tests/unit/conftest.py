"""What the unit tests share: the configuration fixture and fakes that keep the real exception
classes (a fake image API raises cacheraw.exception's, a fake Ceph the real rados and rbd
errors). Test modules import the fake classes from here, never anything from one another."""

import contextlib
import itertools

import pytest

from tests import ceph_bindings

# Before anything imports rados or rbd: stand-ins where the real bindings are not built for
# this Python.
CEPH_STAND_IN = ceph_bindings.install()

import rbd  # noqa: E402
from oslo_config import cfg  # noqa: E402

from cacheraw import exception  # noqa: E402
from cacheraw.ceph import lease  # noqa: E402
from cacheraw.conf import register_opts  # noqa: E402

ID = "0dc0185d-550c-461a-bdc5-25b9e20586d5"


def pytest_collection_modifyitems(config, items):
    """Without the real bindings, the tests that need them are deselected (and counted so)."""
    if not CEPH_STAND_IN:
        return
    needing = [item for item in items if item.get_closest_marker("ceph_bindings")]
    if needing:
        config.hook.pytest_deselected(items=needing)
        items[:] = [item for item in items if item not in needing]


@pytest.fixture
def conf(tmp_path):
    c = cfg.ConfigOpts()
    register_opts(c)
    c([])
    c.set_override("retry_initial_delay", 0, group="worker")
    c.set_override("conversion_dir", str(tmp_path / "conversions"), group="converter")
    return c


class FakeImages:
    """The image API with one image (None: it does not exist)."""

    def __init__(self, image):
        self.image = image
        self.patches = []

    def get(self, image_id):
        if self.image is None:
            raise exception.ImageNotFound(image_id)
        return dict(self.image)

    def shows_own_write(self, image_id, payload):
        return False

    def update(self, image_id, wanted, only_if=None, only_if_absent=None, lease=None):
        if lease is not None:
            lease.check()
        if (only_if is not None and not only_if(self.image)) or \
                (only_if_absent is not None and only_if_absent in self.image):
            return dict(self.image)
        self.patches.append(wanted)
        for k, v in wanted.items():
            if v is None:
                self.image.pop(k, None)
            else:
                self.image[k] = v
        return dict(self.image)


class FakeStore:
    """The little of CephStore that deciding needs: a pool, an fsid, no cache."""
    pool = "images"

    def fsid(self):
        return "fsid"

    def has_protected_snap(self, name):
        return False


# -- a RADOS lock table

class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


class FakeLocks:
    """A RADOS lock table as cls_lock keeps it: a lock has one holder (cookie) and an expiry;
    renewal with MUST_RENEW fails unless the cookie holds it still."""

    def __init__(self, clock=None, held=None, progress=None, records=None):
        self.clock = clock or Clock()
        self.holders = {}  # image id -> (cookie, expiry)
        self.released = []
        self.fail_renewals = None
        for image_id in held or ():
            self.holders[image_id] = ("someone-else", float("inf"))
        self.progresses = progress or {}  # image id -> what its converting worker published
        self.records = records or {}  # image id -> its holder's record

    def _holder(self, image_id):
        cookie, expiry = self.holders.get(image_id, (None, 0))
        return cookie if expiry > self.clock() else None

    def take(self, image_id, cookie, duration):
        if self._holder(image_id) not in (None, cookie):
            raise exception.LockBusy(image_id)
        self.holders[image_id] = (cookie, self.clock() + duration)

    def renew(self, image_id, cookie, duration, timeout=None, late=None):
        if self.fail_renewals is not None:
            raise self.fail_renewals
        if self._holder(image_id) != cookie:
            raise exception.LockLost(image_id)
        self.holders[image_id] = (cookie, self.clock() + duration)

    def release(self, image_id, cookie):
        if self._holder(image_id) != cookie:
            raise exception.LockLost(image_id)
        del self.holders[image_id]
        self.released.append(image_id)

    def is_locked(self, image_id):
        return self._holder(image_id) is not None

    def holder_record(self, image_id):
        return self.records.get(image_id)

    def progress(self, image_id):
        return self.progresses.get(image_id)

    def steal(self, image_id):
        """Another worker takes the lock, as after ours expired."""
        self.holders[image_id] = ("thief", self.clock() + 60)


# -- a fake Ceph pool behind the real rados and rbd modules' names and errors

class FakePool:
    """RBD images by name ({"snaps": {name: protected}, "clones": n, "lockers": [...]}), the
    trash by id, and faults to raise: ``faults[method] = exception``."""

    def __init__(self):
        self.images = {}
        self.trash = {}
        self.faults = {}
        self._ids = itertools.count(1)

    def fault(self, method):
        if method in self.faults:
            raise self.faults[method]

    def add(self, name, snaps=None, clones=0, lockers=()):
        self.images[name] = {"snaps": dict(snaps or {}), "clones": clones,
                             "lockers": list(lockers), "features": 0, "size": 0,
                             "id": "i%d" % next(self._ids), "metadata": {}, "parent": None,
                             "children": []}

    def gone(self, data):
        """An image removed for good: its parent loses a child."""
        if data["parent"] is not None:
            data["parent"]["children"].remove(data)

    def to_trash(self, name):
        trash_id = "t%d" % next(self._ids)
        self.trash[trash_id] = (name, self.images.pop(name))
        return trash_id


class FakeCluster:
    def __init__(self, pool):
        self.pool = pool

    def connect(self, timeout=None):
        self.pool.fault("connect")

    def shutdown(self):
        pass

    def open_ioctx(self, name):
        return FakeIoctx(self.pool)

    def get_fsid(self):
        return "fsid"

    def get_instance_id(self):
        return 4242

    def get_addrs(self):
        return "127.0.0.1:0/4242"

    def conf_get(self, key):
        return None


class FakeIoctx:
    def __init__(self, pool):
        self.pool = pool

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        return False


class FakeRBD:
    def __init__(self, pool):
        self.pool = pool

    def list(self, ioctx):
        return list(self.pool.images)

    def create(self, ioctx, name, size, **kwargs):
        self.pool.fault("create")
        if name in self.pool.images:
            raise rbd.ImageExists("image %s exists" % name)
        self.pool.add(name)
        self.pool.images[name]["size"] = size

    def remove(self, ioctx, name):
        self.pool.fault("remove")
        if name not in self.pool.images:
            raise rbd.ImageNotFound("no image %s" % name)
        if self.pool.images[name]["snaps"]:
            raise rbd.ImageHasSnapshots("image %s has snapshots" % name)
        self.pool.gone(self.pool.images.pop(name))

    def clone(self, p_ioctx, p_name, p_snap, c_ioctx, c_name, features=None):
        parent = self.pool.images.get(p_name)
        if parent is None:
            raise rbd.ImageNotFound("no image %s" % p_name)
        if not parent["snaps"].get(p_snap):
            raise rbd.InvalidArgument("parent snapshot must be protected")
        if c_name in self.pool.images:
            raise rbd.ImageExists("image %s exists" % c_name)
        self.pool.add(c_name)
        child = self.pool.images[c_name]
        # librbd copies the parent's metadata into the clone.
        child.update(parent=parent, parent_name=p_name, name=c_name,
                     metadata=dict(parent["metadata"]))
        parent["children"].append(child)
        self.pool.fault("clone")  # made, but the answer may be lost

    def trash_move(self, ioctx, name):
        self.pool.to_trash(name)

    def trash_list(self, ioctx):
        return [{"id": trash_id, "name": name} for trash_id, (name, _) in self.pool.trash.items()]

    def trash_remove(self, ioctx, trash_id, force=False):
        self.pool.gone(self.pool.trash.pop(trash_id)[1])


class FakeImage:
    def __init__(self, pool, name=None, snapshot=None, read_only=False, image_id=None):
        self.pool = pool
        pool.fault("open")
        by_id = {data["id"]: n for n, data in pool.images.items()}
        if image_id in by_id:
            name = by_id[image_id]
        found = pool.trash[image_id][1] if image_id in pool.trash else pool.images.get(name)
        if found is None:
            raise rbd.ImageNotFound("no image %s" % (name or image_id))
        self.data = found
        self.name = name or pool.trash[image_id][0]
        self.snap = snapshot

    def get_name(self):
        return self.name

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        return False

    def list_snaps(self):
        return [{"name": name} for name in self.data["snaps"]]

    def is_protected_snap(self, name):
        return self.data["snaps"][name]

    def protect_snap(self, name):
        self.data["snaps"][name] = True

    def unprotect_snap(self, name):
        self.pool.fault("unprotect_snap")
        if self.data["clones"] or self.data["children"]:
            raise rbd.ImageBusy("snapshot %s has clones" % name)
        self.data["snaps"][name] = False

    def create_snap(self, name):
        self.data["snaps"][name] = False

    def remove_snap(self, name):
        if self.data["snaps"][name]:
            raise rbd.ImageBusy("snapshot %s is protected" % name)
        del self.data["snaps"][name]

    def set_snap(self, name):
        self.snap = name

    def list_children2(self):
        trashed = [data for _, data in self.pool.trash.values()]
        return [{"pool": "images", "image": child["name"], "trash": child in trashed}
                for child in self.data["children"]] + \
            [{"pool": "volumes", "image": "clone-%d" % n} for n in range(self.data["clones"])]

    def id(self):
        return self.data["id"]

    def parent_info(self):
        if self.data["parent"] is None:
            raise rbd.ImageNotFound("no parent")
        return "images", self.data["parent_name"], "snap"

    def parent_id(self):
        self.parent_info()
        return self.data["parent"]["id"]

    def flatten(self):
        if self.data["parent"] is None:
            raise rbd.InvalidArgument("error flattening %s" % self.name)  # as librbd says
        self.pool.gone(self.data)
        self.data["parent"] = None
        self.pool.fault("flatten")  # done, but the answer may be lost

    def list_lockers(self):
        return {"lockers": self.data["lockers"]} if self.data["lockers"] else []

    def break_lock(self, client, cookie):
        self.data["lockers"] = [lock for lock in self.data["lockers"] if lock[1] != cookie]

    def features(self):
        return self.data["features"]

    def size(self):
        return self.data["size"]

    def metadata_get(self, key):
        if key not in self.data["metadata"]:
            raise KeyError(key)
        return self.data["metadata"][key]

    def metadata_set(self, key, value):
        self.data["metadata"][key] = value


@pytest.fixture
def ceph(monkeypatch):
    """A FakePool that CephStore reaches through the real modules' names."""
    import rados
    import rbd
    pool = FakePool()
    monkeypatch.setattr(rados, "Rados", lambda **kwargs: FakeCluster(pool))
    monkeypatch.setattr(rbd, "RBD", lambda: FakeRBD(pool))
    monkeypatch.setattr(rbd, "Image", lambda ioctx, *args, **kwargs: FakeImage(pool, *args,
                                                                                **kwargs))
    return pool


class FakeLease:
    """A conversion lease that holds (or, once ``lost``, raises LockLost), counting its checks."""

    def __init__(self, cookie="cookie-1", image_id=ID):
        self.cookie = cookie
        self.image_id = image_id
        self.lost = False
        self.checks = 0

    def check(self):
        self.checks += 1
        if self.lost:
            raise exception.LockLost("lost")

    def held(self):
        return not self.lost


@pytest.fixture
def store(conf, ceph, tmp_path):
    """A connected CephStore on the FakePool ``ceph``, two attempts per step."""
    from cacheraw.ceph import store as ceph_store
    ceph_conf = tmp_path / "ceph.conf"
    ceph_conf.write_text("[global]\n")
    conf.set_override("conf", str(ceph_conf), group="ceph")
    conf.set_override("retry_attempts", 2, group="worker")
    try:
        with ceph_store.CephStore(conf) as connected:
            yield connected
    finally:
        # The option groups' options are shared by every ConfigOpts: leave no override behind.
        conf.clear_override("retry_attempts", group="worker")
        conf.clear_override("conf", group="ceph")


# -- a store and a converter for the conversion's flow

class LockingStore(FakeStore):
    """A store whose cache image and lock are remembered, for the conversion flow."""

    def __init__(self):
        self.removed = []
        self.locks = FakeLocks()
        self.created = []

    @property
    def locked(self):
        return {i for i in self.locks.holders if self.locks.is_locked(i)}

    def conversion_lock(self, image_id, on_lost=None):
        return lease.hold(self.locks, image_id, 60, on_lost, clock=self.locks.clock)

    def remove(self, name, lease=None):
        if lease is not None:
            lease.check()
        self.removed.append(name)
        return "absent"

    def remove_partial(self, name, lease=None):
        return self.remove(name, lease)

    @contextlib.contextmanager
    def serve_snapshot(self, name, snapshot, path):
        yield ServedImage()

    @contextlib.contextmanager
    def serve_cache(self, name, path):
        yield ServedImage()

    def pool_space(self):
        return 1 << 40, "free space"

    def reserve(self, lease, need):
        lease.check()

    def create(self, name, size, lease):
        lease.check()
        self.created.append((name, size))
        return "rbd-id"

    def publish(self, name, rbd_id, lease):
        lease.check()


class ServedImage:
    def check(self):
        """Still there."""

    def io_failed(self):
        """Every request of qemu-img's answered."""
        return False


class FailingConverter:
    def __init__(self, error):
        self.error = error

    def inspect(self, source, fmt):
        pass

    def info(self, source, fmt, job=None):
        return {"virtual-size": 1 << 20}

    def data_bytes(self, source, fmt, job=None, bound=None, info=None):
        return 1 << 20

    def convert(self, source, fmt, target, job):
        if self.error is not None:
            raise self.error


class RecordedOp:
    """A rados read or write operation (ReadOpCtx, WriteOpCtx) whose ``steps`` a fake ioctx
    runs when it is operated; each test module's fake adds them."""

    def __init__(self):
        self.steps = []

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        return False


class Completion:
    """An rbd aio completion, with the result of its request."""

    def __init__(self, result):
        self.result = result

    def get_return_value(self):
        return self.result
