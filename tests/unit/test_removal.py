"""The removal of a cache (cacheraw.removal), through the core's forget()."""

import logging

import pytest

from cacheraw import cacher
from cacheraw import exception
from cacheraw import removal
from tests.unit.conftest import FakeImages
from tests.unit.conftest import LockingStore

ID = "0dc0185d-550c-461a-bdc5-25b9e20586d5"
TWIN = "5b0ec9b3-5bd4-4bd6-a52a-1f9b0c1a3a2e"


def test_a_removed_cache_purges_at_once_the_trashed_cache_it_shared(conf, caplog):
    caplog.set_level(logging.INFO)
    store = LockingStore()
    store.remove = lambda name, lease: "removed"
    store.purge_trash = lambda: [TWIN + "_raw"]
    core = cacher.Cacher(conf, FakeImages(None), store, None)
    core.forget(ID)
    assert "Purged cache %s_raw: its last clone is gone" % TWIN in caplog.text
    store.remove = lambda name, lease: "trashed"
    store.purge_trash = lambda: pytest.fail("a trashed cache frees nothing")
    core.forget(ID)


def test_a_deleted_image_another_worker_converts_is_left_to_that_worker(conf):
    store = LockingStore()
    store.locks.steal(ID)
    cancelled = []
    core = cacher.Cacher(conf, FakeImages(None), store, None,
                         cancel=lambda image_id, reason: cancelled.append((image_id, str(reason))))
    core.forget(ID)
    assert cancelled == [(ID, "image deleted")]
    assert store.removed == []


def test_a_purge_that_ceph_refuses_is_a_warning_and_purges_nothing(caplog):
    store = LockingStore()

    def refuse():
        raise exception.CephError("PermissionError: error listing children")

    store.purge_trash = refuse
    assert removal.purge_trash(store) == []
    assert "Could not purge the trash: PermissionError" in caplog.text
