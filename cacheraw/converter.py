"""Conversion of untrusted images to RAW: where qemu-img reads and writes, and the steps.

Every image is hostile until proven otherwise: its first bytes are inspected before qemu-img
opens it; qemu-img (cacheraw.qemu) runs in a sandbox with no network and no Ceph key, with an
explicit source format, under its limits, every output read with a limit. It reaches the image
and the cache only through what it is given: two NBD sockets on which this worker serves them from
its own librbd handles (cacheraw.ceph.served), or a downloaded file, read-only.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import tempfile
from typing import Any, Callable, ContextManager, Dict, Iterator, List, Optional, Protocol
from typing import Sequence, Tuple, Union

from oslo_config import cfg
from oslo_utils.imageutils import format_inspector

from cacheraw import exception
from cacheraw import properties
from cacheraw.qemu import convert
from cacheraw.qemu import inspection
from cacheraw.qemu import runner
from cacheraw.qemu.job import Job
from cacheraw.qemu.sandbox import Bind

LOG = logging.getLogger(__name__)

# Where qemu-img finds, in its sandbox, the folder of the NBD sockets and a downloaded image.
SOCKETS_INSIDE = "/run/cacheraw"
IMAGE_INSIDE = "/run/image"
SOURCE_SOCKET = "source"
CACHE_SOCKET = "cache"
# The longest path of a Unix socket (sun_path, without its terminating zero).
MAX_SOCKET_PATH = 107
# What a conversion leaves in conversion_dir until it ends: an image's download, or the folder
# of its NBD sockets (and the key file of earlier versions).
LEFTOVER_RE = re.compile(r"(?P<id>[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})"
                         r"\.(download|nbd|key)")


class ServedData(Protocol):
    """Data the store serves to qemu-img (cacheraw.ceph.served)."""

    def io_failed(self) -> bool: ...


class ServedImage(ServedData, Protocol):
    """An image the store serves to qemu-img, read-only."""

    def check(self) -> None: ...


class Store(Protocol):
    """What a conversion asks of the store (cacheraw.ceph.store.CephStore)."""

    pool: str

    def read(self, name: str, offset: int, length: int, snapshot: str = ...) -> bytes: ...

    def serve_snapshot(self, name: str, snapshot: str,
                       path: str) -> ContextManager[ServedImage]: ...

    def serve_cache(self, name: str, path: str) -> ContextManager[ServedData]: ...


class Images(Protocol):
    """What a conversion asks of the image API (cacheraw.image_api.ImageAPI)."""

    def get(self, image_id: str) -> dict: ...

    def download(self, image_id: str, path: str, expected_size: Optional[int],
                 checksums: Sequence[Tuple[str, str]],
                 check: Optional[Callable[[], None]] = None) -> int: ...


def nbd_file(socket_name: str) -> Dict[str, str]:
    """Options of qemu's nbd protocol driver for a socket of the sockets' folder."""
    return {"driver": "nbd", "server.type": "unix",
            "server.path": "%s/%s" % (SOCKETS_INSIDE, socket_name)}


class RBDSource:
    """Image data in our Ceph pool: ``<pool>/<name>@<snapshot>``."""

    def __init__(self, store: Store, name: str, snapshot: str):
        self.store = store
        self.name = name
        self.snapshot = snapshot

    def read_head(self, length: int) -> bytes:
        return self.store.read(self.name, 0, length, snapshot=self.snapshot)

    def __str__(self) -> str:
        return "rbd %s/%s@%s" % (self.store.pool, self.name, self.snapshot)


class Served:
    """An RBD image this worker serves over NBD in the sockets' folder ``sockets``: what
    qemu-img is given of it."""

    def __init__(self, served: ServedData, sockets: str, socket_name: str):
        self.served = served
        self.sockets = sockets
        self.socket_name = socket_name

    def io_failed(self) -> bool:
        """Whether the worker's own reads or writes of Ceph failed under qemu-img: what
        qemu-img concluded is then not the image's fault."""
        return self.served.io_failed()

    def qemu_file(self) -> Dict[str, str]:
        return nbd_file(self.socket_name)

    def binds(self) -> List[Bind]:
        return [(self.sockets, SOCKETS_INSIDE, False)]


class ServedSource(Served):
    """Image data in our Ceph pool, served read-only: its owner can delete it meanwhile."""

    served: ServedImage

    def __init__(self, rbd_source: RBDSource, served: ServedImage, sockets: str,
                 gone: Callable[[Exception], Exception]):
        super().__init__(served, sockets, SOURCE_SOCKET)
        self.rbd_source = rbd_source
        self._gone = gone

    def read_head(self, length: int) -> bytes:
        return self.rbd_source.read_head(length)

    def check(self) -> None:
        """Raise ImageDeleted (or UnreadableImage) when the image (or its snapshot) left the
        pool meanwhile."""
        try:
            self.served.check()
        except exception.CephNotFound as exc:
            raise self._gone(exc) from exc

    def __str__(self) -> str:
        return str(self.rbd_source)


class FileSource:
    """Image data downloaded into a local file, given read-only to qemu-img."""

    def __init__(self, path: str):
        self.path = path

    def qemu_file(self) -> Dict[str, str]:
        return {"driver": "file", "filename": IMAGE_INSIDE}

    def binds(self) -> List[Bind]:
        return [(self.path, IMAGE_INSIDE, False)]

    def read_head(self, length: int) -> bytes:
        with open(self.path, "rb") as f:
            return f.read(length)

    def check(self) -> None:
        """A local file stays."""

    def io_failed(self) -> bool:
        """qemu-img reads the file itself: its errors are the image's."""
        return False

    def __str__(self) -> str:
        return "file %s" % self.path


# Where qemu-img reads an image.
Source = Union[ServedSource, FileSource]


class SourcePreparer:
    """``with SourcePreparer(conf, images, store, image, job, in_place) as source:`` where
    qemu-img reads the image; ``with preparer.serve_cache(name) as target:`` where it writes
    the cache.

    The image's data is in our pool (``in_place``, an RBDSource) or not (None). Data elsewhere
    is downloaded and verified against its checksums; data in our pool is served to qemu-img by
    this worker over NBD from a read-only handle (so that its owner can delete it meanwhile).
    Whatever was written in conversion_dir is removed at the end, in every outcome."""

    def __init__(self, conf: cfg.ConfigOpts, images: Images, store: Store, image: dict,
                 job: Job, in_place: Optional[RBDSource] = None):
        self.directory: str = conf.converter.conversion_dir
        self.images = images
        self.store = store
        self.image = image
        self.job = job
        self.in_place = in_place
        self.sockets = ""  # the folder of the NBD sockets, once entered
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> Source:
        with self._stack as stack:
            self.sockets = self._sockets(stack)
            source: Source = (self._download(stack) if self.in_place is None
                              else self._serve(stack, self.in_place))
            self._stack = stack.pop_all()
        return source

    def __exit__(self, *exc_info: Any) -> Optional[bool]:
        return self._stack.__exit__(*exc_info)

    def _sockets(self, stack: contextlib.ExitStack) -> str:
        """A private folder for the NBD sockets, short enough for a Unix socket's path."""
        path = os.path.join(self.directory, "%s.nbd" % self.image["id"])
        if len(os.fsencode(os.path.join(path, SOURCE_SOCKET))) > MAX_SOCKET_PATH:
            path = tempfile.mkdtemp(prefix="cacheraw-%s-" % self.image["id"])
        else:
            shutil.rmtree(path, ignore_errors=True)  # left by a worker that died
            os.makedirs(path, mode=0o700)
        stack.callback(shutil.rmtree, path, ignore_errors=True)
        return path

    def _check_free_space(self) -> None:
        size = self.image.get("size")
        if size is None:
            raise exception.UnsafeImage("the image API gives no size for the image's data")
        free = free_bytes(self.directory)
        if size > free:
            raise exception.NotEnoughSpace(exception.Room.CONVERSION_DIR, self.directory, size,
                                           free)

    def _download(self, stack: contextlib.ExitStack) -> FileSource:
        image = self.image
        self._check_free_space()
        size = image["size"]
        path = os.path.join(self.directory, "%s.download" % image["id"])
        stack.callback(_unlink, path)
        checksums: List[Tuple[str, str]] = []
        if image.get("os_hash_algo") in properties.SECURE_HASHES and \
                image.get("os_hash_value"):
            checksums.append((image["os_hash_algo"], image["os_hash_value"]))
        if image.get("checksum"):
            checksums.append(("md5", image["checksum"]))
        self.images.download(image["id"], path, size, checksums, check=self.job.check)
        LOG.info("Image %s: downloaded %d bytes (data not in this Ceph pool)", image["id"], size)
        return FileSource(path)

    def _serve(self, stack: contextlib.ExitStack, in_place: RBDSource) -> ServedSource:
        try:
            served = stack.enter_context(self.store.serve_snapshot(
                in_place.name, in_place.snapshot, os.path.join(self.sockets, SOURCE_SOCKET)))
        except exception.CephNotFound as exc:
            raise self._data_gone(exc) from exc
        LOG.info("Image %s: serving %s read-only to qemu-img", self.image["id"], in_place)
        return ServedSource(in_place, served, self.sockets, self._data_gone)

    @contextlib.contextmanager
    def serve_cache(self, name: str) -> Iterator[Served]:
        """Serve the new cache ``name`` writable to qemu-img while it converts."""
        with self.store.serve_cache(name, os.path.join(self.sockets, CACHE_SOCKET)) as served:
            yield Served(served, self.sockets, CACHE_SOCKET)

    def _data_gone(self, exc: Exception) -> Exception:
        """The image's data left the pool while it was read: deleted with its image (the image
        API says so), or gone behind the image's back (an error recorded on the image)."""
        try:
            status = self.images.get(self.image["id"]).get("status")
            deleted = status in properties.DELETED_STATUSES
        except exception.ImageNotFound:
            deleted = True
        if deleted:
            return exception.ImageDeleted("image deleted while it was read")
        return exception.UnreadableImage("the image's data is missing from pool %s: %s"
                                         % (self.store.pool, exc))


def clean_conversion_dir(directory: str,
                         in_use: Callable[[str], bool] = lambda image_id: False) -> List[str]:
    """Remove what a worker that died left in conversion_dir: ``<id>.download`` files and
    ``<id>.nbd`` folders whose image nobody converts now (``in_use(image_id)``). Returns the
    names removed."""
    os.makedirs(directory, mode=0o700, exist_ok=True)
    removed: List[str] = []
    for name in sorted(os.listdir(directory)):
        match = LEFTOVER_RE.fullmatch(name)
        if match is None or in_use(match.group("id")):
            continue
        path = os.path.join(directory, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            _unlink(path)
        removed.append(name)
    return removed


def free_bytes(directory: str) -> int:
    os.makedirs(directory, mode=0o700, exist_ok=True)
    stat = os.statvfs(directory)
    return stat.f_bavail * stat.f_frsize


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


class Converter:
    """The steps of a conversion, as the cacher takes them: inspect, info (with check),
    data_bytes, convert. Each runs qemu-img through cacheraw.qemu."""

    def __init__(self, conf: cfg.ConfigOpts):
        self.conf = conf.converter
        self.qemu_img = runner.QemuImg(self.conf)
        self.inspector = inspection.Inspector(self.conf, self.qemu_img)

    def check(self) -> str:
        """qemu-img runs in its sandbox and has the nbd driver; the conversion directory can be
        written. Raises ConfigError saying what is missing."""
        try:
            help_text = os.fsdecode(self.qemu_img.run(
                ["--help"], self.conf.qemu_img_info_cpu_seconds,
                self.conf.qemu_img_info_timeout, failure=exception.ConfigError))
        except exception.CacherawError as exc:
            raise exception.ConfigError("cannot run %s in its sandbox (bwrap): %s"
                                        % (self.qemu_img.program, exc)) from exc
        formats = next((line.split(":", 1)[1].split() for line in help_text.splitlines()
                        if line.startswith("Supported formats:")), [])
        if "nbd" not in formats:
            raise exception.ConfigError("%s has no nbd driver" % self.qemu_img.program)
        directory = self.conf.conversion_dir
        try:
            os.makedirs(directory, mode=0o700, exist_ok=True)
            with tempfile.TemporaryFile(dir=directory):
                pass
        except OSError as exc:
            raise exception.ConfigError("cannot write in conversion_dir %s: %s"
                                        % (directory, exc.strerror)) from exc
        return "%s in its sandbox with the nbd driver; %s writable" % (self.qemu_img.program,
                                                                        directory)

    def inspect(self, source: Source, disk_format: str) -> format_inspector.FileInspector:
        """Check the image's first bytes: the format must be the labelled one and safe."""
        return inspection.inspect_head(source.read_head(inspection.INSPECT_LIMIT), disk_format,
                                       self.inspector.max_virtual_size)

    def info(self, source: Source, disk_format: str, job: Optional[Job] = None) -> dict:
        return self.inspector.info(source, disk_format, job)

    def data_bytes(self, source: Source, disk_format: str, job: Optional[Job] = None,
                   bound: Optional[int] = None, info: Optional[dict] = None) -> int:
        return self.inspector.data_bytes(source, disk_format, job, bound, info)

    def convert(self, source: Source, disk_format: str, target: Served, job: Job) -> None:
        """Write the RAW image into ``target``, the new cache served to qemu-img."""
        convert.convert(self.qemu_img, self.conf, source, disk_format, target, job)
