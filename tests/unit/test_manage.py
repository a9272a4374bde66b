"""cacheraw-manage's parsing and output, and the progress it follows, without a stack."""

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from oslo_concurrency import processutils

from cacheraw import converter
from cacheraw import report
from cacheraw.cmd import manage

ID = "0dc0185d-550c-461a-bdc5-25b9e20586d5"
MANAGE = str(Path(sys.executable).parent / "cacheraw-manage")
URL = "rbd://fsid/images/%s_raw/snap" % ID


class Stream(io.StringIO):
    def __init__(self, tty):
        super().__init__()
        self._tty = tty

    def isatty(self):
        return self._tty


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def sample(percent, at, data_bytes=100 * report.MIB):
    return {"percent": percent, "time": at, "data_bytes": data_bytes}


def test_progress_on_a_terminal_is_one_bar_redrawn_in_place():
    out = Stream(tty=True)
    view = report.ProgressView(out)
    view.update(sample(0.0, 100.0))
    view.update(sample(50.0, 105.0))
    view.finish(True)
    text = out.getvalue()
    assert text.count("\r") == 3 and text.endswith("\n") and text.count("\n") == 1
    assert "[###############---------------]  50.0%  10.0 MiB/s" in text
    assert " 100.0%  10.0 MiB/s\n" in text


def test_progress_elsewhere_is_a_line_every_few_seconds():
    out, clock = Stream(tty=False), Clock()
    view = report.ProgressView(out, clock=clock)
    view.update(sample(0.0, 100.0))
    clock.now = 1.0
    view.update(sample(10.0, 101.0))  # too soon for a new line
    clock.now = 2.5
    view.update(sample(25.0, 102.5))
    view.update(None)  # nothing published yet: nothing shown
    view.finish(True)
    assert out.getvalue().splitlines() == ["progress   0.0%  -- MiB/s",
                                           "progress  25.0%  10.0 MiB/s",
                                           "progress 100.0%  10.0 MiB/s"]
    assert "\r" not in out.getvalue()


def test_a_failed_conversion_is_not_shown_complete():
    out = Stream(tty=False)
    view = report.ProgressView(out)
    view.update(sample(40.0, 1.0))
    view.finish(False)
    assert "100" not in out.getvalue()


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


def view(status=None, exists=False, protected=False, used=None, holder=None, url=URL,
         size=None):
    return {"id": ID, "name": "n",
            "image": {"cache_raw_status": status, "cache_raw_url": url,
                      "cache_raw_size": size},
            "ceph": {"cache": "images/%s_raw@snap" % ID, "exists": exists,
                     "protected": protected, "used_bytes": used, "clones": None,
                     "lock_holder": holder}}


def test_problems_name_each_disagreement_between_the_image_api_and_ceph():
    assert report.problems(view("Cached", True, True, 8, size="8"), URL) == []
    missing = report.problems(view("Cached", size="8"), URL)
    assert missing == ["Cached, but Ceph has no protected snapshot images/%s_raw@snap" % ID]
    assert report.problems(view("Cached", True, True, 9, size="8"), URL) == [
        "cache_raw_size 8 differs from the 9 bytes used in Ceph"]
    assert report.problems(view("Queued"), URL) == [
        "Queued, and no worker holds its lock: waiting for a worker"]
    assert report.problems(view("Caching", True, holder={"host": "h", "pid": 1}), URL) == []
    assert "partial cache" in report.problems(view(None, True), URL)[0]


def test_table_aligns_columns():
    text = report.table(("A", "LONGER"), [("xx", "1"), ("y", "22")])
    assert text.splitlines() == ["A   LONGER", "xx  1", "y   22"]


def test_patch_operations_are_described_for_people():
    assert manage.describe([{"op": "add", "path": "/cache_raw_status", "value": "Queued"},
                            {"op": "remove", "path": "/cache_raw_error"}]) == \
        "cache_raw_status=Queued, removed cache_raw_error"


@pytest.mark.parametrize("args,message", [
    (["recache", "../../etc/passwd"], "not an image id"),
    (["status", ID.upper()], "not an image id"),
    (["status", ID, "--format", "xml"], "invalid choice"),
    (["list", "--status", "cached"], "invalid choice"),
    (["recache"], "required"),
    (["frobnicate"], "invalid choice"),
])
def test_bad_arguments_give_one_line_before_anything_is_reached(args, message):
    done = subprocess.run([MANAGE, *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert message in done.stderr.strip().splitlines()[-1]
    assert "Traceback" not in done.stderr


class RecordingImages:
    def __init__(self, image):
        self.image = image
        self.updates = []

    def get(self, image_id):
        return dict(self.image)

    def update(self, image_id, wanted, only_if=None, only_if_absent=None):
        self.updates.append(wanted)
        return dict(self.image, **wanted)


class RecordingStore:
    pool = "images"

    def __init__(self, clones):
        self.clones = clones
        self.removed = []

    def cache_facts(self, name):
        return {"exists": True, "protected": True, "used": 1, "clones": self.clones}

    def remove(self, name):
        self.removed.append(name)
        return "trashed" if self.clones else "removed"

    def is_locked(self, image_id):
        return False


def test_dry_run_says_what_it_would_change_and_changes_nothing(capsys):
    say = manage.Say(dry_run=True)
    images = RecordingImages({"id": ID, "cache_raw_error": "old"})
    wrapped = manage.ReportingImages(images, say)
    result = wrapped.update(ID, {"cache_raw_status": "Queued", "cache_raw_error": None})
    assert result == {"id": ID, "cache_raw_status": "Queued"}
    assert images.updates == []
    store = RecordingStore(clones=2)
    assert manage.ReportingStore(store, say).remove(ID + "_raw") == "trashed"
    assert store.removed == []
    assert capsys.readouterr().out.splitlines() == [
        "would set cache_raw_status=Queued, removed cache_raw_error on image %s" % ID,
        "would move cache images/%s_raw to the trash (2 clones use it)" % ID]


def test_without_dry_run_each_change_is_made_and_said(capsys):
    say = manage.Say(dry_run=False)
    images = RecordingImages({"id": ID})
    manage.ReportingImages(images, say).update(ID, {"cache_raw_status": "Queued"})
    assert images.updates == [{"cache_raw_status": "Queued"}]
    store = RecordingStore(clones=0)
    assert manage.ReportingStore(store, say).remove(ID + "_raw") == "removed"
    assert store.removed == [ID + "_raw"]
    assert capsys.readouterr().out.splitlines() == [
        "set cache_raw_status=Queued on image %s" % ID, "removed cache images/%s_raw" % ID]


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
