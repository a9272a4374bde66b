"""cacheraw.ceph.views: who holds a conversion lock, as cacheraw-manage shows it, and the caps
check, which does each RBD step of a cache on a scratch image (a fake pool behind the real rados
and rbd errors) and leaves nothing behind in any outcome."""

import contextlib

import pytest
import rados

from cacheraw import exception
from cacheraw.ceph import views
from tests.unit.conftest import FakeLocks


class Ioctx:
    def __init__(self, pool, locks):
        self.pool = pool
        self.locks = locks

    def lock_exclusive(self, name, lock, cookie, duration=None):
        self.pool.fault("lock_exclusive")
        self.pool.objects.add(name)  # as cls_lock creates the object it locks
        self.locks[name] = cookie

    def unlock(self, name, lock, cookie):
        assert self.locks.pop(name) == cookie

    def remove_object(self, name):
        if name not in self.pool.objects:
            raise rados.ObjectNotFound("no object %s" % name)
        self.pool.objects.discard(name)
        self.locks.pop(name, None)


class Conn:
    user = "cacheraw"
    pool = "images"

    def __init__(self, pool):
        self.fake = pool
        self.fake.objects = set()
        self.locks = {}
        self.commands = []

    @contextlib.contextmanager
    def ioctx(self):
        yield Ioctx(self.fake, self.locks)

    def mon_json(self, command):
        self.fake.fault("mon_json")
        self.commands.append(command)
        return {}


def test_a_lock_holder_is_who_holds_the_lock_now():
    record = {"host": "ctl-1", "pid": 7}
    locks = FakeLocks(held={"a", "b"}, records={"a": record, "c": record})
    operator = views.OperatorViews(None, locks)
    assert operator.lock_holder("a") == record
    assert operator.lock_holder("b") == {"host": "unknown"}  # locked, its record not written
    assert operator.lock_holder("c") is None  # a record left by a holder that died


def test_the_caps_check_does_each_step_and_leaves_nothing(ceph):
    conn = Conn(ceph)
    name = views.OperatorViews(conn, FakeLocks()).check_rbd_caps()
    assert name.startswith("cacheraw-check-")
    assert ceph.images == {} and ceph.objects == set() and conn.locks == {}
    assert conn.commands == [{"prefix": "osd blocklist", "blocklistop": "add",
                              "addr": views.CHECK_ADDRESS, "expire": 60.0}]


@pytest.mark.parametrize("fault, step", [
    ("lock_exclusive", "take a lock"),
    ("mon_json", r"blocklist a client \(osd blocklist add\)"),
])
def test_a_step_refused_is_named_and_the_scratch_image_removed(ceph, fault, step):
    conn = Conn(ceph)
    ceph.faults[fault] = rados.PermissionDeniedError("caps")
    with pytest.raises(exception.CephError, match="client.cacheraw cannot %s in pool images: "
                                                  r".*caps" % step):
        views.OperatorViews(conn, FakeLocks()).check_rbd_caps()
    assert ceph.images == {} and ceph.objects == set()
