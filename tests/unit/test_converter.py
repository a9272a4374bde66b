"""The converter: where qemu-img reads and writes (sources, the sockets' folder, downloads),
conversion_dir's leftovers, and its steps on a real qemu-img in its sandbox."""

import contextlib
import os
import subprocess
import uuid

import pytest

from cacheraw import converter
from cacheraw import exception

def test_leftovers_are_removed_unless_their_image_is_locked(tmp_path):
    mine, busy = str(uuid.uuid4()), str(uuid.uuid4())
    names = ["%s.download" % mine, "%s.nbd" % mine, "%s.key" % mine, "%s.download" % busy,
             "other.download", "%s.download.txt" % mine]
    for name in names:
        (tmp_path / name).write_text("x")
    (tmp_path / names[1]).unlink()
    (tmp_path / names[1]).mkdir()  # the folder of the NBD sockets
    (tmp_path / names[1] / "source").write_text("x")
    removed = converter.clean_conversion_dir(str(tmp_path), in_use=lambda i: i == busy)
    assert sorted(removed) == sorted(names[:3])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names[3:])


class Conf:
    class converter:  # noqa: N801 - the shape of oslo.config's group
        conversion_dir = None


class Images:
    def __init__(self, fail, image=None):
        self.fail = fail
        self.image = image

    def get(self, image_id):
        if self.image is None:
            raise exception.ImageNotFound(image_id)
        return self.image

    def download(self, image_id, path, size, checksums, check=None):
        with open(path, "wb") as f:
            f.write(b"partial")
        check()
        raise self.fail


class ServingStore:
    """A pool whose image ``rbd`` is served to qemu-img (a file stands for the socket), or found
    deleted (``gone``)."""

    def __init__(self, gone=False):
        self.gone = gone

    @contextlib.contextmanager
    def serve_cache(self, name, path):
        with self.serve_snapshot(name, None, path) as served:
            yield served

    @contextlib.contextmanager
    def serve_snapshot(self, name, snapshot, path):
        if self.gone:
            raise exception.CephNotFound("[errno 2] image gone")
        self.path = path
        open(path, "w").close()
        try:
            yield object()
        finally:
            os.unlink(path)  # as cacheraw.qemu.nbd.Export removes its socket


class RBDSource:
    store, name, snapshot = None, "rbd", "snap"

    def __str__(self):
        return self.name


class CancelledJob:
    def check(self):
        raise exception.WorkerStopping("worker stopping")


@pytest.mark.parametrize("source,gone,error", [
    ("download", False, exception.WorkerStopping),  # cancelled between two chunks
    ("ceph", False, RuntimeError),  # qemu-img failed
    ("ceph", True, exception.ImageDeleted),
])
def test_source_files_are_removed_in_every_outcome(tmp_path, source, gone, error):
    conf = Conf()
    conf.converter.conversion_dir = str(tmp_path)
    image = {"id": str(uuid.uuid4()), "size": 7}
    in_place = RBDSource() if source == "ceph" else None
    preparer = converter.SourcePreparer(conf, Images(AssertionError("not reached")),
                                        ServingStore(gone), image, CancelledJob(), in_place)
    with pytest.raises(error):
        with preparer as source:
            assert str(source) == "rbd"
            assert source.binds() == [(preparer.sockets, converter.SOCKETS_INSIDE, False)]
            assert source.qemu_file()["server.path"] == converter.SOCKETS_INSIDE + "/source"
            with preparer.serve_cache("rbd_raw") as target:
                assert target.qemu_file()["server.path"] == converter.SOCKETS_INSIDE + "/cache"
                assert sorted(os.listdir(preparer.sockets)) == ["cache", "source"]
                raise RuntimeError("qemu-img failed")
    assert list(tmp_path.iterdir()) == []


def test_a_socket_path_too_long_for_unix_goes_to_a_private_temp_folder(tmp_path):
    conf = Conf()
    conf.converter.conversion_dir = str(tmp_path / ("d" * 80))
    os.mkdir(conf.converter.conversion_dir)
    image = {"id": str(uuid.uuid4()), "size": 7}
    store = ServingStore()
    with converter.SourcePreparer(conf, Images(AssertionError("not reached")), store, image,
                                  CancelledJob(), RBDSource()):
        folder = os.path.dirname(store.path)
        assert len(store.path) <= converter.MAX_SOCKET_PATH
        assert oct(os.stat(folder).st_mode & 0o777) == "0o700"
    assert not os.path.exists(folder)


def test_data_bytes_from_check_equal_the_data_qemu_img_maps(tmp_path):
    path = tmp_path / "disk.qcow2"
    subprocess.run(["qemu-img", "create", "-f", "qcow2", str(path), "64M"], check=True,
                   capture_output=True)
    subprocess.run(["qemu-io", "-c", "write -P 1 0 3M", "-c", "write -z 10M 1M",
                    "-c", "write -P 0 20M 1M", "-c", "write -P 7 63M 1M", str(path)],
                   check=True, capture_output=True)

    class Conf:
        class converter:
            qemu_img = "qemu-img"
            qemu_img_address_space_mib = 2048
            qemu_img_info_cpu_seconds = 30
            qemu_img_info_timeout = 60
            max_virtual_size_gib = 1
            max_map_extents = 100000

    conv = converter.Converter(Conf)
    source = converter.FileSource(str(path))
    info = conv.info(source, "qcow2")
    assert conv.data_bytes(source, "qcow2", info=info) == conv.data_bytes(source, "qcow2") \
        == 5 * 1024 * 1024


class GonePool(ServingStore):
    pool = "images"

    def __init__(self):
        super().__init__(gone=True)


def test_data_gone_from_the_pool_while_its_image_lives_is_an_error_on_the_image(tmp_path):
    conf = Conf()
    conf.converter.conversion_dir = str(tmp_path)
    image = {"id": str(uuid.uuid4()), "size": 7, "status": "active"}
    preparer = converter.SourcePreparer(conf, Images(None, image), GonePool(), image,
                                        CancelledJob(), RBDSource())
    with pytest.raises(exception.UnreadableImage, match="missing from pool images"):
        with preparer:
            pass
    assert list(tmp_path.iterdir()) == []


def test_the_check_runs_qemu_img_in_its_sandbox(conf):
    said = converter.Converter(conf).check()
    assert said.startswith("qemu-img in its sandbox with the nbd driver")


def test_the_check_says_when_qemu_img_cannot_run(conf):
    conf.set_override("qemu_img", "/nonexistent/qemu-img", group="converter")
    try:
        with pytest.raises(exception.ConfigError, match="cannot run /nonexistent/qemu-img"):
            converter.Converter(conf).check()
    finally:  # the options' groups, and so their overrides, outlive this conf
        conf.clear_override("qemu_img", group="converter")


def test_a_download_that_does_not_fit_in_conversion_dir_is_a_space_refusal(tmp_path,
                                                                          monkeypatch):
    """Recorded so that the sweep reads it back (NotEnoughSpace.parse) and retries the image
    once conversion_dir has room for its download."""
    conf = Conf()
    conf.converter.conversion_dir = str(tmp_path)
    monkeypatch.setattr(converter, "free_bytes", lambda directory: 6)
    image = {"id": str(uuid.uuid4()), "size": 7}
    preparer = converter.SourcePreparer(conf, Images(AssertionError("not reached")),
                                        ServingStore(False), image, CancelledJob())
    with pytest.raises(exception.NotEnoughSpace) as refused:
        with preparer:
            pass
    assert str(refused.value) == "not enough space in conversion directory %s: need 7, have 6" \
        % tmp_path
    assert exception.NotEnoughSpace.parse(exception.one_line(refused.value)) == \
        (exception.Room.CONVERSION_DIR, 7)
    image["size"] = None
    with pytest.raises(exception.UnsafeImage, match="no size"):
        with preparer:
            pass
