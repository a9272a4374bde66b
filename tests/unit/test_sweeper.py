"""The sweep (cacheraw.sweeper): what notifications missed, retries, orphaned caches and the
breaker that holds their removal back."""

import datetime

import pytest

from cacheraw import cacher
from cacheraw import exception
from cacheraw import sweeper
from tests.unit.conftest import FakeImages
from tests.unit.conftest import FakeStore
from tests.unit.conftest import LockingStore

ID = "0dc0185d-550c-461a-bdc5-25b9e20586d5"


def test_the_sweep_turns_the_error_of_a_raw_image_into_not_needed(conf):
    images = FakeImages({"id": ID, "status": "active", "cache_raw": "True",
                         "disk_format": "raw", "cache_raw_status": "Error",
                         "cache_raw_error": "image is already raw; clone it directly"})
    core = cacher.Cacher(conf, images, FakeStore(), None)
    sweeper.Sweeper(core)._sweep_image(images.get(ID))
    assert images.image["cache_raw_status"] == "NotNeeded"
    assert "cache_raw_error" not in images.image


def transient_image(attempt, minutes_ago):
    updated = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(
        minutes=minutes_ago)
    return {"id": ID, "status": "active", "cache_raw": "True", "disk_format": "qcow2",
            "cache_raw_status": "Error", "updated_at": updated.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "cache_raw_error": "temporary failure (attempt %d of 5): Ceph timed out" % attempt}


@pytest.mark.parametrize("attempt,minutes_ago,due", [(1, 0, False), (1, 2, True),
                                                    (3, 3, False), (3, 5, True),
                                                    (5, 600, False)])
def test_sweep_retries_transient_errors_with_growing_capped_delays(conf, attempt, minutes_ago,
                                                                   due):
    queued = []
    core = cacher.Cacher(conf, None, FakeStore(), None, enqueue=queued.append)
    assert sweeper.Sweeper(core)._retry_due(transient_image(attempt, minutes_ago)) is due
    assert queued == ([ID] if due else [])


def space_refused_image(room, need):
    return {"id": ID, "status": "active", "cache_raw": "True", "disk_format": "qcow2",
            "cache_raw_status": "Error",
            "cache_raw_error": exception.one_line(exception.NotEnoughSpace(
                room, "images" if room == exception.Room.POOL else "/var/lib/cacheraw", need,
                need - 1, " (limited by the nearfull ratio 0.85; 0 reserved by running "
                "conversions)"))}


class RoomyStore(FakeStore):
    def __init__(self, room):
        self.room = room

    def available_space(self):
        return self.room()


@pytest.mark.parametrize("room", list(exception.Room))
def test_an_image_refused_for_space_is_retried_once_there_is_room_for_it(conf, monkeypatch,
                                                                          room):
    """The pool's room for a cache, conversion_dir's for a download, each asked once a sweep
    and counted as taken by the images it lets through."""
    free = {"pool": 0, "conversion directory": 0}
    monkeypatch.setattr(sweeper.converter, "free_bytes",
                        lambda directory: free["conversion directory"])
    queued = []
    core = cacher.Cacher(conf, None, RoomyStore(lambda: free["pool"]), None,
                         enqueue=lambda image_id: queued.append(image_id) or True)
    assert not sweeper.Sweeper(core)._sweep_image(space_refused_image(room, 100))
    assert queued == []
    free[room.value] = 150
    sweep = sweeper.Sweeper(core)
    assert sweep._sweep_image(space_refused_image(room, 100))
    assert queued == [ID]
    assert not sweep._sweep_image(space_refused_image(room, 100))  # 50 left this sweep
    assert queued == [ID]
    other = exception.Room.POOL if room == exception.Room.CONVERSION_DIR \
        else exception.Room.CONVERSION_DIR
    assert not sweeper.Sweeper(core)._sweep_image(space_refused_image(other, 100))


class OrphanStore(LockingStore):
    """Two orphaned caches; Ceph refuses to remove the first, and to purge the trash."""

    def __init__(self, ids):
        super().__init__()
        self.ids = ids

    def list_caches(self):
        return [image_id + "_raw" for image_id in self.ids]

    def remove(self, name, lease=None):
        if name.startswith(self.ids[0]):
            raise exception.CephError("PermissionError: error listing children")
        self.removed.append(name)
        return "removed"

    def purge_trash(self):
        raise exception.CephError("PermissionError: error listing children")


class NoImages:
    def list(self, **filters):
        return []

    def get(self, image_id):
        raise exception.ImageNotFound(image_id)


def test_one_cache_that_cannot_be_removed_does_not_stop_the_sweep(conf):
    other = "5b0ec9b3-5bd4-4bd6-a52a-1f9b0c1a3a2e"
    store = OrphanStore([ID, other])
    core = cacher.Cacher(conf, NoImages(), store, None, enqueue=lambda image_id: None)
    assert core.sweep() == 0
    assert store.removed == [other + "_raw"]


# -- the sweep's breaker: most caches' images reading as gone at once removes nothing

def test_the_sweep_removes_nothing_when_most_cached_images_read_as_gone(conf, caplog):
    from cacheraw import metrics
    ids = ["%08d-0000-4000-8000-000000000000" % n for n in range(6)]
    store = OrphanStore([ID] + ids)
    store.remove = lambda name, lease: store.removed.append(name) or "removed"
    store.purge_trash = lambda: []
    core = cacher.Cacher(conf, NoImages(), store, None, enqueue=lambda image_id: None)
    core.sweep()
    assert store.removed == []
    assert metrics.ORPHAN_BREAKER._value.get() == 1
    assert "removing none of them" in caplog.text
    core.sweep(confirmed=True)  # cacheraw-manage reconcile
    assert len(store.removed) == 7
    store.ids = ids[:2]  # fewer than orphan_breaker_min
    core.sweep()
    assert metrics.ORPHAN_BREAKER._value.get() == 0
    assert len(store.removed) == 9
