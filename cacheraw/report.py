"""What cacheraw-manage shows: an image as the image API and Ceph see it, tables, progress."""

from __future__ import annotations

import json
import sys
import time
from typing import Any, Callable, Iterable, List, Optional, Sequence, TextIO, Tuple

from cacheraw import cacher
from cacheraw import properties
from cacheraw import wants

IMAGE_KEYS = ("status", "disk_format", "cache_raw", properties.STATUS, properties.URL,
              properties.SIZE, properties.ERROR, "store")
Status = properties.Status
MIB = 1024 * 1024


def is_followed(image: dict) -> bool:
    """An image cacheraw has business with: it asks for a cache or has a cache status."""
    return wants.wants_cache(image) or bool(image.get(properties.STATUS))


def image_view(core: cacher.Cacher, image: dict) -> dict:
    """One image, side by side: its properties in the image API and its cache in Ceph."""
    image_id = image["id"]
    name = properties.cache_name(image_id)
    facts = core.store.cache_facts(name)
    view = {
        "id": image_id,
        "name": image.get("name"),
        "image": {key: image.get(key) for key in IMAGE_KEYS},
        "ceph": {"cache": "%s/%s@%s" % (core.store.pool, name, properties.CACHE_SNAP),
                 "exists": facts["exists"], "protected": facts["protected"],
                 "used_bytes": facts["used"], "clones": facts["clones"],
                 "lock_holder": core.store.lock_holder(image_id)},
    }
    view["ceph"].update(sharing_view(core.store.sharing(name)))
    found = problems(view, core.cache_url(image_id)) + properties.problems(image)
    view["problems"] = list(dict.fromkeys(found))
    return view


def sharing_view(sharing: dict) -> dict:
    """The images whose caches share data with this one (cacheraw.identical), by image id."""
    parent = sharing["parent"]
    return {"shares_data_of": properties.image_id_of(parent) if parent else None,
            "shared_cache_trashed": bool(parent) and sharing["parent_trashed"],
            "shared_with": [properties.image_id_of(name) for name in sharing["sharers"]]}


def sharing_text(ceph: dict) -> str:
    shared = ceph.get("shares_data_of")
    if not shared:
        return "-"
    return "image %s%s" % (shared, " (its cache is in the trash: kept while this one uses it)"
                           if ceph.get("shared_cache_trashed") else "")


def problems(view: dict, expected_url: str) -> List[str]:
    """Where the image API and Ceph disagree (the image's own properties are checked by
    cacheraw.properties)."""
    image, ceph = view["image"], view["ceph"]
    status = image[properties.STATUS]
    found = []
    if status == Status.CACHED:
        if not ceph["protected"]:
            found.append("Cached, but Ceph has no protected snapshot %s" % ceph["cache"])
        if image[properties.URL] != expected_url:
            found.append("cache_raw_url is not %s" % expected_url)
        if ceph["used_bytes"] is not None and image[properties.SIZE] != str(ceph["used_bytes"]):
            found.append("cache_raw_size %s differs from the %d bytes used in Ceph"
                         % (image[properties.SIZE], ceph["used_bytes"]))
    if status in (Status.QUEUED, Status.CACHING) and not ceph["lock_holder"]:
        found.append("%s, and no worker holds its lock: waiting for a worker" % status)
    if ceph["exists"] and not ceph["protected"] and not ceph["lock_holder"]:
        found.append("%s is a partial cache (no protected snapshot, no lock)" % ceph["cache"])
    return found


# -- text

def holder_text(holder: Optional[dict]) -> str:
    if not holder:
        return "-"
    text = "%s pid %s" % (holder.get("host", "?"), holder.get("pid", "?"))
    if holder.get("since"):
        text += " since %s" % time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                            time.gmtime(holder["since"]))
    return text


def ceph_state(ceph: dict) -> str:
    if not ceph["exists"]:
        return "absent"
    return "protected" if ceph["protected"] else "partial"


def show(value: Any) -> str:
    return "-" if value is None or value == "" else str(value)


def status_text(view: dict) -> str:
    ceph = view["ceph"]
    rows = [("image", "%s (%s)" % (view["id"], show(view["name"]))), ("image API", "")]
    rows += [("  " + key, show(value)) for key, value in view["image"].items()]
    rows += [("Ceph", ceph["cache"]),
             ("  cache", "present" if ceph["exists"] else "absent"),
             ("  snapshot", "protected" if ceph["protected"] else
              "unprotected" if ceph["clones"] is not None else "absent"),
             ("  used bytes", show(ceph["used_bytes"])),
             ("  clones", show(ceph["clones"])),
             ("  shares data of", sharing_text(ceph)),
             ("  shared with", ", ".join(ceph.get("shared_with") or ()) or "-"),
             ("  lock holder", holder_text(ceph["lock_holder"]))]
    rows.append(("problems", "; ".join(view["problems"]) or "none"))
    width = max(len(key) for key, _ in rows)
    return "\n".join(("%-*s  %s" % (width, key, value)).rstrip() for key, value in rows)


LIST_COLUMNS = ("ID", "CACHE_RAW", "STATUS", "SIZE", "STORE", "CEPH", "USED", "CLONES", "LOCK")


def list_row(view: dict) -> Tuple[str, ...]:
    image, ceph = view["image"], view["ceph"]
    return (view["id"], show(image["cache_raw"]), show(image[properties.STATUS]),
            show(image[properties.SIZE]), show(image["store"]), ceph_state(ceph),
            show(ceph["used_bytes"]), show(ceph["clones"]), holder_text(ceph["lock_holder"]))


def table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    lines = [header] + list(rows)
    return "\n".join("  ".join(str(cell).ljust(w) for cell, w in zip(line, widths)).rstrip()
                     for line in lines)


def as_json(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=True)


# -- progress of a conversion

class ProgressView:
    """Shows a conversion's progress: a bar redrawn in place on a terminal, a line every
    LINE_INTERVAL seconds otherwise (logs, pipes)."""

    LINE_INTERVAL = 2.0
    WIDTH = 30

    def __init__(self, stream: Optional[TextIO] = None,
                 clock: Callable[[], float] = time.monotonic):
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty()
        self.clock = clock
        self._first: Optional[Tuple[float, float]] = None  # (percent, time) first seen
        self._last_line: Optional[float] = None
        self._drawn = False
        self._last_rate: Optional[float] = None
        self.shown: Optional[str] = None

    def update(self, progress: Optional[dict]) -> None:
        """``progress``: what the converting worker published ({"percent", "data_bytes",
        "time"}), or None while it has published nothing."""
        if not progress or "percent" not in progress:
            return
        percent = float(progress["percent"])
        now = float(progress.get("time") or time.time())
        if self._first is None or percent < self._first[0]:
            self._first = (percent, now)
        rate = self._rate(percent, now, progress.get("data_bytes"))
        if rate is not None:
            self._last_rate = rate
        self._render(percent, rate)

    def _rate(self, percent: float, now: float, data_bytes: Optional[int]) -> Optional[float]:
        if self._first is None:
            return None
        start_percent, start = self._first
        if not data_bytes or now <= start:
            return None
        return (percent - start_percent) / 100.0 * data_bytes / (now - start)

    def _render(self, percent: float, rate: Optional[float], final: bool = False) -> None:
        text = "%5.1f%%  %s" % (percent, "%.1f MiB/s" % (rate / MIB) if rate is not None
                                else "-- MiB/s")
        if text == self.shown and not final:
            return
        if self.tty:
            filled = int(self.WIDTH * percent / 100)
            self.stream.write("\r[%s%s] %s" % ("#" * filled, "-" * (self.WIDTH - filled), text))
            self._drawn = True
        else:
            now = self.clock()
            if not final and self._last_line is not None and \
                    now - self._last_line < self.LINE_INTERVAL:
                return
            self._last_line = now
            self.stream.write("progress %s\n" % text)
        self.shown = text
        self.stream.flush()

    def finish(self, completed: bool) -> None:
        """The conversion ended; a completed one is shown at 100%."""
        if completed:
            self._render(100.0, self._last_rate, final=True)
        if self.tty and self._drawn:
            self.stream.write("\n")
            self.stream.flush()
