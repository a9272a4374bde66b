"""Conversion of untrusted images to RAW with qemu-img.

Every image is hostile until proven otherwise: its first bytes are inspected with oslo.utils'
format_inspector before qemu-img opens it; qemu-img runs with an explicit source format, under
address space and CPU time limits, with LC_ALL=C, from an argv list (never a shell); Ceph images
are named to qemu-img through option dictionaries, never ``rbd:pool/name:...`` strings.
"""

import ctypes
import functools
import json
import logging
import os
import re
import resource
import signal
import subprocess
import threading
import time

from oslo_concurrency import processutils
from oslo_utils.imageutils import format_inspector

from cacheraw import exception
from cacheraw import metrics

LOG = logging.getLogger(__name__)

INSPECT_CHUNK = 64 * 1024
# Enough for every inspector to decide (VHDX and LUKS look furthest, within the first MiB).
INSPECT_LIMIT = 4 * 1024 * 1024
SECRET_ID = "cacheraw-ceph-key"
PR_SET_PDEATHSIG = 1
# Glance's disk_format names that qemu calls otherwise.
QEMU_DRIVERS = {"vhd": "vpc"}
# qemu-img check: 2 = corruption found, 3 = only leaked clusters (harmless), 63 = the format has
# no check.
CHECK_EXIT_CODES = [0, 2, 3, 63]
# qemu-img names the image by its option string; the reason recorded on the image needs neither
# our paths nor our Ceph user.
OPEN_PREFIX_RE = re.compile(r"Could not open '[^']*': ")
# Where info() keeps what qemu-img check said of the image.
CHECK_KEY = "cacheraw-check"
PROGRESS_RE = re.compile(r"\((\d+(?:\.\d+)?)/100%\)")
# The limits of processutils.ProcessLimits that qemu-img gets, as setrlimit resources.
RLIMITS = (("address_space", resource.RLIMIT_AS), ("cpu_time", resource.RLIMIT_CPU))


def image_opts(options):
    """qemu's ``key=value,...`` option string; a comma inside a value is written twice."""
    parts = []
    for key, value in options.items():
        text = str(value)
        if any(c in text for c in "\n\r\0"):
            raise exception.UnsafeImage("refusing a control character in qemu option %s" % key)
        parts.append("%s=%s" % (key, text.replace(",", ",,")))
    return ",".join(parts)


class RBDSource:
    """Image data in our Ceph pool: ``<pool>/<name>@<snapshot>``, read in place."""

    def __init__(self, store, name, snapshot):
        self.store = store
        self.name = name
        self.snapshot = snapshot

    def qemu_file(self):
        return dict(self.store.qemu_file_options(self.name), snapshot=self.snapshot)

    def read_head(self, length):
        return self.store.read(self.name, 0, length, snapshot=self.snapshot)

    def __str__(self):
        return "rbd %s/%s@%s" % (self.store.pool, self.name, self.snapshot)


class FileSource:
    """Image data downloaded into a local file."""

    def __init__(self, path):
        self.path = path

    def qemu_file(self):
        return {"driver": "file", "filename": self.path}

    def read_head(self, length):
        with open(self.path, "rb") as f:
            return f.read(length)

    def __str__(self):
        return "file %s" % self.path


class Job:
    """A conversion in progress; cancel() kills its qemu-img. When set, on_progress(percent)
    is called as qemu-img reports how far it is."""

    def __init__(self, image_id):
        self.image_id = image_id
        self.on_progress = None
        self.cancelled = threading.Event()
        self.reason = None
        self._process = None
        self._lock = threading.Lock()

    def attach(self, process):
        with self._lock:
            self._process = process
            if self.cancelled.is_set():
                self._kill_locked()

    def detach(self, process=None):
        with self._lock:
            self._process = None

    def kill(self):
        with self._lock:
            self._kill_locked()

    def _kill_locked(self):
        # qemu-img runs in a process group of its own: kill whatever it started too.
        if self._process is not None:
            try:
                os.killpg(self._process.pid, signal.SIGKILL)
            except OSError:
                pass

    def cancel(self, reason):
        with self._lock:
            self.reason = reason
            self.cancelled.set()
            self._kill_locked()

    def check(self):
        if self.cancelled.is_set():
            raise exception.ConversionAborted(self.reason or "cancelled")


class Converter:

    def __init__(self, conf, store):
        self.conf = conf.converter
        self.store = store

    # -- inspection

    def inspect(self, source, disk_format):
        """Check the image's first bytes: the format must be the labelled one and safe."""
        head = source.read_head(INSPECT_LIMIT)
        wrapper = format_inspector.InspectWrapper(_Chunks(head))
        try:
            while wrapper.read(INSPECT_CHUNK):
                if wrapper.format is not None:
                    break
            wrapper.close()
            detected = wrapper.format
        except format_inspector.ImageFormatError as exc:
            raise exception.UnsafeImage("image data cannot be inspected: %s" % exc) from exc
        if detected is None or str(detected) != disk_format:
            raise exception.UnsafeImage("image data is %s, not %s as its disk_format says"
                                        % (detected or "unknown", disk_format))
        try:
            detected.safety_check()
        except format_inspector.SafetyCheckFailed as exc:
            reasons = "; ".join(str(v) for v in exc.failures.values()) or str(exc)
            raise exception.UnsafeImage("unsafe %s image: %s" % (disk_format, reasons)) from exc
        self._check_size(detected.virtual_size)
        return detected

    def _check_size(self, virtual_size):
        limit = self.conf.max_virtual_size_gib * 1024 ** 3
        if not virtual_size or virtual_size <= 0:
            raise exception.UnsafeImage("image has no usable virtual size")
        if virtual_size > limit:
            raise exception.UnsafeImage("image virtual size %d bytes exceeds the limit of %d GiB"
                                        % (virtual_size, self.conf.max_virtual_size_gib))

    # -- qemu-img

    def _qemu_img(self, args, cpu_seconds, timeout, job=None, secret_file=None,
                  failure=exception.ConversionFailed, exit_codes=(0,), progress=None):
        argv = [self.conf.qemu_img, args[0]]
        if secret_file:
            argv += ["--object", "secret," + image_opts({"id": SECRET_ID, "file": secret_file,
                                                         "format": "base64"})]
        argv += args[1:]
        limits = processutils.ProcessLimits(
            address_space=self.conf.qemu_img_address_space_mib * 1024 * 1024,
            cpu_time=cpu_seconds)
        env = {"LC_ALL": "C", "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
               "MALLOC_ARENA_MAX": "2", **self.store.qemu_environment()}
        job = job or Job(None)
        metrics.qemu_img_run(args[0], any("file.driver=rbd" in a for a in args))
        try:
            if progress is not None:
                return _execute_with_progress(argv, limits, env, timeout, job, progress)
            out, _ = processutils.execute(*argv, env_variables=env,
                                          timeout=timeout, on_execute=job.attach,
                                          on_completion=job.detach,
                                          check_exit_code=list(exit_codes),
                                          preexec_fn=functools.partial(_child_setup, limits))
            return out
        except subprocess.TimeoutExpired as exc:
            job.kill()
            raise exception.ConversionFailed("qemu-img %s timed out after %d s"
                                             % (args[0], timeout)) from exc
        except subprocess.SubprocessError as exc:
            # The child could not take its limits (a hard limit below them): never run it
            # without.
            raise exception.ConversionFailed("qemu-img %s could not start under its limits: %s"
                                             % (args[0], exc)) from exc
        except processutils.ProcessExecutionError as exc:
            job.check()
            detail = (exc.stderr or exc.stdout or "").strip().splitlines()
            raise failure("qemu-img %s failed (exit %s): %s" % (
                args[0], exc.exit_code,
                OPEN_PREFIX_RE.sub("", detail[-1]) if detail else "no output")) from exc

    @staticmethod
    def _layered(driver, file_options, secret_file):
        """Options of a format driver over a protocol driver (``file.*``)."""
        options = {"driver": QEMU_DRIVERS.get(driver, driver)}
        options.update(("file." + key, value) for key, value in file_options.items())
        if secret_file and options.get("file.driver") == "rbd":
            options["file.key-secret"] = SECRET_ID
        return image_opts(options)

    def _query(self, subcommand, source, disk_format, secret_file):
        """``qemu-img info`` or ``map`` of the source, as parsed JSON."""
        out = self._qemu_img([subcommand, "--output=json", "--image-opts",
                              self._layered(disk_format, source.qemu_file(), secret_file)],
                             self.conf.qemu_img_info_cpu_seconds,
                             self.conf.qemu_img_info_timeout, secret_file=secret_file,
                             failure=exception.UnreadableImage)
        try:
            return json.loads(out)
        except ValueError as exc:
            raise exception.UnsafeImage("qemu-img %s gave no JSON for the image"
                                        % subcommand) from exc

    def info(self, source, disk_format, secret_file=None):
        """qemu-img info with the format forced; refuses backing files and odd sizes."""
        info = self._query("info", source, disk_format, secret_file)
        if info.get("format") != QEMU_DRIVERS.get(disk_format, disk_format):
            raise exception.UnsafeImage("qemu-img reads the image as %s, not %s"
                                        % (info.get("format"), disk_format))
        if info.get("backing-filename") or info.get("full-backing-filename"):
            raise exception.UnsafeImage("image has a backing file")
        specific = info.get("format-specific", {}).get("data", {}) or {}
        if specific.get("data-file"):
            raise exception.UnsafeImage("image has an external data file")
        if info.get("encrypted") or specific.get("encrypt"):
            # Nobody gave us its key: qemu-img could not read it, and a cache of it is no use.
            raise exception.UnsafeImage("image is encrypted")
        self._check_size(info.get("virtual-size"))
        info[CHECK_KEY] = self._check_consistency(source, disk_format, secret_file)
        return info

    def _check_consistency(self, source, disk_format, secret_file):
        """qemu-img check: a truncated or corrupt image would otherwise convert "successfully",
        its missing clusters read as zeros."""
        out = self._qemu_img(["check", "--output=json", "--image-opts",
                              self._layered(disk_format, source.qemu_file(), secret_file)],
                             self.conf.qemu_img_info_cpu_seconds,
                             self.conf.qemu_img_info_timeout, secret_file=secret_file,
                             failure=exception.UnreadableImage, exit_codes=CHECK_EXIT_CODES)
        if not out.strip():
            return {}  # the format has no consistency check
        try:
            result = json.loads(out)
        except ValueError as exc:
            raise exception.UnsafeImage("qemu-img check gave no JSON for the image") from exc
        errors = result.get("corruptions", 0) + result.get("check-errors", 0)
        if errors:
            raise exception.UnsafeImage("image is corrupt or truncated: qemu-img check found %d "
                                        "errors" % errors)
        return result

    def data_bytes(self, source, disk_format, secret_file=None, info=None):
        """Bytes of the image that hold data: what a thin RAW copy writes at most. For a
        qcow2 image, the clusters that ``qemu-img check`` (in ``info``) counted allocated, whole
        (at most the virtual size); otherwise the data extents of ``qemu-img map``."""
        counted = _allocated_bytes(disk_format, info or {})
        if counted is not None:
            return counted
        extents = self._query("map", source, disk_format, secret_file)
        return sum(e["length"] for e in extents if e.get("data") and not e.get("zero"))

    def convert(self, source, disk_format, target_name, job, secret_file=None):
        """Write the RAW image into the existing, empty RBD image ``target_name``."""
        progress = job.on_progress
        self._qemu_img(["convert", "-n", "--target-is-zero", "-W",
                        *(["-p"] if progress else []),
                        "-m", str(self.conf.coroutines),
                        "--image-opts", self._layered(disk_format, source.qemu_file(),
                                                      secret_file),
                        "--target-image-opts",
                        self._layered("raw", self.store.qemu_file_options(target_name),
                                      secret_file)],
                       self.conf.qemu_img_convert_cpu_seconds, self.conf.qemu_img_convert_timeout,
                       job=job, secret_file=secret_file, progress=progress)


def _allocated_bytes(disk_format, info):
    """A qcow2 image's allocated clusters as ``qemu-img check`` counted them, in bytes (an upper
    bound of its data: zero clusters are not allocated, a compressed one counts whole), or None
    when the numbers are not there or not plain."""
    check = info.get(CHECK_KEY) or {}
    clusters, size = check.get("allocated-clusters"), info.get("cluster-size")
    virtual = info.get("virtual-size")
    if disk_format != "qcow2" or not all(type(n) is int and n >= 0
                                         for n in (clusters, size, virtual)):
        return None
    return min(clusters * size, virtual)


def parse_progress(text):
    """The percentages in qemu-img's ``-p`` output, e.g. ``    (42.00/100%)\r``."""
    return [float(m) for m in PROGRESS_RE.findall(text)]


def _execute_with_progress(argv, limits, env, timeout, job, progress):
    """processutils.execute for a qemu-img run with ``-p``: the same limits, process group and
    errors, but its output is read as it comes and each percentage handed to ``progress``."""
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, close_fds=True, env=env,
                            preexec_fn=functools.partial(_child_setup, limits))
    job.attach(proc)
    errors = []
    reader = threading.Thread(target=lambda: errors.append(proc.stderr.read()), daemon=True)
    reader.start()
    timer = threading.Timer(timeout, job.kill)
    timer.start()
    began = time.monotonic()
    try:
        _follow_progress(proc.stdout, progress)
        proc.wait()
    finally:
        timer.cancel()
        job.detach(proc)
        reader.join()
        proc.stdout.close()
        proc.stderr.close()
    if proc.returncode != 0 and time.monotonic() - began >= timeout:
        raise subprocess.TimeoutExpired(argv, timeout)
    if proc.returncode != 0:
        raise processutils.ProcessExecutionError(exit_code=proc.returncode, stdout="",
                                                 stderr=os.fsdecode(b"".join(errors)),
                                                 cmd=" ".join(argv[:2]))
    return ""


def _follow_progress(stream, progress):
    pending = b""
    while True:
        chunk = stream.read1(4096)
        if not chunk:
            return
        pending += chunk
        # qemu-img ends each report with \r (a TTY redraw); keep a partial one for later.
        complete, _, pending = pending.rpartition(b"\r")
        for percent in parse_progress(complete.decode("ascii", "replace")):
            try:
                progress(percent)
            except Exception:  # noqa: BLE001 - a progress reader never stops a conversion
                LOG.exception("Progress callback failed")


def _child_setup(limits):
    """In the child before exec: its limits (as oslo.concurrency's prlimit wrapper sets them,
    without a Python process in between), its own process group, death with its parent."""
    for name, rlimit in RLIMITS:
        value = getattr(limits, name)
        if value is not None:
            resource.setrlimit(rlimit, (value, value))
    _detach_and_die_with_parent()


def _detach_and_die_with_parent():
    """In the child before exec: its own process group (so that cancel kills all of it), and
    SIGKILL when the worker dies, so that no qemu-img outlives a crashed worker."""
    os.setsid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


class _Chunks:
    """A file-like view of bytes, for InspectWrapper."""

    def __init__(self, data):
        self._data = data
        self._pos = 0

    def read(self, size):
        chunk = self._data[self._pos:self._pos + size]
        self._pos += len(chunk)
        return chunk
