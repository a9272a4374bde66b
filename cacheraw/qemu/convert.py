"""``qemu-img convert`` of a source into the cache the worker serves it, with its progress."""

from __future__ import annotations

import logging
import re
from typing import Callable, List, Optional

from oslo_config import cfg

from cacheraw.qemu.inspection import Source
from cacheraw.qemu.inspection import layered
from cacheraw.qemu.job import Job
from cacheraw.qemu.runner import BoundedReader
from cacheraw.qemu.runner import QemuImg

LOG = logging.getLogger(__name__)

PROGRESS_RE = re.compile(r"\((\d+(?:\.\d+)?)/100%\)")


def convert(qemu_img: QemuImg, conf: cfg.ConfigOpts.GroupAttr, source: Source,
            disk_format: str, target: Source, job: Job) -> None:
    """Write the RAW image into ``target``, an empty cache served to qemu-img (as a source is:
    ``qemu_file()`` and ``binds()``)."""
    progress = job.on_progress
    qemu_img.run(["convert", "-n", "--target-is-zero", "-W", *(["-p"] if progress else []),
                  "-m", str(conf.coroutines),
                  "--image-opts", layered(disk_format, source.qemu_file()),
                  "--target-image-opts", layered("raw", target.qemu_file())],
                 conf.qemu_img_convert_cpu_seconds, conf.qemu_img_convert_timeout,
                 binds=[*source.binds(), *target.binds()], job=job,
                 consume=lambda stream: follow_progress(stream, progress))


def parse_progress(text: str) -> List[float]:
    """The percentages in qemu-img's ``-p`` output, e.g. ``    (42.00/100%)\\r``."""
    return [float(m) for m in PROGRESS_RE.findall(text)]


def follow_progress(stream: BoundedReader,
                    progress: Optional[Callable[[float], None]]) -> None:
    """Hand each percentage qemu-img reports to ``progress`` (None: read and drop them)."""
    pending = b""
    while True:
        chunk = stream.read1(4096)
        if not chunk:
            return
        if progress is None:
            continue
        pending += chunk
        # qemu-img ends each report with \r (a TTY redraw); keep a partial one for later.
        complete, _, pending = pending.rpartition(b"\r")
        pending = pending[-4096:]
        for percent in parse_progress(complete.decode("ascii", "replace")):
            try:
                progress(percent)
            except Exception:  # noqa: BLE001 - a progress reader never stops a conversion
                LOG.exception("Progress callback failed")
