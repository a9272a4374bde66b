"""cacheraw.stall: a point does nothing without CACHERAW_TEST_STALL_AT; named in it, the process
stops itself there once (SIGSTOP) and goes on when resumed (SIGCONT)."""

import os
import signal
import subprocess
import sys
import time

from cacheraw import stall

PROGRAM = ("import sys; from cacheraw import stall\n"
           "for name in ('before-publish', 'in-publish', 'before-publish'):\n"
           "    stall.point(name); print(name, flush=True)\n")


def test_a_point_does_nothing_without_the_variable(monkeypatch):
    monkeypatch.delenv(stall.VARIABLE, raising=False)
    stall.point("before-publish")  # returns at once: the test goes on
    monkeypatch.setenv(stall.VARIABLE, "in-removal")
    stall.point("before-publish")


def state(pid):
    with open("/proc/%d/stat" % pid) as f:
        return f.read().rsplit(")", 1)[1].split()[0]


def test_a_named_point_stops_the_process_once_until_it_is_resumed():
    env = dict(os.environ, **{stall.VARIABLE: "in-publish,in-removal"})
    process = subprocess.Popen([sys.executable, "-c", PROGRAM], env=env, stdout=subprocess.PIPE,
                               cwd=os.path.dirname(os.path.dirname(stall.__file__)))
    try:
        assert process.stdout.readline() == b"before-publish\n"
        deadline = time.monotonic() + 10
        while state(process.pid) != "T" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert state(process.pid) == "T"  # stopped at in-publish
        os.kill(process.pid, signal.SIGCONT)
        assert process.stdout.read() == b"in-publish\nbefore-publish\n"
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
