"""cacheraw.ceph.space: the pool's room below its ceiling (from the cluster's maps, as the
monitors answer them), the reservations of the running conversions, and a reservation refused
when it does not fit."""

import contextlib
import json

import pytest

from cacheraw import exception
from cacheraw.ceph import space
from tests.unit.conftest import FakeLease
from tests.unit.conftest import FakeLocks
from tests.unit.conftest import RecordedOp

GIB = 1 << 30


class Conn:
    """The monitors' answers for a pool ``images`` of size 3 on 30 GiB of raw space."""

    pool = "images"

    @staticmethod
    def retry(func, *args, **kwargs):
        return func(*args, **kwargs)

    def __init__(self, max_avail=6 * GIB, nearfull=0.85, full=0.95, quota=0, used=0):
        self.answers = {
            "osd dump": {"pools": [{"pool_name": "images", "size": 3}],
                         "nearfull_ratio": nearfull, "full_ratio": full},
            "df": {"stats": {"total_bytes": 30 * GIB},
                   "pools": [{"name": "images", "stats": {"max_avail": max_avail}}]},
            "osd pool get-quota": {"quota_max_bytes": quota, "current_num_bytes": used},
        }

    def mon_json(self, command):
        return self.answers[command["prefix"]]


def test_the_room_is_max_avail_less_what_lies_between_the_ceiling_and_full():
    # (0.95 - 0.85) of 30 GiB raw is 3 GiB, 1 GiB of a pool of size 3.
    assert space.PoolSpace(Conn(), FakeLocks()).room() == (5 * GIB, "the nearfull ratio 0.85")
    room, why = space.PoolSpace(Conn(), FakeLocks(), max_pool_usage=0.65).room()
    assert room == 3 * GIB and why.startswith("[converter] max_pool_usage ")
    assert space.PoolSpace(Conn(), FakeLocks(), max_pool_usage=0.9).room()[1] \
        == "the nearfull ratio 0.85"


def test_the_room_names_the_max_pool_usage_that_limits_it():
    assert space.PoolSpace(Conn(), FakeLocks(), max_pool_usage=0.65).room()[1] \
        == "[converter] max_pool_usage 0.65"


def test_a_quota_limits_the_room_when_lower():
    assert space.PoolSpace(Conn(quota=3 * GIB, used=GIB), FakeLocks()).room() == (2 * GIB,
                                                                             "its quota")
    assert space.PoolSpace(Conn(quota=100 * GIB), FakeLocks()).room()[0] == 5 * GIB


def test_a_pool_missing_from_the_maps_is_an_error():
    conn = Conn()
    conn.answers["df"]["pools"] = []
    with pytest.raises(exception.CephError, match="not in the cluster's maps"):
        space.PoolSpace(conn, FakeLocks()).room()


def test_only_locked_images_reserve_what_they_have_still_to_write(monkeypatch):
    pool = space.PoolSpace(Conn(), FakeLocks(held={"a", "b"}, progress={"a": {"percent": 75}}))
    monkeypatch.setattr(pool, "entries", lambda: {
        "a/1": {"bytes": 4 * GIB}, "b/2": {"bytes": GIB}, "dead/3": {"bytes": 9 * GIB}})
    assert pool.reserved() == 2 * GIB  # a quarter of a, all of b, nothing of the dead one
    assert pool.reserved(but="b") == GIB
    assert pool.available() == 3 * GIB


def test_a_reservation_that_does_not_fit_is_refused_and_not_kept(monkeypatch):
    pool = space.PoolSpace(Conn(), FakeLocks(held={"other"}))
    omap = Omap(pool, monkeypatch, {"other/x": {"bytes": 4 * GIB, "cookie": "x"}})
    lease = FakeLease(image_id="mine")
    with pytest.raises(exception.NotEnoughSpace, match="need 2147483648, have 1073741824") \
            as refused:
        pool.reserve(lease, 2 * GIB)
    assert exception.NotEnoughSpace.parse(str(refused.value)) == (exception.Room.POOL, 2 * GIB)
    assert set(omap.values) == {"other/x"}
    pool.reserve(lease, GIB)
    assert pool.entries()["mine/" + lease.cookie] == {"bytes": GIB, "cookie": lease.cookie}


def test_a_reservation_replaces_those_of_the_images_earlier_leases(monkeypatch):
    pool = space.PoolSpace(Conn(), FakeLocks())
    omap = Omap(pool, monkeypatch, {"mine/dead": {"bytes": GIB, "cookie": "dead"},
                                    "mine": {"bytes": GIB, "cookie": "older"},
                                    "minefield/x": {"bytes": GIB, "cookie": "x"}})
    lease = FakeLease(image_id="mine")
    pool.reserve(lease, GIB)
    assert set(omap.values) == {"mine/" + lease.cookie, "minefield/x"}


def test_a_release_leaves_a_later_holders_reservation(monkeypatch):
    """The old holder's release and the new holder's reservation at the same moment: the old
    one removes its own entry only."""
    pool = space.PoolSpace(Conn(), FakeLocks())
    omap = Omap(pool, monkeypatch)
    old, new = FakeLease("cookie-old", "img"), FakeLease("cookie-new", "img")
    pool.reserve(old, GIB)
    omap.meanwhile = lambda: pool.reserve(new, GIB)  # before the release's write lands
    pool.release("img", old.cookie)
    assert [entry["cookie"] for entry in pool.entries().values()] == ["cookie-new"]
    pool.release("img", None)  # while the caller's lease holds: whoever's
    assert omap.values == {}


class Omap:
    """The reservations object's omap, behind the ioctx of ``pool``'s connection;
    ``meanwhile()`` runs once, before the next write lands (another worker's request)."""

    def __init__(self, pool, monkeypatch, entries=None):
        self.values = {key: json.dumps(entry).encode() for key, entry in (entries or {}).items()}
        self.meanwhile = None
        monkeypatch.setattr(space.rados, "WriteOpCtx", RecordedOp)
        monkeypatch.setattr(space.rados, "ReadOpCtx", RecordedOp)
        monkeypatch.setattr(pool.conn, "ioctx", lambda: contextlib.nullcontext(self),
                            raising=False)

    def get_omap_vals(self, op, start, prefix, count):
        found = []
        op.steps.append(lambda: found.extend(sorted(self.values.items())))
        return found, 0

    def set_omap(self, op, keys, values):
        op.steps.append(lambda: self.values.update(zip(keys, values)))

    def remove_omap_keys(self, op, keys):
        op.steps.append(lambda: [self.values.pop(key, None) for key in keys])

    def operate_read_op(self, op, name):
        for step in op.steps:
            step()

    def operate_write_op(self, op, name):
        meanwhile, self.meanwhile = self.meanwhile, None
        if meanwhile is not None:
            meanwhile()
        for step in op.steps:
            step()


@pytest.mark.parametrize("value, entry", [
    (b'{"bytes": 5, "cookie": "c"}', {"bytes": 5, "cookie": "c"}),
    (b'{"bytes": "5"}', {}),
    (b"[1]", {}),
    (b"\xff", {}),
    (b"not json", {}),
])
def test_an_entry_that_is_not_ours_counts_for_nothing(value, entry):
    assert space._entry(value) == entry
