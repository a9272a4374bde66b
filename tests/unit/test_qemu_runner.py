"""cacheraw.qemu.runner: qemu-img (a stand-in script here) in its sandbox (cacheraw.qemu.sandbox),
under its limits, every output read with a bound; a killed run leaves no process of its group."""

import os
import socket
import threading

import pytest

from cacheraw import exception
from cacheraw.qemu import convert
from cacheraw.qemu import runner
from cacheraw.qemu.job import Job

ID = "0dc0185d-550c-461a-bdc5-25b9e20586d5"


class Conf:
    qemu_img_address_space_mib = 512


def qemu_img(tmp_path, body):
    path = tmp_path / "fake-qemu-img"
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    conf = Conf()
    conf.qemu_img = str(path)
    return runner.QemuImg(conf)


def run(tmp_path, body, timeout=30, **kwargs):
    return qemu_img(tmp_path, body).run(["info"], 7, timeout, **kwargs)


def test_progress_is_read_while_qemu_img_runs(tmp_path):
    seen = []
    run(tmp_path, "printf '    (0.00/100%%)\\r'; sleep 0.2\n"
                  "printf '    (50.00/100%%)\\r    (100.00/100%%)\\r\\n'\n",
        consume=lambda stream: convert.follow_progress(stream, seen.append))
    assert seen == [0.0, 50.0, 100.0]


def test_a_failing_qemu_img_keeps_the_last_line_of_its_error(tmp_path):
    with pytest.raises(exception.UnreadableImage, match=r"qemu-img info failed \(exit 3\): "
                                                        r"qemu-img: broken$"):
        run(tmp_path, "echo 'first' >&2; echo 'qemu-img: broken' >&2; exit 3\n",
            failure=exception.UnreadableImage)


def test_qemu_img_runs_under_its_limits_in_its_sandbox(tmp_path):
    (tmp_path / "ceph.client.cacheraw.keyring").write_text("[client.cacheraw]\nkey = x\n")
    out = run(tmp_path, "echo \"$(ulimit -v) $(ulimit -t)\"; env | sort | tr '\\n' ' '; echo; "
                        "ls / | tr '\\n' ' '; echo; ls %s 2>&1 | wc -l\n" % tmp_path)
    limits, env, root, listing = out.decode().splitlines()
    assert limits.split() == ["524288", "7"]
    assert env.split() == ["LC_ALL=C", "MALLOC_ARENA_MAX=2", "PATH=/usr/bin:/bin", "PWD=/"]
    assert set(root.split()) <= {"bin", "dev", "lib", "lib64", "sbin", "usr", "run", "tmp"}
    assert listing == "1"  # only the program itself is there: no keyring, nothing else


def test_qemu_img_has_no_network(tmp_path):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    out = run(tmp_path, "exec python3 -c 'import socket\ntry:\n socket.create_connection("
                        "(\"127.0.0.1\", %d), timeout=5)\n print(\"reached\")\nexcept OSError "
                        "as e:\n print(\"unreachable\")'\n" % port)
    listener.close()
    assert out.strip() == b"unreachable"


def processes_with(marker):
    """The processes with ``marker`` as one of their arguments (``sleep 316``), whatever else
    runs on the machine (a process whose argument only contains it is not one)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                if marker.encode() in f.read().split(b"\0"):
                    found.append(pid)
        except OSError:
            pass
    return found


def test_a_qemu_img_past_its_timeout_is_dead_with_its_group_before_the_error(tmp_path):
    with pytest.raises(exception.ConversionFailed, match="timed out after 1 s"):
        run(tmp_path, "sleep 313 & sleep 314\n", timeout=1)
    assert processes_with("313") == [] and processes_with("314") == []


@pytest.mark.parametrize("stream", ["", ">&2"])
def test_an_output_past_its_limit_kills_qemu_img_and_refuses_the_image(tmp_path, stream):
    with pytest.raises(exception.UnsafeImage, match="wrote more than 1048576 bytes"):
        run(tmp_path, "sleep 315 & yes 'corrupt cluster' %s\n" % stream)
    assert processes_with("315") == []


def test_a_cancelled_job_kills_qemu_img_and_says_why(tmp_path):
    job = Job(ID)
    threading.Timer(0.5, job.cancel, (exception.WorkerStopping("stopping"),)).start()
    with pytest.raises(exception.WorkerStopping):
        run(tmp_path, "sleep 316\n", job=job)
    assert processes_with("316") == []


def test_the_child_calls_only_what_the_parent_resolved(tmp_path, monkeypatch):
    """Between fork and exec, in a worker with many threads, the child neither loads a library
    (ctypes.CDLL: dlopen) nor calls os.setsid: its session is start_new_session's."""
    def forbidden(*args, **kwargs):
        raise AssertionError("called in the child")

    popen, seen = runner.subprocess.Popen, {}

    def recording(*args, **kwargs):
        seen.update(kwargs)
        return popen(*args, **kwargs)

    monkeypatch.setattr(runner.ctypes, "CDLL", forbidden)
    monkeypatch.setattr(runner.os, "setsid", forbidden)
    monkeypatch.setattr(runner.subprocess, "Popen", recording)
    assert run(tmp_path, "echo ok\n") == b"ok\n"
    assert seen["start_new_session"] is True and runner._PRCTL is not None
