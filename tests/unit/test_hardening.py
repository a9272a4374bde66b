"""Bounded reading of qemu-img map, conversion_dir's leftovers and downloads, the image listing's
pages and refused updates."""

import io
import uuid

import pytest
from keystoneauth1 import exceptions as ks_exc

from cacheraw import converter
from cacheraw import exception
from cacheraw import image_api

MAP = (b'[{ "start": 0, "length": 65536, "depth": 0, "present": true, "zero": false, '
       b'"data": true, "offset": 327680},\n'
       b'{ "start": 65536, "length": 131072, "depth": 0, "present": true, "zero": true, '
       b'"data": false},\n'
       b'{ "start": 196608, "length": 1048576, "depth": 0, "present": true, "zero": false, '
       b'"data": true, "offset": 393216}]\n')


def test_map_is_counted_one_extent_at_a_time():
    counter = converter._ExtentCounter(100)
    counter.consume(io.BytesIO(MAP))
    assert (counter.extents, counter.data) == (3, 65536 + 1048576)


def test_map_reading_stops_at_its_bound():
    counter = converter._ExtentCounter(2)
    with pytest.raises(converter._EnoughRead):
        counter.consume(io.BytesIO(MAP * 1000))
    assert counter.extents == 2


@pytest.mark.parametrize("output", [b"x" * 10000 + b"\n", b"[{ not json },\n",
                                    b'[{"start": 0}]\n'])
def test_map_output_that_is_not_extents_is_refused(output):
    with pytest.raises(exception.UnsafeImage):
        converter._ExtentCounter(100).consume(io.BytesIO(output))


def test_leftovers_are_removed_unless_their_image_is_locked(tmp_path):
    mine, busy = str(uuid.uuid4()), str(uuid.uuid4())
    names = ["%s.download" % mine, "%s.key" % mine, "%s.download" % busy, "other.download",
             "%s.download.txt" % mine]
    for name in names:
        (tmp_path / name).write_text("x")
    removed = converter.clean_conversion_dir(str(tmp_path), in_use=lambda i: i == busy)
    assert sorted(removed) == sorted(names[:2])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names[2:])


class Conf:
    class converter:  # noqa: N801 - the shape of oslo.config's group
        conversion_dir = None


class Images:
    def __init__(self, fail):
        self.fail = fail

    def download(self, image_id, path, size, checksums, check=None):
        with open(path, "wb") as f:
            f.write(b"partial")
        check()
        raise self.fail


class KeyStore:
    def secret_key(self):
        return "c2VjcmV0"


class CancelledJob:
    def check(self):
        raise exception.WorkerStopping("worker stopping")


@pytest.mark.parametrize("in_place", [False, True])
def test_source_files_are_removed_in_every_outcome(tmp_path, in_place):
    conf = Conf()
    conf.converter.conversion_dir = str(tmp_path)
    image = {"id": str(uuid.uuid4()), "size": 7}
    preparer = converter.SourcePreparer(conf, Images(AssertionError("not reached")), KeyStore(),
                                        image, CancelledJob(), "rbd" if in_place else None)
    if in_place:
        with pytest.raises(RuntimeError):
            with preparer as (source, secret):
                assert source == "rbd" and open(secret).read() == "c2VjcmV0"
                raise RuntimeError("qemu-img failed")
    else:
        with pytest.raises(exception.WorkerStopping):  # cancelled between two chunks
            with preparer:
                pass
    assert list(tmp_path.iterdir()) == []


class FakeResponse:
    def __init__(self, body):
        self.body = body

    def json(self):
        return self.body


class FakeAdapter:
    """Glance capping its pages at 2 images (api_limit_max) whatever limit is asked."""

    def __init__(self, ids):
        self.ids = ids
        self.patch_status = None

    def get(self, url, params=None, **kwargs):
        if url.endswith("/images"):
            start = self.ids.index(params["marker"]) + 1 if params.get("marker") else 0
            page = [{"id": i} for i in self.ids[start:start + 2]]
            more = start + 2 < len(self.ids)
            return FakeResponse(dict(images=page, **({"next": "/v2/images?marker=x"}
                                                     if more else {})))
        return FakeResponse({"id": "x"})

    def patch(self, url, **kwargs):
        raise ks_exc.HttpError(http_status=self.patch_status)


def api_over(adapter):
    api = image_api.ImageAPI.__new__(image_api.ImageAPI)
    api._api = adapter
    api._seen = image_api._Remembered()
    api._retry = lambda func, *args, **kwargs: func(*args, **kwargs)
    return api


def test_listing_follows_next_links_past_short_pages():
    ids = ["id-%d" % n for n in range(5)]
    assert [i["id"] for i in api_over(FakeAdapter(ids)).list()] == ids


@pytest.mark.parametrize("status,error", [(413, exception.ImageUpdateRefused),
                                          (403, exception.ImageUpdateRefused),
                                          (503, exception.ImageAPIUnavailable)])
def test_a_refused_update_is_its_own_error(status, error):
    adapter = FakeAdapter([])
    adapter.patch_status = status
    with pytest.raises(error):
        api_over(adapter).update("x", {"cache_raw_status": "Cached"})
