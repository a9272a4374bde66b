"""The checks the Cinder and Nova drivers share before they clone an image's RAW cache: the
image's properties, then Ceph (a fake cluster; the snapshot opened by the consumer's helper)."""

from unittest import mock

import pytest
import rbd

from cacheraw import clone_checks

FSID = "5fe62cc7-0392-4a32-8466-081ce0ea970f"
OTHER_FSID = "0c7d1f44-5a06-403f-bb82-ae7ad0d693a6"
IMAGE_ID = "155d900f-4e14-4e4c-a73d-069cbf4541e6"
OTHER_IMAGE = "c905cedb-7281-47e4-8a62-f26bc5fc4c77"
URL = "rbd://%s/images/%s_raw/snap" % (FSID, IMAGE_ID)


def props(**changes):
    base = {"cache_raw": "True", "cache_raw_status": "Cached", "cache_raw_url": URL,
            "cache_raw_size": "1073741824"}
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def test_a_cached_image_names_its_cache():
    cache = clone_checks.cached(IMAGE_ID, props(), "disk x")
    assert cache == clone_checks.Cache(IMAGE_ID, FSID, "images", IMAGE_ID + "_raw", "snap", URL)


@pytest.mark.parametrize("changes", [
    {"cache_raw_status": None},
    {"cache_raw_status": "Queued"},
    {"cache_raw_status": "Caching"},
    {"cache_raw_status": "Error"},
    {"cache_raw_status": "cached"},
    {"cache_raw_url": None},
    {"cache_raw_url": "rbd://%s/images/%s_raw/snap" % (FSID, OTHER_IMAGE)},
    {"cache_raw_url": "rbd://%s/images/%s/snap" % (FSID, IMAGE_ID)},
    {"cache_raw_url": URL + "\n"},
    {"cache_raw_url": "rbd://%s/images%%2F..%%2Fvms/%s_raw/snap" % (FSID, IMAGE_ID)},
    {"cache_raw_url": ["not", "a", "string"]},
    {"cache_raw_url": "x" * 100000},
])
def test_anything_but_this_image_s_cached_cache_is_none(changes):
    assert clone_checks.cached(IMAGE_ID, props(**changes), "disk x") is None


def test_an_image_without_an_id_has_no_cache():
    assert clone_checks.cached(None, props(), "disk x") is None


class FakeCluster:
    def __init__(self, fsid=FSID, pools=("images", "vms")):
        self.fsid, self.pools, self.opened = fsid, set(pools), []

    def get_fsid(self):
        return self.fsid

    def pool_exists(self, name):
        return name in self.pools

    def open_ioctx(self, name):
        assert name in self.pools
        self.opened.append(name)
        ioctx = mock.MagicMock(name="ioctx")
        ioctx.__enter__.return_value = "ioctx-%s" % name
        return ioctx


def snapshot(protected=True, size=1 << 30, error=None):
    snap = mock.MagicMock(name="snap")
    snap.__enter__.return_value = snap
    snap.is_protected_snap.return_value = protected
    snap.size.return_value = size
    return mock.Mock(side_effect=error, return_value=snap)


CACHE = clone_checks.Cache(IMAGE_ID, FSID, "images", IMAGE_ID + "_raw", "snap", URL)


def test_a_protected_snapshot_of_this_cluster_gives_its_size():
    cluster, open_snap = FakeCluster(), snapshot(size=3 << 30)
    assert clone_checks.protected_snap_size(cluster, CACHE, open_snap) == 3 << 30
    open_snap.assert_called_once_with("ioctx-images")
    open_snap.return_value.is_protected_snap.assert_called_once_with("snap")


@pytest.mark.parametrize("cluster, open_snap", [
    (FakeCluster(fsid=OTHER_FSID), snapshot()),
    (FakeCluster(pools=("vms",)), snapshot()),
    (FakeCluster(), snapshot(protected=False)),
], ids=["another cluster", "no such pool", "unprotected"])
def test_a_cache_ceph_does_not_confirm_is_none(cluster, open_snap):
    assert clone_checks.protected_snap_size(cluster, CACHE, open_snap) is None


def test_a_missing_pool_is_never_opened():
    cluster, open_snap = FakeCluster(pools=("vms",)), snapshot()
    clone_checks.protected_snap_size(cluster, CACHE, open_snap)
    assert cluster.opened == [] and not open_snap.called


def test_ceph_s_errors_reach_the_consumer():
    with pytest.raises(rbd.ImageNotFound):
        clone_checks.protected_snap_size(FakeCluster(), CACHE,
                                         snapshot(error=rbd.ImageNotFound("gone")))
