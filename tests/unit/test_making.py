"""How a cache's data is made (cacheraw.making): where qemu-img reads the image, the space limit,
sharing an identical image's cache, the published progress."""

import pytest

from cacheraw import converter
from cacheraw import exception
from cacheraw import identical
from cacheraw import making
from tests.unit.conftest import FakeLease
from tests.unit.conftest import FakeStore

ID = "0dc0185d-550c-461a-bdc5-25b9e20586d5"
TWIN = "5b0ec9b3-5bd4-4bd6-a52a-1f9b0c1a3a2e"


class Core:
    def __init__(self, conf, store):
        self.conf = conf
        self.images = None
        self.store = store
        self.converter = None
        self.fsid = store.fsid()


class ReservingStore(FakeStore):
    def __init__(self):
        self.reserved = []
        self.progress = []
        self.removed = []
        self.clone_error = None
        self.progress_error = None

    def reserve(self, lease, need):
        self.reserved.append(need)

    def set_progress(self, lease, progress):
        if self.progress_error:
            raise self.progress_error
        self.progress.append(progress["percent"])

    def clone_cache(self, source, target, lease, independent=False):
        if self.clone_error:
            raise self.clone_error
        return source, "rbd-id"

    def publish(self, name, rbd_id, lease):
        self.published = (name, rbd_id)

    def used_bytes(self, name, snapshot="snap", with_parent=False):
        return 7000 if with_parent else 0

    def remove_partial(self, name, lease=None):
        self.removed.append(name)


def test_an_image_in_our_pool_is_read_in_place_any_other_downloaded(conf):
    core = Core(conf, ReservingStore())
    here = making.locate(core, {"id": ID, "direct_url": "rbd://fsid/images/%s/snap" % ID})
    assert isinstance(here, converter.RBDSource)
    assert str(here) == "rbd images/%s@snap" % ID
    for elsewhere in ("rbd://other-fsid/images/%s/snap" % ID, "rbd://fsid/vms/%s/snap" % ID,
                      "file:///var/lib/glance/images/" + ID, None):
        assert making.locate(core, {"id": ID, "direct_url": elsewhere}) is None


def test_an_image_that_expands_too_much_is_refused_before_any_space_is_reserved(conf):
    store = ReservingStore()
    conf.set_override("max_expansion", 4, group="converter")
    try:
        with pytest.raises(exception.ExpandsTooMuch, match="more than .* max_expansion = 4 "
                                                           "times its upload of 100 bytes"):
            making.check_space(conf, store, {"size": 100}, 401, FakeLease())
        making.check_space(conf, store, {"size": 100}, 400, FakeLease())
    finally:
        conf.clear_override("max_expansion", group="converter")
    making.check_space(conf, store, {"size": 100}, 10 ** 9, FakeLease())  # 0: no limit
    assert store.reserved == [400, 10 ** 9]


class Twins:
    """A Finder that finds ``twin`` (or nothing) in ``mode``."""

    def __init__(self, twin, mode="clone"):
        self.found = twin
        self.mode = identical.Mode(mode)

    def twin(self, image):
        return self.found


def test_a_cache_shared_with_a_twin_is_published_from_the_twins_cache(conf):
    store = ReservingStore()
    origin = making.share(conf, store, Twins({"id": TWIN}), {"id": ID}, FakeLease())
    assert origin == TWIN + "_raw"
    assert store.published == (ID + "_raw", "rbd-id")


def test_no_twin_or_a_failed_clone_shares_nothing_and_leaves_nothing(conf):
    store = ReservingStore()
    assert making.share(conf, store, Twins(None), {"id": ID}, FakeLease()) is None
    assert store.removed == []
    store.clone_error = exception.CephBusy("snapshot unprotected")
    assert making.share(conf, store, Twins({"id": TWIN}), {"id": ID}, FakeLease()) is None
    assert store.removed == [ID + "_raw"]
    store.clone_error = exception.CephBlocklisted("fenced")
    with pytest.raises(exception.CephBlocklisted):
        making.share(conf, store, Twins({"id": TWIN}), {"id": ID}, FakeLease())


def test_a_copy_reserves_the_bytes_of_the_cache_it_copies_a_clone_none(conf):
    store = ReservingStore()
    assert making.share(conf, store, Twins({"id": TWIN}), {"id": ID, "size": 5000},
                        FakeLease()) == TWIN + "_raw"
    assert store.reserved == []
    assert making.share(conf, store, Twins({"id": TWIN}, "copy"), {"id": ID, "size": 5000},
                        FakeLease()) == TWIN + "_raw"
    assert store.reserved == [7000]


def test_a_copy_that_does_not_fit_is_not_made_and_the_image_is_converted(conf):
    store = ReservingStore()
    store.reserve = lambda lease, need: (_ for _ in ()).throw(
        exception.NotEnoughSpace("not enough space in pool images"))
    store.clone_cache = None  # never reached
    assert making.share(conf, store, Twins({"id": TWIN}, "copy"), {"id": ID, "size": 5000},
                        FakeLease()) is None
    assert store.removed == [ID + "_raw"]


def test_progress_is_published_at_most_once_an_interval_and_always_at_the_end(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(making.time, "monotonic", lambda: now[0])
    store = ReservingStore()
    publish = making.ProgressPublisher(store, FakeLease(), 1 << 20)
    for percent in (1, 2, 3):
        publish(percent)
        now[0] += 0.6
    publish(100)
    assert store.progress == [1, 3, 100]
    store.progress_error = exception.CephUnavailable("timed out")
    publish(100)  # a missed sample, no failure
