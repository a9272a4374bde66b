"""cacheraw-manage's parsing and output, and the progress it follows, without a stack."""

import io
import subprocess
import sys
from pathlib import Path

import pytest
from oslo_concurrency import processutils

from cacheraw import converter
from cacheraw import image_api
from cacheraw import report
from cacheraw import manage as ops

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
    assert ops.describe([{"op": "add", "path": "/cache_raw_status", "value": "Queued"},
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


class RecordingAPI:
    """The keystoneauth adapter under a real ImageAPI: what was read and what was patched."""

    def __init__(self, image):
        self.image = image
        self.patches = []

    def get(self, url, **kwargs):
        return Response(self.image)

    def patch(self, url, json, headers):
        self.patches.append(json)
        return Response(image_api.apply_ops(self.image, json))


class Response:
    def __init__(self, body):
        self.body = body

    def json(self):
        return self.body


def recording_images(conf, image):
    images = image_api.ImageAPI.__new__(image_api.ImageAPI)
    images._api, images._retry, images.before_patch = RecordingAPI(image), lambda f, *a: f(*a), None
    return images


def test_dry_run_says_what_it_would_change_and_changes_nothing(capsys):
    say = ops.Say(dry_run=True)
    images = recording_images(None, {"id": ID, "cache_raw_error": "old"})
    images.before_patch = say.patch
    result = images.update(ID, {"cache_raw_status": "Queued", "cache_raw_error": None})
    assert result == {"id": ID, "cache_raw_status": "Queued"}
    assert images._api.patches == []
    assert capsys.readouterr().out.splitlines() == [
        "would set cache_raw_status=Queued, removed cache_raw_error on image %s" % ID]


def test_without_dry_run_each_change_is_made_and_said(capsys):
    say = ops.Say(dry_run=False)
    images = recording_images(None, {"id": ID})
    images.before_patch = say.patch
    images.update(ID, {"cache_raw_status": "Queued"})
    assert images._api.patches == [[{"op": "add", "path": "/cache_raw_status",
                                     "value": "Queued"}]]
    assert capsys.readouterr().out.splitlines() == ["set cache_raw_status=Queued on image %s" % ID]
