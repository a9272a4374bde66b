"""cacheraw-manage: its bad arguments, and how reconcile and purge-orphans tell each change."""

import subprocess
import sys
from pathlib import Path

import pytest

from cacheraw import image_api
from cacheraw import manage as ops

ID = "0dc0185d-550c-461a-bdc5-25b9e20586d5"
MANAGE = str(Path(sys.executable).parent / "cacheraw-manage")


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
@pytest.mark.ceph_bindings  # the command itself runs, and imports rados
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
    images._seen = image_api._Remembered()
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
