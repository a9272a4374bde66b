"""The converter: qemu option strings, inspection of untrusted images, qemu-img runs and the
bounded reading of their output, conversion_dir's leftovers and downloads."""

import contextlib
import io
import os
import subprocess
import uuid

import pytest
from oslo_concurrency import processutils

from cacheraw import converter
from cacheraw import exception

ID = "0dc0185d-550c-461a-bdc5-25b9e20586d5"
MAP = (b'[{ "start": 0, "length": 65536, "depth": 0, "present": true, "zero": false, '
       b'"data": true, "offset": 327680},\n'
       b'{ "start": 65536, "length": 131072, "depth": 0, "present": true, "zero": true, '
       b'"data": false},\n'
       b'{ "start": 196608, "length": 1048576, "depth": 0, "present": true, "zero": false, '
       b'"data": true, "offset": 393216}]\n')


def test_qemu_option_values_cannot_inject_options():
    text = converter.image_opts({"driver": "rbd", "image": "a,file.filename=/etc/passwd"})
    assert text == "driver=rbd,image=a,,file.filename=/etc/passwd"
    with pytest.raises(exception.UnsafeImage):
        converter.image_opts({"image": "a\nb"})


class HeadSource:
    def __init__(self, path):
        self.path = path

    def read_head(self, length):
        with open(self.path, "rb") as f:
            return f.read(length)


def test_inspection_refuses_a_backing_file(conf, tmp_path):
    path = tmp_path / "b.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", "/etc/hostname", "-F",
                    "raw", str(path)], check=True)
    with pytest.raises(exception.UnsafeImage, match="backing file"):
        converter.Converter(conf, None).inspect(HeadSource(path), "qcow2")


def test_inspection_refuses_a_mislabelled_image(conf, tmp_path):
    path = tmp_path / "r.qcow2"
    path.write_bytes(b"\0" * 65536)
    with pytest.raises(exception.UnsafeImage, match="not qcow2"):
        converter.Converter(conf, None).inspect(HeadSource(path), "qcow2")


def test_inspection_refuses_a_huge_virtual_size(conf, tmp_path):
    path = tmp_path / "big.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), "2T"], check=True)
    with pytest.raises(exception.UnsafeImage, match="exceeds"):
        converter.Converter(conf, None).inspect(HeadSource(path), "qcow2")


def test_inspection_accepts_a_plain_qcow2(conf, tmp_path):
    path = tmp_path / "ok.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), "1G"], check=True)
    assert str(converter.Converter(conf, None).inspect(HeadSource(path), "qcow2")) == "qcow2"


def test_qemu_img_progress_is_parsed():
    assert converter.parse_progress("    (0.00/100%)\r    (8.33/100%)\r    (100.00/100%)\r") \
        == [0.0, 8.33, 100.0]
    assert converter.parse_progress("garbage (x/100%)") == []


def fake_qemu_img(tmp_path, body):
    path = tmp_path / "fake-qemu-img"
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return str(path)


def run_fake(tmp_path, body, timeout=30):
    seen = []
    limits = processutils.ProcessLimits(cpu_time=30)
    out = converter._execute_with_progress([fake_qemu_img(tmp_path, body), "convert"], limits,
                                           {"PATH": "/usr/bin:/bin"}, timeout,
                                           converter.Job(ID), seen.append)
    return out, seen


def test_progress_is_read_while_qemu_img_runs(tmp_path):
    _, seen = run_fake(tmp_path, "printf '    (0.00/100%%)\\r'; sleep 0.2\n"
                                 "printf '    (50.00/100%%)\\r    (100.00/100%%)\\r\\n'\n")
    assert seen == [0.0, 50.0, 100.0]


def test_a_failing_qemu_img_keeps_its_error(tmp_path):
    with pytest.raises(processutils.ProcessExecutionError) as caught:
        run_fake(tmp_path, "echo 'qemu-img: broken' >&2; exit 1\n")
    assert caught.value.exit_code == 1
    assert "qemu-img: broken" in caught.value.stderr


def test_a_qemu_img_past_its_timeout_is_killed(tmp_path):
    with pytest.raises(subprocess.TimeoutExpired):
        run_fake(tmp_path, "sleep 30\n", timeout=1)


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
    names = ["%s.download" % mine, "%s.nbd" % mine, "%s.key" % mine, "%s.download" % busy,
             "other.download", "%s.download.txt" % mine]
    for name in names:
        (tmp_path / name).write_text("x")
    removed = converter.clean_conversion_dir(str(tmp_path), in_use=lambda i: i == busy)
    assert sorted(removed) == sorted(names[:3])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names[3:])


class Conf:
    class converter:  # noqa: N801 - the shape of oslo.config's group
        conversion_dir = None
        read_source_in_place = False


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


class KeyStore:
    """A pool whose image ``rbd`` is served to qemu-img (a file stands for the socket), or found
    deleted (``gone``)."""

    def __init__(self, gone=False):
        self.gone = gone

    def secret_key(self):
        return "c2VjcmV0"

    @contextlib.contextmanager
    def serve_snapshot(self, name, snapshot, path):
        if self.gone:
            raise exception.CephNotFound("[errno 2] image gone")
        self.path = path
        open(path, "w").close()
        try:
            yield object()
        finally:
            os.unlink(path)  # as cacheraw.nbd.Export removes its socket


class RBDSource:
    store, name, snapshot = None, "rbd", "snap"


class CancelledJob:
    def check(self):
        raise exception.WorkerStopping("worker stopping")


@pytest.mark.parametrize("source,read_in_place,gone,error", [
    ("download", False, False, exception.WorkerStopping),  # cancelled between two chunks
    ("ceph", False, False, RuntimeError),  # qemu-img failed
    ("ceph", False, True, exception.ImageDeleted),
    ("ceph", True, False, RuntimeError),
])
def test_source_files_are_removed_in_every_outcome(tmp_path, source, read_in_place, gone, error):
    conf = Conf()
    conf.converter.conversion_dir = str(tmp_path)
    conf.converter.read_source_in_place = read_in_place
    image = {"id": str(uuid.uuid4()), "size": 7}
    in_place = RBDSource() if source == "ceph" else None
    preparer = converter.SourcePreparer(conf, Images(AssertionError("not reached")),
                                        KeyStore(gone), image, CancelledJob(), in_place)
    with pytest.raises(error):
        with preparer as (source, secret):
            assert source.name == "rbd" and open(secret).read() == "c2VjcmV0"
            raise RuntimeError("qemu-img failed")
    assert list(tmp_path.iterdir()) == []


def test_a_socket_path_too_long_for_unix_goes_to_a_private_temp_folder(tmp_path):
    conf = Conf()
    conf.converter.conversion_dir = str(tmp_path / ("d" * 80))
    os.mkdir(conf.converter.conversion_dir)
    conf.converter.read_source_in_place = False
    image = {"id": str(uuid.uuid4()), "size": 7}
    store = KeyStore()
    with converter.SourcePreparer(conf, Images(AssertionError("not reached")), store, image,
                                  CancelledJob(), RBDSource()):
        folder = os.path.dirname(store.path)
        assert len(store.path) <= converter.MAX_SOCKET_PATH
        assert oct(os.stat(folder).st_mode & 0o777) == "0o700"
    assert not os.path.exists(folder)


class LimitsConf:
    class converter:
        qemu_img_address_space_mib = 512


class NoCephEnvironment:
    def qemu_environment(self):
        return {}


def test_qemu_img_runs_under_its_limits_as_a_direct_child(tmp_path):
    """Address space and CPU time limits set in the child before exec, no process between."""
    LimitsConf.converter.qemu_img = fake_qemu_img(
        tmp_path, "echo \"$(ulimit -v) $(ulimit -t) $PPID\"\n")
    out = converter.Converter(LimitsConf, NoCephEnvironment())._qemu_img(["info"], 7, 30)
    assert out.split() == ["524288", "7", str(os.getpid())]


def test_a_conversion_with_progress_runs_under_its_limits(tmp_path):
    with pytest.raises(processutils.ProcessExecutionError) as caught:
        run_fake(tmp_path, "echo \"cpu $(ulimit -t) parent $PPID\" >&2; exit 1\n")
    assert caught.value.stderr.strip() == "cpu 30 parent %d" % os.getpid()


@pytest.mark.parametrize("info,expected", [
    ({"cluster-size": 65536, "virtual-size": 10 << 20, "cacheraw-check": {
        "allocated-clusters": 3}}, 3 * 65536),
    ({"cluster-size": 65536, "virtual-size": 100000, "cacheraw-check": {
        "allocated-clusters": 3}}, 100000),
    ({"cluster-size": 65536, "virtual-size": 10 << 20, "cacheraw-check": {}}, None),
    ({"cluster-size": "65536", "virtual-size": 10 << 20, "cacheraw-check": {
        "allocated-clusters": 3}}, None),
    ({"cluster-size": 65536, "virtual-size": 10 << 20, "cacheraw-check": {
        "allocated-clusters": -1}}, None),
    ({"cluster-size": 65536, "virtual-size": 10 << 20, "cacheraw-check": {
        "allocated-clusters": True}}, None),
    ({}, None)])
def test_data_bytes_of_a_qcow2_come_from_its_check(info, expected):
    assert converter._allocated_bytes("qcow2", info) == expected


def test_data_bytes_of_other_formats_need_a_map():
    info = {"cluster-size": 65536, "virtual-size": 10 << 20,
            "cacheraw-check": {"allocated-clusters": 3}}
    assert converter._allocated_bytes("vmdk", info) is None


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

    conv = converter.Converter(Conf, NoCephEnvironment())
    source = converter.FileSource(str(path))
    info = conv.info(source, "qcow2")
    assert conv.data_bytes(source, "qcow2", info=info) == conv.data_bytes(source, "qcow2") \
        == 5 * 1024 * 1024


class GonePool(KeyStore):
    pool = "images"

    def __init__(self):
        super().__init__(gone=True)


def test_data_gone_from_the_pool_while_its_image_lives_is_an_error_on_the_image(tmp_path):
    conf = Conf()
    conf.converter.conversion_dir = str(tmp_path)
    conf.converter.read_source_in_place = False
    image = {"id": str(uuid.uuid4()), "size": 7, "status": "active"}
    preparer = converter.SourcePreparer(conf, Images(None, image), GonePool(), image,
                                        CancelledJob(), RBDSource())
    with pytest.raises(exception.UnreadableImage, match="missing from pool images"):
        with preparer:
            pass
    assert list(tmp_path.iterdir()) == []
