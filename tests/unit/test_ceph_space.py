"""cacheraw.ceph.space: the pool's room below its ceiling (from the cluster's maps, as the
monitors answer them), the reservations of the running conversions, and a reservation refused
when it does not fit."""

import pytest

from cacheraw import exception
from cacheraw.ceph import space
from tests.unit.conftest import FakeLease
from tests.unit.conftest import FakeLocks

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
        "a": {"bytes": 4 * GIB}, "b": {"bytes": GIB}, "dead": {"bytes": 9 * GIB}})
    assert pool.reserved() == 2 * GIB  # a quarter of a, all of b, nothing of the dead one
    assert pool.reserved(but="b") == GIB
    assert pool.available() == 3 * GIB


def test_a_reservation_that_does_not_fit_is_refused_and_not_kept(monkeypatch):
    pool = space.PoolSpace(Conn(), FakeLocks(held={"other"}))
    entries = {"other": {"bytes": 4 * GIB, "cookie": "x"}}
    monkeypatch.setattr(pool, "entries", lambda: dict(entries))
    monkeypatch.setattr(pool, "_write", lambda image_id, entry, lease=None:
                        entries.__setitem__(image_id, entry))
    monkeypatch.setattr(pool, "_remove", entries.pop)
    lease = FakeLease(image_id="mine")
    with pytest.raises(exception.NotEnoughSpace, match="need 2147483648, have 1073741824"):
        pool.reserve(lease, 2 * GIB)
    assert set(entries) == {"other"}
    pool.reserve(lease, GIB)
    assert entries["mine"] == {"bytes": GIB, "cookie": lease.cookie}


def test_a_release_leaves_a_later_holders_reservation(monkeypatch):
    pool = space.PoolSpace(Conn(), FakeLocks())
    entries = {"mine": {"bytes": 1, "cookie": "later"}}
    monkeypatch.setattr(pool, "entries", lambda: dict(entries))
    monkeypatch.setattr(pool, "_remove", entries.pop)
    pool.release("mine", "stale")
    assert "mine" in entries
    pool.release("mine", None)
    assert entries == {}


@pytest.mark.parametrize("value, entry", [
    (b'{"bytes": 5, "cookie": "c"}', {"bytes": 5, "cookie": "c"}),
    (b'{"bytes": "5"}', {}),
    (b"[1]", {}),
    (b"\xff", {}),
    (b"not json", {}),
])
def test_an_entry_that_is_not_ours_counts_for_nothing(value, entry):
    assert space._entry(value) == entry
