"""cacheraw.ceph.locks and cacheraw.ceph.space against the stack's real RADOS objects, as the
restricted cacheraw user: cls_lock's requests as this package encodes them (lock with
MUST_RENEW, assert_locked, unlock, get_info), a take whose answer was lost, the fencing of a
holder whose lease ran out (blocklisted with its expiry), and the pool's room."""

import json
import time
import uuid

import pytest
from oslo_config import cfg

from cacheraw import exception
from cacheraw.ceph import connection
from cacheraw.ceph import lease as lease_mod
from cacheraw.ceph import locks as locks_mod
from cacheraw.ceph import space as space_mod
from cacheraw.conf import register_opts


@pytest.fixture
def conf(stack):
    c = cfg.ConfigOpts()
    register_opts(c)
    c(["--config-file", str(stack["cacheraw_conf"])])
    c.set_override("retry_initial_delay", 0, group="worker")
    c.set_override("blocklist_expiry", 600, group="ceph")
    return c


@pytest.fixture
def connect(conf):
    opened = []

    def open_one():
        conn = connection.Connection(conf)
        conn.connect()
        opened.append(conn)
        return conn, locks_mod.RadosLocks(conn, conf.ceph.blocklist_expiry)

    yield open_one
    for conn in opened:
        conn.close()


def image_id():
    return str(uuid.uuid4())


def blocklist_entries(admin):
    ret, out, err = admin.mon_command(json.dumps({"prefix": "osd blocklist ls",
                                                  "format": "json"}), b"", timeout=30)
    assert ret == 0, err
    entries, _ = json.JSONDecoder().raw_decode(out.decode())
    return {entry["addr"]: entry["until"] for entry in entries}


def test_a_lock_is_taken_renewed_asked_about_and_released(connect):
    _, locks = connect()
    image = image_id()
    assert not locks.is_locked(image)
    locks.take(image, "cookie-a", 30)
    assert locks.is_locked(image)
    assert locks.holder_record(image)["cookie"] == "cookie-a"
    locks.renew(image, "cookie-a", 30, timeout=5)
    with pytest.raises(exception.LockLost):
        locks.renew(image, "cookie-b", 30, timeout=5)  # MUST_RENEW: never taken anew
    with pytest.raises(exception.LockLost):
        locks.release(image, "cookie-b")  # assert_locked: not the holder's cookie
    locks.release(image, "cookie-a")
    assert not locks.is_locked(image)
    assert locks.holder_record(image) is None  # the object is gone with the lock


def test_another_client_finds_the_lock_busy(connect):
    _, first = connect()
    _, second = connect()
    image = image_id()
    first.take(image, "cookie-a", 30)
    try:
        with pytest.raises(exception.LockBusy):
            second.take(image, "cookie-b", 30)
    finally:
        first.release(image, "cookie-a")


def test_a_take_whose_answer_was_lost_is_its_own_success_on_retry(connect):
    _, locks = connect()
    image = image_id()
    locks.take(image, "cookie-a", 30)
    locks.take(image, "cookie-a", 30)  # the retry meets EEXIST: this very locker holds it
    assert locks.is_locked(image)
    locks.release(image, "cookie-a")


def test_a_renewal_after_the_lock_expired_is_lost(connect):
    _, locks = connect()
    image = image_id()
    locks.take(image, "cookie-a", 1.5)
    time.sleep(2.5)
    assert not locks.is_locked(image)
    with pytest.raises(exception.LockLost):
        locks.renew(image, "cookie-a", 30, timeout=5)
    locks.release(image, "cookie-a")  # nobody took it since: removed with its record
    assert locks.holder_record(image) is None


def test_a_lease_that_ran_out_leaves_no_record_to_fence_its_healthy_worker(connect,
                                                                        admin_cluster):
    """The lock expired (renewals failed) and nobody took it: its release removes the object
    with its record, so that whoever takes the lock later does not blocklist that worker, busy
    with other images; a lock another client took meanwhile is left to it."""
    first_conn, first = connect()
    _, second = connect()
    image, taken = image_id(), image_id()
    first.take(image, "cookie-a", 1.5)
    first.take(taken, "cookie-c", 1.5)
    time.sleep(2.5)
    first.release(image, "cookie-a")
    assert first.holder_record(image) is None
    second.take(image, "cookie-b", 30)
    second.release(image, "cookie-b")
    assert first_conn.address() not in blocklist_entries(admin_cluster)
    assert not first.is_locked(image)  # the first client is not fenced
    second.take(taken, "cookie-d", 30)  # blocklists the first: its lease of taken ran out
    try:
        with pytest.raises(exception.CephBlocklisted):
            first.release(taken, "cookie-c")
        assert second.holder_record(taken)["cookie"] == "cookie-d"
    finally:
        second.release(taken, "cookie-d")
        _unblocklist(admin_cluster, first_conn.address())


def test_the_taker_of_an_expired_lease_blocklists_its_holder_first(connect, admin_cluster):
    stalled_conn, stalled = connect()
    _, rescuer = connect()
    image = image_id()
    stalled.take(image, "cookie-stalled", 1.5)
    address = stalled_conn.address()
    assert stalled.holder_record(image)["addr"] == address
    time.sleep(2.5)
    before = time.time()
    rescuer.take(image, "cookie-rescuer", 30)
    try:
        until = blocklist_entries(admin_cluster).get(address)
        assert until is not None, blocklist_entries(admin_cluster)
        with pytest.raises(exception.CephBlocklisted):
            stalled.is_locked(image)
        assert stalled_conn.blocklisted.is_set()
        assert rescuer.holder_record(image)["cookie"] == "cookie-rescuer"
    finally:
        rescuer.release(image, "cookie-rescuer")
        _unblocklist(admin_cluster, address)
    assert until  # "2026-12-07T10:11:12.345678+0000": the expiry, 600 s on
    assert before < time.mktime(time.strptime(until[:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone


def _unblocklist(admin, address):
    ret, _, err = admin.mon_command(json.dumps({"prefix": "osd blocklist", "blocklistop": "rm",
                                                "addr": address}), b"", timeout=30)
    assert ret == 0, err


def test_a_lease_that_ran_out_in_this_very_process_fences_nobody(connect, admin_cluster):
    conn, locks = connect()
    image = image_id()
    locks.take(image, "cookie-a", 1.5)
    time.sleep(2.5)
    with pytest.raises(exception.LockBusy):
        locks.take(image, "cookie-b", 30)  # cookie-a's block still runs in this process
    locks.release(image, "cookie-a")  # its block ends; the lock had expired: removed
    locks.take(image, "cookie-b", 30)
    assert conn.address() not in blocklist_entries(admin_cluster)
    locks.release(image, "cookie-b")


def test_a_lease_renews_within_its_timing_on_the_real_cluster(connect):
    _, locks = connect()
    image = image_id()
    with lease_mod.hold(locks, image, 12, renewal_timeout=1) as lease:
        time.sleep(13)
        assert lease.held()
    assert not locks.is_locked(image)


def test_the_pool_room_is_below_the_nearfull_ratio(connect, conf, admin_cluster):
    conn, locks = connect()
    room, why = space_mod.PoolSpace(conn, locks).room()
    df = json.loads(admin_cluster.mon_command(json.dumps({"prefix": "df", "format": "json"}),
                                              b"", timeout=30)[1])
    max_avail = next(p["stats"]["max_avail"] for p in df["pools"] if p["name"] == conn.pool)
    assert 0 < room < max_avail
    assert "nearfull ratio" in why
    lower, why = space_mod.PoolSpace(conn, locks, max_pool_usage=0.1).room()
    assert lower < room and "max_pool_usage" in why


def test_running_conversions_reserve_their_space_on_every_worker(connect):
    """Two workers: the first conversion reserves 60% of the room; the second, on another
    client, is refused the same; once the first ends (its reservation released), it fits."""
    first_conn, first_locks = connect()
    second_conn, second_locks = connect()
    first_space = space_mod.PoolSpace(first_conn, first_locks)
    second_space = space_mod.PoolSpace(second_conn, second_locks)
    room, _ = first_space.room()
    need = room * 6 // 10
    with lease_mod.hold(first_locks, image_id(), 30) as first:
        first_space.reserve(first, need)
        with lease_mod.hold(second_locks, image_id(), 30) as second:
            with pytest.raises(exception.NotEnoughSpace, match="reserved by running conv"):
                second_space.reserve(second, need)
            assert [key for key in second_space.entries()
                    if space_mod.image_of(key) == second.image_id] == []
            first_space.release(first.image_id, first.cookie)
            second_space.reserve(second, need)
            second_space.release(second.image_id, second.cookie)
    assert first_space.entries() == {}


def test_a_release_removes_only_its_own_reservation(connect):
    """An old holder's release after a new holder of the same image reserved removes the old
    entry only (by its key, unread)."""
    conn, locks = connect()
    pool = space_mod.PoolSpace(conn, locks)
    image = image_id()
    with lease_mod.hold(locks, image, 30) as lease:
        pool.reserve(lease, 1024)
        pool.release(image, "an-old-lease")
        assert pool.entries()["%s/%s" % (image, lease.cookie)]["bytes"] == 1024
        pool.release(image, lease.cookie)
    assert pool.entries() == {}
