"""What cacheraw-manage shows (cacheraw.report): progress, where the image API and Ceph
disagree, tables."""

import io
import re

from cacheraw import report

ID = "0dc0185d-550c-461a-bdc5-25b9e20586d5"
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


def test_status_says_which_images_share_a_cache():
    parent = "5b0ec9b3-5bd4-4bd6-a52a-1f9b0c1a3a2e"
    shared = view("Cached", True, True, 0, size="0")
    shared["ceph"].update(report.sharing_view({"parent": parent + "_raw",
                                               "parent_trashed": True, "sharers": []}))
    text = report.status_text(dict(shared, problems=[]))
    assert re.search(r"^  shares data of +image %s \(its cache is in the trash" % parent, text,
                     re.M)
    assert re.search(r"^  shared with +-$", text, re.M)
    first = view("Cached", True, True, 8, size="8")
    first["ceph"].update(report.sharing_view({"parent": None, "parent_trashed": False,
                                              "sharers": [ID + "_raw"]}))
    assert first["ceph"]["shared_with"] == [ID]
    assert re.search(r"^  shares data of +-$", report.status_text(dict(first, problems=[])),
                     re.M)
