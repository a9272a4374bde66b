"""A qemu-img run: in its sandbox, under its limits, each of its outputs read as a bounded stream.

qemu-img's stdout is handed, as it comes, to a consumer that reads it through a BoundedReader;
its stderr is read by a thread that keeps only its last lines. Past the byte limit of either,
qemu-img is killed and the image refused. A qemu-img past its wall-clock limit, cancelled, or
whose consumer stopped, is killed with its whole process group, and that group is gone before
the run returns or raises: nothing of it outlives the error recorded on the image.
"""

from __future__ import annotations

import collections
import ctypes
import functools
import io
import logging
import os
import re
import resource
import signal
import subprocess
import threading
import time
from typing import Any, Callable, Container, Deque, Iterable, List, Optional, Sequence, Type
from typing import cast

from oslo_concurrency import processutils
from oslo_config import cfg

from cacheraw import exception
from cacheraw import metrics
from cacheraw.qemu import sandbox
from cacheraw.qemu.job import Job

LOG = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1
# The limits of processutils.ProcessLimits that qemu-img gets, as setrlimit resources.
RLIMITS = (("address_space", resource.RLIMIT_AS), ("cpu_time", resource.RLIMIT_CPU))
# The most of qemu-img's output read: JSON of info/check, progress of convert, and its errors.
OUTPUT_LIMIT = 1024 * 1024
STDERR_LIMIT = 1024 * 1024
STDERR_KEPT = 16  # chunks of its end kept for an error message
CHUNK = 4096
# How long the rest of a process group may take to go once its leader has ended.
GROUP_GONE_TIMEOUT = 10
# qemu-img names the image by its option string; the reason recorded on the image needs none
# of our paths.
OPEN_PREFIX_RE = re.compile(r"Could not open '[^']*': ")


def _libc_prctl() -> Optional[Callable[..., int]]:
    """libc's prctl, resolved here once: the child of a threaded worker must not dlopen between
    fork and exec (a lock another thread held at the fork is never released in the child)."""
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _libc_prctl()


class OutputTooLong(Exception):
    """qemu-img wrote more than its limit to one of its outputs."""

    def __init__(self, stream: str, limit: int):
        super().__init__("%s past %d bytes" % (stream, limit))
        self.stream = stream
        self.limit = limit


class BoundedReader:
    """qemu-img's stdout, read by a consumer: raises OutputTooLong past ``limit`` bytes."""

    def __init__(self, stream: io.BufferedReader, limit: int):
        self._stream = stream
        self.limit = limit
        self.count = 0

    def _counted(self, data: bytes) -> bytes:
        self.count += len(data)
        if self.count > self.limit:
            raise OutputTooLong("stdout", self.limit)
        return data

    def read1(self, size: int = CHUNK) -> bytes:
        return self._counted(self._stream.read1(size))

    def readline(self, size: int) -> bytes:
        return self._counted(self._stream.readline(size))

    def read_all(self) -> bytes:
        chunks: List[bytes] = []
        while True:
            chunk = self.read1(CHUNK * 16)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)


def read_all(stream: BoundedReader) -> bytes:
    return stream.read_all()


class QemuImg:
    """``qemu-img`` of ``[converter] qemu_img``, run in the sandbox with ``binds``."""

    def __init__(self, conf: cfg.ConfigOpts.GroupAttr):
        self.conf = conf  # the [converter] group
        self.program = conf.qemu_img

    def run(self, args: Sequence[str], cpu_seconds: int, timeout: int, *,
            binds: Iterable[sandbox.Bind] = (), job: Optional[Job] = None,
            consume: Callable[[BoundedReader], Any] = read_all,
            stdout_limit: int = OUTPUT_LIMIT,
            failure: Type[exception.CacherawError] = exception.ConversionFailed,
            exit_codes: Container[int] = (0,)) -> Any:
        """What ``consume(stdout)`` returns, once qemu-img has ended with one of
        ``exit_codes``; ``failure`` (with its last line of errors) otherwise."""
        name = args[0]
        limits = processutils.ProcessLimits(
            address_space=self.conf.qemu_img_address_space_mib * 1024 * 1024,
            cpu_time=cpu_seconds)
        metrics.qemu_img_run(name)
        run = Run(sandbox.argv(self.program, args, binds), limits, timeout,
                  job or Job(None))
        try:
            value = run(consume, stdout_limit)
        except OutputTooLong as exc:
            raise exception.UnsafeImage("qemu-img %s wrote more than %d bytes to its %s"
                                        % (name, exc.limit, exc.stream)) from exc
        except subprocess.TimeoutExpired as exc:
            raise exception.ConversionFailed("qemu-img %s timed out after %d s"
                                             % (name, timeout)) from exc
        except (OSError, subprocess.SubprocessError) as exc:
            # The child could not take its limits (a hard limit below them), or the sandbox
            # cannot start: never run it without.
            raise exception.ConversionFailed("qemu-img %s could not start in its sandbox under "
                                             "its limits: %s" % (name, exc)) from exc
        if run.returncode not in exit_codes:
            run.job.check()
            raise failure("qemu-img %s failed (exit %s): %s"
                          % (name, run.returncode, last_line(run.errors())))
        return value


class Run:
    """One process: ``Run(argv, limits, timeout, job)(consume, stdout_limit)``."""

    def __init__(self, argv: List[str], limits: processutils.ProcessLimits, timeout: float,
                 job: Job):
        self.argv = argv
        self.limits = limits
        self.timeout = timeout
        self.job = job
        self.returncode: Optional[int] = None
        self.timed_out = False
        self._tail: Deque[bytes] = collections.deque(maxlen=STDERR_KEPT)
        self._stderr_over = False

    def __call__(self, consume: Callable[[BoundedReader], Any], stdout_limit: int) -> Any:
        proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, close_fds=True, env={},
                                start_new_session=True,
                                preexec_fn=functools.partial(_child_setup, self.limits))
        # Pipes, buffered (bufsize -1): both are there.
        stdout = cast(io.BufferedReader, proc.stdout)
        stderr = cast(io.BufferedReader, proc.stderr)
        self.job.attach(proc)
        reader = threading.Thread(target=self._read_stderr, args=(stderr,), daemon=True)
        reader.start()
        timer = threading.Timer(self.timeout, self._expire)
        timer.start()
        try:
            return self._consume(consume, proc, stdout, stdout_limit)
        finally:
            timer.cancel()
            self.returncode = proc.wait()
            reader.join()
            _wait_group_gone(proc.pid)
            self.job.detach(proc)
            stdout.close()
            stderr.close()

    def _consume(self, consume: Callable[[BoundedReader], Any], proc: subprocess.Popen[bytes],
                 stdout: io.BufferedReader, stdout_limit: int) -> Any:
        try:
            value = consume(BoundedReader(stdout, stdout_limit))
        except BaseException:
            self.job.kill()
            raise
        proc.wait()
        if self.timed_out:
            raise subprocess.TimeoutExpired(self.argv[:2], self.timeout)
        if self._stderr_over:
            raise OutputTooLong("stderr", STDERR_LIMIT)
        return value

    def _expire(self) -> None:
        self.timed_out = True
        self.job.kill()

    def _read_stderr(self, stream: io.BufferedReader) -> None:
        """Read stderr to its end, keeping its last chunks; past STDERR_LIMIT, kill."""
        count = 0
        while True:
            chunk = stream.read1(CHUNK)
            if not chunk:
                return
            count += len(chunk)
            self._tail.append(chunk)
            if count > STDERR_LIMIT and not self._stderr_over:
                self._stderr_over = True
                self.job.kill()

    def errors(self) -> str:
        return os.fsdecode(b"".join(self._tail))


def last_line(text: str) -> str:
    lines = (text or "").strip().splitlines()
    return OPEN_PREFIX_RE.sub("", lines[-1])[:500] if lines else "no output"


def _wait_group_gone(pgid: int) -> None:
    """Kill what is left of the process group ``pgid`` and wait until none of it runs (a zombie
    left to another parent runs no more)."""
    deadline = time.monotonic() + GROUP_GONE_TIMEOUT
    while _group_runs(pgid):
        try:
            os.killpg(pgid, signal.SIGKILL)
        except OSError:
            return
        if time.monotonic() > deadline:
            LOG.error("Process group %d of qemu-img is still there after %d s", pgid,
                      GROUP_GONE_TIMEOUT)
            return
        time.sleep(0.01)


def _group_runs(pgid: int) -> bool:
    """True while a process of the group ``pgid`` is alive (not a zombie)."""
    try:
        os.killpg(pgid, 0)
    except OSError:
        return False
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % pid, "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
            return True
    return False


def _child_setup(limits: processutils.ProcessLimits) -> None:
    """In the child before exec, already in a session and process group of its own
    (start_new_session, so that a kill reaches all of it): its limits (as oslo.concurrency's
    prlimit wrapper sets them, without a Python process in between), and SIGKILL when the worker
    dies. The child is bwrap: its --die-with-parent takes qemu-img with it, and this takes bwrap
    with the worker, so that no qemu-img outlives a crashed worker."""
    for name, rlimit in RLIMITS:
        value = getattr(limits, name)
        if value is not None:
            resource.setrlimit(rlimit, (value, value))
    if _PRCTL is not None:
        _PRCTL(PR_SET_PDEATHSIG, signal.SIGKILL)
