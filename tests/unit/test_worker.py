"""The daemon's pieces that run without a stack: its work queue."""

import subprocess
import sys

from cacheraw import worker

ID = "0dc0185d-550c-461a-bdc5-25b9e20586d5"


def test_work_queue_holds_each_image_once():
    queue = worker.WorkQueue()
    assert queue.put(ID) is True
    assert queue.put(ID) is False
    assert queue.get() == ID
    assert queue.put(ID) is False  # still running
    queue.done(ID)
    assert queue.put(ID) is True
    queue.close()
    assert queue.get() is None


def test_library_deprecation_notices_stay_out_of_the_journal():
    """cryptography 51 warns "DSA is deprecated" when dnspython is imported: an operator's
    journal gets one line per real problem, not the libraries' notices to their developers."""
    code = ("import warnings, cacheraw.cmd\n"
            "warnings.warn('DSA is deprecated and support will be removed.', UserWarning)\n"
            "warnings.warn('\\n  Eventlet is deprecated.\\n', DeprecationWarning)\n")
    done = subprocess.run([sys.executable, "-W", "default", "-c", code], capture_output=True,
                          text=True, timeout=60)
    assert (done.returncode, done.stderr) == (0, "")
