"""Conversion of untrusted images to RAW with qemu-img.

Every image is hostile until proven otherwise: its first bytes are inspected with oslo.utils'
format_inspector before qemu-img opens it; qemu-img runs with an explicit source format, under
address space and CPU time limits, with LC_ALL=C, from an argv list (never a shell); Ceph images
are named to qemu-img through option dictionaries, never ``rbd:pool/name:...`` strings.
"""

import collections
import contextlib
import ctypes
import functools
import json
import logging
import os
import re
import resource
import signal
import subprocess
import tempfile
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

    def check(self):
        """Nothing to check: qemu-img's own handle fails once the image is gone."""

    def __str__(self):
        return "rbd %s/%s@%s" % (self.store.pool, self.name, self.snapshot)


class ServedSource(RBDSource):
    """Image data in our Ceph pool, served read-only to qemu-img over NBD by this worker
    (CephStore.serve_snapshot): its owner can delete it during the conversion."""

    def __init__(self, rbd_source, served, gone):
        super().__init__(rbd_source.store, rbd_source.name, rbd_source.snapshot)
        self.served = served
        self._gone = gone

    def qemu_file(self):
        return self.served.qemu_file()

    def check(self):
        """Raise ImageDeleted (or UnreadableImage) when the image left the pool meanwhile."""
        try:
            self.served.check()
        except exception.CephNotFound as exc:
            raise self._gone(exc) from exc


class FileSource:
    """Image data downloaded into a local file."""

    def __init__(self, path):
        self.path = path

    def qemu_file(self):
        return {"driver": "file", "filename": self.path}

    def read_head(self, length):
        with open(self.path, "rb") as f:
            return f.read(length)

    def check(self):
        """A local file stays."""

    def __str__(self):
        return "file %s" % self.path


# The longest path of a Unix socket (sun_path, without its terminating zero).
MAX_SOCKET_PATH = 107
# What the image API says of an image being deleted.
DELETED_STATUSES = ("deleted", "pending_delete")
# Files of an image in conversion_dir: its download or the socket it is served on, and the key
# file qemu-img reads.
LEFTOVER_RE = re.compile(r"(?P<id>[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})"
                         r"\.(download|nbd|key)")


class SourcePreparer:
    """``with SourcePreparer(conf, images, store, image, job, in_place) as (source, secret):``
    where qemu-img reads the image and the file of the Ceph key qemu-img needs (or None).

    The image's data is in our pool (``in_place``, an RBDSource) or not (None). Data elsewhere is
    downloaded and verified against its checksums; data in our pool is served to qemu-img by
    this worker over NBD from a read-only handle (so that its owner can delete it meanwhile), or
    read in place by qemu-img when [converter] read_source_in_place is set. Whatever was written
    in conversion_dir is removed at the end, in every outcome."""

    def __init__(self, conf, images, store, image, job, in_place=None):
        self.directory = conf.converter.conversion_dir
        self.read_in_place = conf.converter.read_source_in_place
        self.images = images
        self.store = store
        self.image = image
        self.job = job
        self.in_place = in_place
        self._stack = contextlib.ExitStack()

    def __enter__(self):
        with self._stack as stack:
            source = self._source(stack)
            secret = self._secret_file(stack)
            self._stack = stack.pop_all()
        return source, secret

    def __exit__(self, *exc_info):
        return self._stack.__exit__(*exc_info)

    def _source(self, stack):
        if self.in_place is None:
            return self._download(stack)
        if self.read_in_place:
            return self.in_place
        return self._serve(stack)

    def _path(self, suffix, stack):
        path = os.path.join(self.directory, "%s.%s" % (self.image["id"], suffix))
        stack.callback(_unlink, path)
        return path

    def _check_free_space(self):
        size = self.image.get("size")
        free = free_bytes(self.directory)
        if size is None or size > free:
            raise exception.NotEnoughSpace(
                "not enough space in conversion directory %s: need %s, have %d"
                % (self.directory, size, free))

    def _download(self, stack):
        image = self.image
        self._check_free_space()
        size = image["size"]
        path = self._path("download", stack)
        checksums = []
        if image.get("os_hash_algo") in ("sha256", "sha384", "sha512") and \
                image.get("os_hash_value"):
            checksums.append((image["os_hash_algo"], image["os_hash_value"]))
        if image.get("checksum"):
            checksums.append(("md5", image["checksum"]))
        self.images.download(image["id"], path, size, checksums, check=self.job.check)
        LOG.info("Image %s: downloaded %d bytes (data not in this Ceph pool)", image["id"], size)
        return FileSource(path)

    def _serve(self, stack):
        path = os.path.join(self.directory, "%s.nbd" % self.image["id"])
        if len(os.fsencode(path)) > MAX_SOCKET_PATH:
            # A Unix socket's path is short: a private folder of the system's temp dir instead.
            path = os.path.join(tempfile.mkdtemp(prefix="cacheraw-"), "%s.nbd" % self.image["id"])
            stack.callback(os.rmdir, os.path.dirname(path))
        try:
            served = stack.enter_context(self.store.serve_snapshot(
                self.in_place.name, self.in_place.snapshot, path))
        except exception.CephNotFound as exc:
            raise self._data_gone(exc) from exc
        LOG.info("Image %s: serving %s read-only to qemu-img", self.image["id"], self.in_place)
        return ServedSource(self.in_place, served, self._data_gone)

    def _data_gone(self, exc):
        """The image's data left the pool while it was read: deleted with its image (the image
        API says so), or gone behind the image's back (an error recorded on the image)."""
        try:
            deleted = self.images.get(self.image["id"]).get("status") in DELETED_STATUSES
        except exception.ImageNotFound:
            deleted = True
        if deleted:
            return exception.ImageDeleted("image deleted while it was read")
        return exception.UnreadableImage("the image's data is missing from pool %s: %s"
                                         % (self.store.pool, exc))

    def _secret_file(self, stack):
        key = self.store.secret_key()
        if not key:
            return None
        path = self._path("key", stack)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(key)
        return path


def clean_conversion_dir(directory, in_use=lambda image_id: False):
    """Remove what a worker that died left in conversion_dir: ``<id>.download`` and ``<id>.key``
    files whose image nobody converts now (``in_use(image_id)``). Returns the names removed."""
    os.makedirs(directory, mode=0o700, exist_ok=True)
    removed = []
    for name in sorted(os.listdir(directory)):
        match = LEFTOVER_RE.fullmatch(name)
        if match is None or in_use(match.group("id")):
            continue
        _unlink(os.path.join(directory, name))
        removed.append(name)
    return removed


def free_bytes(directory):
    os.makedirs(directory, mode=0o700, exist_ok=True)
    stat = os.statvfs(directory)
    return stat.f_bavail * stat.f_frsize


def _unlink(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


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

    def detach(self, process):
        """The process has ended (processutils' on_completion)."""
        with self._lock:
            if self._process is process:
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
        """Stop the conversion: ``reason`` is a ConversionAborted (LockLost, WorkerStopping,
        ImageDeleted), raised by the next check()."""
        with self._lock:
            if not self.cancelled.is_set():
                self.reason = reason
            self.cancelled.set()
            self._kill_locked()

    def check(self):
        if self.cancelled.is_set():
            reason = self.reason
            if isinstance(reason, exception.ConversionAborted):
                raise type(reason)(*reason.args)
            raise exception.ConversionAborted(str(reason or "cancelled"))


class Converter:

    def __init__(self, conf, store):
        self.conf = conf.converter
        self.store = store

    def check(self):
        """qemu-img runs and has the rbd driver; the conversion directory can be written.
        Raises ConfigError saying what is missing."""
        try:
            help_text = self._qemu_img(["--help"], self.conf.qemu_img_info_cpu_seconds,
                                       self.conf.qemu_img_info_timeout,
                                       failure=exception.ConfigError)
        except (OSError, exception.CacherawError) as exc:
            raise exception.ConfigError("cannot run %s: %s" % (self.conf.qemu_img, exc)) from exc
        formats = next((line.split(":", 1)[1].split() for line in help_text.splitlines()
                        if line.startswith("Supported formats:")), [])
        if "rbd" not in formats:
            raise exception.ConfigError("%s has no rbd driver (install qemu-block-extra)"
                                        % self.conf.qemu_img)
        directory = self.conf.conversion_dir
        try:
            os.makedirs(directory, mode=0o700, exist_ok=True)
            with tempfile.TemporaryFile(dir=directory):
                pass
        except OSError as exc:
            raise exception.ConfigError("cannot write in conversion_dir %s: %s"
                                        % (directory, exc.strerror)) from exc
        return "%s with the rbd driver; %s writable" % (self.conf.qemu_img, directory)

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

    def _command(self, args, cpu_seconds, secret_file):
        """(argv, limits, environment) of a qemu-img run."""
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
        metrics.qemu_img_run(args[0], any("file.driver=rbd" in a for a in args))
        return argv, limits, env

    def _qemu_img(self, args, cpu_seconds, timeout, job=None, secret_file=None,
                  failure=exception.ConversionFailed, exit_codes=(0,), progress=None):
        argv, limits, env = self._command(args, cpu_seconds, secret_file)
        job = job or Job(None)
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

    def data_bytes(self, source, disk_format, secret_file=None, job=None, bound=None,
                   info=None):
        """Bytes of the image that hold data: what a thin RAW copy writes at most.

        For a qcow2 image, the clusters that ``qemu-img check`` (in ``info``, from info())
        counted allocated, whole (at most the virtual size). Otherwise ``qemu-img map`` is read
        as it comes, one extent (line) at a time, never whole: a small image can describe
        millions of extents. After ``[converter] max_map_extents`` of them
        it is stopped and the image counted as ``bound`` bytes (its virtual size)."""
        counted = _allocated_bytes(disk_format, info or {})
        if counted is not None:
            return counted
        counter = _ExtentCounter(self.conf.max_map_extents)
        argv, limits, env = self._command(
            ["map", "--output=json", "--image-opts",
             self._layered(disk_format, source.qemu_file(), secret_file)],
            self.conf.qemu_img_info_cpu_seconds, secret_file)
        job = job or Job(None)
        try:
            _run_streaming(argv, limits, env, self.conf.qemu_img_info_timeout, job,
                           counter.consume)
        except _EnoughRead:
            LOG.info("Image %s: more than %d extents: counted as its whole virtual size",
                     job.image_id, self.conf.max_map_extents)
            return bound if bound is not None else counter.data
        except subprocess.TimeoutExpired as exc:
            raise exception.ConversionFailed("qemu-img map timed out after %d s"
                                             % self.conf.qemu_img_info_timeout) from exc
        except subprocess.SubprocessError as exc:
            raise exception.ConversionFailed("qemu-img map could not start under its limits: %s"
                                             % exc) from exc
        except processutils.ProcessExecutionError as exc:
            job.check()
            raise exception.UnreadableImage("qemu-img map failed (exit %s): %s"
                                            % (exc.exit_code, _last_line(exc.stderr))) from exc
        return counter.data

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


# The most of qemu-img's stderr kept for an error message.
STDERR_LIMIT = 64 * 1024
# The longest line of qemu-img map's JSON (one extent) that is read.
MAP_LINE_LIMIT = 4096


def _run_streaming(argv, limits, env, timeout, job, consume):
    """processutils.execute for a qemu-img whose output is consumed as it comes
    (``consume(stdout)``), never held whole: the same limits, process group and errors.
    ``consume`` may raise to stop it early (qemu-img is then killed)."""
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, close_fds=True, env=env,
                            preexec_fn=functools.partial(_child_setup, limits))
    job.attach(proc)
    errors = collections.deque(maxlen=16)
    reader = threading.Thread(target=_read_tail, args=(proc.stderr, errors), daemon=True)
    reader.start()
    timer = threading.Timer(timeout, job.kill)
    timer.start()
    began = time.monotonic()
    try:
        consume(proc.stdout)
    except BaseException:
        job.kill()
        raise
    finally:
        proc.wait()
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


def _execute_with_progress(argv, limits, env, timeout, job, progress):
    """A qemu-img run with ``-p``: each percentage it reports is handed to ``progress``."""
    _run_streaming(argv, limits, env, timeout, job,
                   lambda stream: _follow_progress(stream, progress))
    return ""


def _read_tail(stream, tail):
    """Read a stream to its end, keeping only its last chunks (at most STDERR_LIMIT bytes)."""
    while True:
        chunk = stream.read1(STDERR_LIMIT // 16)
        if not chunk:
            return
        tail.append(chunk)


def _last_line(text):
    lines = (text or "").strip().splitlines()
    return OPEN_PREFIX_RE.sub("", lines[-1]) if lines else "no output"


class _EnoughRead(Exception):
    """Raised by a consumer that has read all it may."""


class _ExtentCounter:
    """Adds up the data extents of ``qemu-img map --output=json``, a line per extent:
    ``[{ "start": 0, "length": 65536, ..., "zero": false, "data": true, ...},``"""

    def __init__(self, max_extents):
        self.max_extents = max_extents
        self.extents = 0
        self.data = 0

    def consume(self, stream):
        while True:
            line = stream.readline(MAP_LINE_LIMIT)
            if not line:
                return
            if not line.endswith(b"\n") and len(line) >= MAP_LINE_LIMIT:
                raise exception.UnsafeImage("qemu-img map gave a line longer than %d bytes"
                                            % MAP_LINE_LIMIT)
            self.add(line.strip().lstrip(b"[").rstrip(b",]").strip())

    def add(self, text):
        if not text:
            return
        try:
            extent = json.loads(text)
            length = int(extent["length"])
        except (ValueError, KeyError, TypeError) as exc:
            raise exception.UnsafeImage("qemu-img map gave no JSON extent for the image") from exc
        self.extents += 1
        if extent.get("data") and not extent.get("zero"):
            self.data += length
        if self.extents >= self.max_extents:
            raise _EnoughRead()


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
