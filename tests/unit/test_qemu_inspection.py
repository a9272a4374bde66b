"""cacheraw.qemu.inspection: qemu option strings, the first bytes of untrusted images, and the
bounded reading of ``qemu-img map``."""

import io
import subprocess

import pytest

from cacheraw import converter
from cacheraw import exception
from cacheraw.qemu import inspection

MAP = (b'[{ "start": 0, "length": 65536, "depth": 0, "present": true, "zero": false, '
       b'"data": true, "offset": 327680},\n'
       b'{ "start": 65536, "length": 131072, "depth": 0, "present": true, "zero": true, '
       b'"data": false},\n'
       b'{ "start": 196608, "length": 1048576, "depth": 0, "present": true, "zero": false, '
       b'"data": true, "offset": 393216}]\n')


def test_qemu_option_values_cannot_inject_options():
    text = inspection.image_opts({"driver": "nbd", "server.path": "a,file.filename=/etc/passwd"})
    assert text == "driver=nbd,server.path=a,,file.filename=/etc/passwd"
    with pytest.raises(exception.UnsafeImage):
        inspection.image_opts({"image": "a\nb"})


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
        converter.Converter(conf).inspect(HeadSource(path), "qcow2")


def test_inspection_refuses_a_mislabelled_image(conf, tmp_path):
    path = tmp_path / "r.qcow2"
    path.write_bytes(b"\0" * 65536)
    with pytest.raises(exception.UnsafeImage, match="not qcow2"):
        converter.Converter(conf).inspect(HeadSource(path), "qcow2")


def test_inspection_refuses_a_huge_virtual_size(conf, tmp_path):
    path = tmp_path / "big.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), "2T"], check=True)
    with pytest.raises(exception.UnsafeImage, match="exceeds"):
        converter.Converter(conf).inspect(HeadSource(path), "qcow2")


def test_inspection_accepts_a_plain_qcow2(conf, tmp_path):
    path = tmp_path / "ok.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), "1G"], check=True)
    assert str(converter.Converter(conf).inspect(HeadSource(path), "qcow2")) == "qcow2"


def test_map_is_counted_one_extent_at_a_time():
    counter = inspection.ExtentCounter(100)
    counter.consume(io.BytesIO(MAP))
    assert (counter.extents, counter.data) == (3, 65536 + 1048576)


def test_map_reading_stops_at_its_bound():
    counter = inspection.ExtentCounter(2)
    with pytest.raises(inspection.EnoughRead):
        counter.consume(io.BytesIO(MAP * 1000))
    assert counter.extents == 2


@pytest.mark.parametrize("output", [b"x" * 10000 + b"\n", b"[{ not json },\n",
                                    b'[{"start": 0}]\n'])
def test_map_output_that_is_not_extents_is_refused(output):
    with pytest.raises(exception.UnsafeImage):
        inspection.ExtentCounter(100).consume(io.BytesIO(output))


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
    assert inspection.allocated_bytes("qcow2", info) == expected


def test_data_bytes_of_other_formats_need_a_map():
    info = {"cluster-size": 65536, "virtual-size": 10 << 20,
            "cacheraw-check": {"allocated-clusters": 3}}
    assert inspection.allocated_bytes("vmdk", info) is None


class AnsweringQemuImg:
    """A QemuImg whose every run's stdout is ``output``."""

    def __init__(self, output):
        self.output = output

    def run(self, args, cpu_seconds, timeout, **kwargs):
        return self.output


class FileSource:
    def qemu_file(self):
        return {"driver": "file", "filename": "/run/image"}

    def binds(self):
        return []


@pytest.mark.parametrize("output", [b"[1, 2]", b'"qcow2"', b"null", b"not json"])
def test_info_that_is_no_json_object_is_refused(conf, output):
    inspector = inspection.Inspector(conf.converter, AnsweringQemuImg(output))
    with pytest.raises(exception.UnsafeImage, match="qemu-img info gave no JSON"):
        inspector.info(FileSource(), "qcow2")
