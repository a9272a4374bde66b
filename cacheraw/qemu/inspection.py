"""What an untrusted image is, before it is converted: its first bytes (oslo.utils'
format_inspector, before qemu-img opens it), then ``qemu-img info``, ``check`` and ``map`` with the
format forced, every output read with a limit.

An image is named to qemu-img by an option dictionary (``image_opts``), never a filename string:
a source is something with ``qemu_file()`` (the options of its protocol driver, as qemu-img sees
it in its sandbox) and ``binds()`` (what the sandbox must be given to reach it).
"""

from __future__ import annotations

import io
import json
import logging
from typing import Any, Dict, List, Optional, Protocol, Tuple, cast

from oslo_config import cfg
from oslo_utils.imageutils import format_inspector

from cacheraw import exception
from cacheraw.qemu.job import Job
from cacheraw.qemu.runner import BoundedReader
from cacheraw.qemu.runner import QemuImg
from cacheraw.qemu.sandbox import Bind

LOG = logging.getLogger(__name__)

INSPECT_CHUNK = 64 * 1024
# Enough for every inspector to decide (VHDX and LUKS look furthest, within the first MiB).
INSPECT_LIMIT = 4 * 1024 * 1024
# Glance's disk_format names that qemu calls otherwise.
QEMU_DRIVERS = {"vhd": "vpc"}
# qemu-img check: 2 = corruption found, 3 = only leaked clusters (harmless), 63 = the format has
# no check.
CHECK_EXIT_CODES = (0, 2, 3, 63)
# Where info() keeps what qemu-img check said of the image.
CHECK_KEY = "cacheraw-check"
# The longest line of qemu-img map's JSON (one extent) that is read.
MAP_LINE_LIMIT = 4096


class Source(Protocol):
    """An image as qemu-img is given it: the options of its protocol driver, and what its
    sandbox must be given to reach it."""

    def qemu_file(self) -> Dict[str, str]: ...

    def binds(self) -> List[Bind]: ...


def image_opts(options: dict) -> str:
    """qemu's ``key=value,...`` option string; a comma inside a value is written twice."""
    parts = []
    for key, value in options.items():
        text = str(value)
        if any(c in text for c in "\n\r\0"):
            raise exception.UnsafeImage("refusing a control character in qemu option %s" % key)
        parts.append("%s=%s" % (key, text.replace(",", ",,")))
    return ",".join(parts)


def layered(driver: str, file_options: dict) -> str:
    """Options of a format driver over a protocol driver (``file.*``)."""
    options = {"driver": QEMU_DRIVERS.get(driver, driver)}
    options.update(("file." + key, value) for key, value in file_options.items())
    return image_opts(options)


def inspect_head(head: bytes, disk_format: str,
                 max_virtual_size: int) -> format_inspector.FileInspector:
    """Check the image's first bytes: the format must be the labelled one and safe."""
    wrapper = format_inspector.InspectWrapper(io.BytesIO(head))
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
    check_size(detected.virtual_size, max_virtual_size)
    return detected


def check_size(virtual_size: Optional[int], limit: int) -> None:
    if not virtual_size or virtual_size <= 0:
        raise exception.UnsafeImage("image has no usable virtual size")
    if virtual_size > limit:
        raise exception.UnsafeImage("image virtual size %d bytes exceeds the limit of %d GiB"
                                    % (virtual_size, limit // 1024 ** 3))


class Inspector:
    """``qemu-img info``, ``check`` and ``map`` of a source, under [converter]'s limits."""

    def __init__(self, conf: cfg.ConfigOpts.GroupAttr, qemu_img: QemuImg):
        self.conf = conf
        self.qemu_img = qemu_img
        self.max_virtual_size: int = conf.max_virtual_size_gib * 1024 ** 3

    def _run(self, args: List[str], source: Source, job: Optional[Job], **kwargs: Any) -> Any:
        return self.qemu_img.run(args, self.conf.qemu_img_info_cpu_seconds,
                                 self.conf.qemu_img_info_timeout, binds=source.binds(),
                                 job=job, failure=exception.UnreadableImage, **kwargs)

    def _json(self, subcommand: str, source: Source, disk_format: str, job: Optional[Job],
              **kwargs: Any) -> Dict[str, Any]:
        out = self._run([subcommand, "--output=json", "--image-opts",
                         layered(disk_format, source.qemu_file())], source, job, **kwargs)
        if subcommand == "check" and not out.strip():
            return {}  # the format has no consistency check
        try:
            answer = json.loads(out)
        except ValueError as exc:
            raise exception.UnsafeImage("qemu-img %s gave no JSON for the image"
                                        % subcommand) from exc
        if not isinstance(answer, dict):
            raise exception.UnsafeImage("qemu-img %s gave no JSON object for the image"
                                        % subcommand)
        return answer

    def info(self, source: Source, disk_format: str, job: Optional[Job] = None) -> dict:
        """qemu-img info with the format forced; refuses backing files and odd sizes."""
        info = self._json("info", source, disk_format, job)
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
        check_size(info.get("virtual-size"), self.max_virtual_size)
        info[CHECK_KEY] = self.check(source, disk_format, job)
        return info

    def check(self, source: Source, disk_format: str, job: Optional[Job] = None) -> dict:
        """qemu-img check: a truncated or corrupt image would otherwise convert "successfully",
        its missing clusters read as zeros. A hostile image can make it write hundreds of MB of
        complaints: past the runner's limit it is killed and the image refused."""
        result = self._json("check", source, disk_format, job, exit_codes=CHECK_EXIT_CODES)
        errors = result.get("corruptions", 0) + result.get("check-errors", 0)
        if errors:
            raise exception.UnsafeImage("image is corrupt or truncated: qemu-img check found %d "
                                        "errors" % errors)
        return result

    def data_bytes(self, source: Source, disk_format: str, job: Optional[Job] = None,
                   bound: Optional[int] = None, info: Optional[dict] = None) -> int:
        """Bytes of the image that hold data: what a thin RAW copy writes at most.

        For a qcow2 image, the clusters that ``qemu-img check`` (in ``info``, from info())
        counted allocated, whole (at most the virtual size). Otherwise ``qemu-img map`` is read
        as it comes, one extent (line) at a time, never whole: a small image can describe
        millions of extents. After ``[converter] max_map_extents`` of them it is stopped and the
        image counted as ``bound`` bytes (its virtual size)."""
        counted = allocated_bytes(disk_format, info or {})
        if counted is not None:
            return counted
        counter = ExtentCounter(self.conf.max_map_extents)
        try:
            self._run(["map", "--output=json", "--image-opts",
                       layered(disk_format, source.qemu_file())], source, job,
                      consume=counter.consume,
                      stdout_limit=(self.conf.max_map_extents + 1) * MAP_LINE_LIMIT)
        except EnoughRead:
            LOG.info("Image %s: more than %d extents: counted as its whole virtual size",
                     job.image_id if job else None, self.conf.max_map_extents)
            return bound if bound is not None else counter.data
        return counter.data


def allocated_bytes(disk_format: str, info: dict) -> Optional[int]:
    """A qcow2 image's allocated clusters as ``qemu-img check`` counted them, in bytes (an upper
    bound of its data: zero clusters are not allocated, a compressed one counts whole), or None
    when the numbers are not there or not plain."""
    check: Dict[str, Any] = info.get(CHECK_KEY) or {}
    numbers = (check.get("allocated-clusters"), info.get("cluster-size"),
               info.get("virtual-size"))
    if disk_format != "qcow2" or not all(type(n) is int and n >= 0 for n in numbers):
        return None
    clusters, size, virtual = cast(Tuple[int, int, int], numbers)
    return min(clusters * size, virtual)


class EnoughRead(Exception):
    """Raised by a consumer that has read all it may."""


class ExtentCounter:
    """Adds up the data extents of ``qemu-img map --output=json``, a line per extent:
    ``[{ "start": 0, "length": 65536, ..., "zero": false, "data": true, ...},``"""

    def __init__(self, max_extents: int):
        self.max_extents = max_extents
        self.extents = 0
        self.data = 0

    def consume(self, stream: BoundedReader) -> None:
        while True:
            line = stream.readline(MAP_LINE_LIMIT)
            if not line:
                return
            if not line.endswith(b"\n") and len(line) >= MAP_LINE_LIMIT:
                raise exception.UnsafeImage("qemu-img map gave a line longer than %d bytes"
                                            % MAP_LINE_LIMIT)
            self.add(line.strip().lstrip(b"[").rstrip(b",]").strip())

    def add(self, text: bytes) -> None:
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
            raise EnoughRead()

