"""What the operator's commands do (cacheraw-manage): each runs the daemon's own core and prints
its answer on stdout. The command line itself is in cacheraw.cmd.manage.
"""

from __future__ import annotations

import argparse
import contextlib
import threading
import time
from typing import Any, Callable, ContextManager, Dict, Iterator, List, Optional

from oslo_config import cfg

from cacheraw import cacher
from cacheraw import check
from cacheraw import conversion
from cacheraw import core
from cacheraw import exception
from cacheraw import properties
from cacheraw import report
from cacheraw import wants
from cacheraw.qemu.job import Job

POLL_INTERVAL = 0.5
Status = properties.Status
# What Cacher.cache() returns when it made a cache: converted, or shared with an image that has
# the same data.
MADE = (conversion.Outcome.CACHED, conversion.Outcome.SHARED)
# What else reconcile counts as no failure: nothing to make, another worker makes it, or the
# image went.
ENDED_WELL = (conversion.Outcome.SKIPPED, conversion.Outcome.BUSY, conversion.Outcome.DELETED)


class Refused(Exception):
    """The command cannot do what it was asked; the message is the operator's one line and
    ``code`` the exit status."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


def checked_id(image_id: str) -> str:
    if not properties.valid_id(image_id):
        raise Refused("not an image id (a lowercase UUID): %r" % image_id, code=2)
    return image_id


# -- recache

def recache(conf: cfg.ConfigOpts, args: argparse.Namespace) -> int:
    """(Re)build an image's cache in the foreground; 0 when the image ends Cached."""
    image_id = checked_id(args.image_id)
    cacher_ = core.build(conf)
    image = cacher_.images.get(image_id)
    if not wants.wants_cache(image):
        raise Refused("image %s does not ask for a cache (status %s, cache_raw %r)"
                      % (image_id, image.get("status"), image.get("cache_raw")))
    cacher_.fix_store_property(image)
    if not args.force and cacher_.cache_valid(image):
        print("%s: already cached as %s; left alone (--force rebuilds it)"
              % (image_id, image[properties.URL]))
        return 0
    view = report.ProgressView() if args.wait else None
    outcome = convert_watching(cacher_, image_id, args.force, view)
    if outcome == conversion.Outcome.BUSY:
        follow_other_worker(cacher_, image_id, view)
    # The image as our own last write left it, when we wrote last; else as it is now.
    image = (cacher_.images.own_write(image_id) if outcome in MADE else None) \
        or cacher_.images.get(image_id)
    print(final_line(image))
    return 0 if image.get(properties.STATUS) in (Status.CACHED, Status.NOT_NEEDED) else 1


def follow_other_worker(cacher_: cacher.Cacher, image_id: str,
                        view: Optional[report.ProgressView]) -> None:
    holder = cacher_.store.lock_holder(image_id)
    print("%s: another worker converts it (%s); waiting for it"
          % (image_id, report.holder_text(holder)), flush=True)
    wait_for_lock(cacher_, image_id, view)
    if cacher_.images.get(image_id).get(properties.STATUS) in (Status.QUEUED, Status.CACHING):
        # Its lock ran out without a result: that worker died. Do it here.
        convert_watching(cacher_, image_id, False, view)


def convert_watching(cacher_: cacher.Cacher, image_id: str, force: bool,
                     view: Optional[report.ProgressView]) -> conversion.Outcome:
    """cacher_.cache() in a thread while the progress it publishes is shown."""
    job = Job(image_id)
    result: Dict[str, Any] = {}

    def convert() -> None:
        try:
            result["outcome"] = cacher_.cache(image_id, job, force=force)
        except BaseException as exc:  # noqa: BLE001 - raised again in the main thread
            result["error"] = exc

    thread = threading.Thread(target=convert, name="recache", daemon=True)
    thread.start()
    try:
        while thread.is_alive():
            if view is not None:
                view.update(_progress(cacher_, image_id))
            thread.join(POLL_INTERVAL)
    except KeyboardInterrupt:
        job.cancel(cacher.SHUTDOWN)  # the image is left Queued, its partial cache removed
        thread.join()
        raise Refused("interrupted; image %s left Queued" % image_id, code=130) from None
    if "error" in result:
        raise result["error"]
    outcome: conversion.Outcome = result["outcome"]
    if view is not None and outcome != conversion.Outcome.BUSY:
        view.finish(outcome in MADE)
    return outcome


def wait_for_lock(cacher_: cacher.Cacher, image_id: str,
                  view: Optional[report.ProgressView]) -> None:
    """Follow another worker's conversion until it releases the lock."""
    try:
        while cacher_.store.is_locked(image_id):
            if view is not None:
                view.update(_progress(cacher_, image_id))
            time.sleep(POLL_INTERVAL)
    except KeyboardInterrupt:
        raise Refused("interrupted; the other worker goes on", code=130) from None
    if view is not None:
        view.finish(cacher_.images.get(image_id).get(properties.STATUS) == Status.CACHED)


def _progress(cacher_: cacher.Cacher, image_id: str) -> Optional[dict]:
    try:
        progress: Optional[dict] = cacher_.store.progress(image_id)
        return progress
    except exception.CacherawError:
        return None  # a missed sample; the next poll tries again


def final_line(image: dict) -> str:
    status = image.get(properties.STATUS) or "no cache status"
    detail: Optional[str]
    if status == Status.CACHED:
        detail = "%s, %s bytes used" % (image.get(properties.URL), image.get(properties.SIZE))
    elif status == Status.ERROR:
        detail = image.get(properties.ERROR)
    elif status == Status.NOT_NEEDED:
        detail = wants.RAW_REASON
    else:
        detail = None
    return "%s: %s%s" % (image["id"], status, ": %s" % detail if detail else "")


# -- status and list

def status(conf: cfg.ConfigOpts, args: argparse.Namespace) -> int:
    image_id = checked_id(args.image_id)
    cacher_ = core.build(conf)
    view = report.image_view(cacher_, cacher_.images.get(image_id))
    print(report.as_json(view) if args.format == "json" else report.status_text(view))
    return 0


def listing(conf: cfg.ConfigOpts, args: argparse.Namespace) -> int:
    cacher_ = core.build(conf)
    views = [report.image_view(cacher_, image) for image in all_images(cacher_.images)
             if report.is_followed(image)
             and (args.status is None or image.get(properties.STATUS) == args.status)]
    if args.format == "json":
        print(report.as_json(views))
    else:
        print(report.table(report.LIST_COLUMNS, [report.list_row(v) for v in views]))
    return 0


def all_images(images: Any) -> Iterator[dict]:
    """Every image, hidden ones too, as the sweep sees them."""
    for hidden in ("false", "true"):
        yield from images.list(os_hidden=hidden)


# -- reconcile and purge-orphans: the daemon's own code, every change printed

class Say:
    """Prints what is done, or in a dry run what would be."""

    def __init__(self, dry_run: bool):
        self.dry_run = dry_run

    def __call__(self, doing: str, done: Optional[str] = None) -> None:
        print(("would %s" % doing) if self.dry_run else (done or doing), flush=True)

    def patch(self, image_id: str, ops: List[dict]) -> bool:
        """ImageAPI.before_patch: say the patch; send it unless dry-run."""
        self("set %s on image %s" % (describe(ops), image_id))
        return not self.dry_run

    def removal(self, store: Any) -> Callable[[str, str], bool]:
        """CephStore.before_remove: say each removal; make it unless dry-run."""
        def before_remove(outcome: str, name: str) -> bool:
            where = "%s/%s" % (store.pool, name)
            if outcome == "kept":
                print("kept trashed cache %s: clones use it" % name, flush=True)
            elif outcome == "trashed":
                clones = store.cache_facts(name)["clones"]
                self("move cache %s to the trash (%d clones use it)" % (where, clones),
                     "moved cache %s to the trash (%d clones use it)" % (where, clones))
            elif outcome == "purged":
                self("purge trashed cache %s (no clones left)" % name,
                     "purged trashed cache %s (no clones left)" % name)
            else:
                self("remove cache %s" % where, "removed cache %s" % where)
            return not self.dry_run
        return before_remove


def describe(ops: List[dict]) -> str:
    """JSON-patch operations as an operator reads them: a=1, b=2, removed c."""
    return ", ".join("removed %s" % op["path"][1:] if op["op"] == "remove"
                     else "%s=%s" % (op["path"][1:], op["value"]) for op in ops)


class DryRunLease:
    """A lease that nothing holds, for --dry-run: no step it fences is made anyway."""

    def __init__(self, image_id: str):
        self.image_id = image_id

    def held(self) -> bool:
        return True

    def check(self) -> None:
        pass


class DryRunLocks:
    """The store for a dry run: its conversion locks are asked about, never taken."""

    def __init__(self, store: Any):
        self._store = store

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def conversion_lock(self, image_id: str,
                        on_lost: Optional[Callable[[], None]] = None
                        ) -> ContextManager[DryRunLease]:
        if self._store.is_locked(image_id):
            raise exception.LockBusy("image %s is being cached by another worker" % image_id)
        return contextlib.nullcontext(DryRunLease(image_id))


def reporting_core(conf: cfg.ConfigOpts, dry_run: bool, queued: List[str]) -> cacher.Cacher:
    """The core with each change it makes printed (and, for a dry run, not made); the images
    it would convert are appended to ``queued``."""
    say = Say(dry_run)

    def enqueue(image_id: str) -> bool:
        if image_id not in queued:
            queued.append(image_id)
            say("convert image %s" % image_id, "image %s: to convert" % image_id)
        return True

    cacher_ = core.build(conf, enqueue=enqueue)
    cacher_.images.before_patch = say.patch
    cacher_.store.before_remove = say.removal(cacher_.store)
    if dry_run:
        cacher_.store = DryRunLocks(cacher_.store)
    return cacher_


def reconcile(conf: cfg.ConfigOpts, args: argparse.Namespace) -> int:
    """The daemon's sweep, then the conversions it queued; 1 when one of them failed."""
    queued: List[str] = []
    cacher_ = reporting_core(conf, args.dry_run, queued)
    counts: Dict[str, int] = {}
    for image in all_images(cacher_.images):
        if wants.wants_cache(image):
            found = image.get(properties.STATUS) or "no status"
            counts[found] = counts.get(found, 0) + 1
    print("found %s" % (", ".join("%d %s" % (n, s) for s, n in sorted(counts.items()))
                        or "no image that asks for a cache"))
    # The operator's command is the confirmation that the sweep's breaker waits for.
    cacher_.sweep(confirmed=True)
    if args.dry_run:
        return 0
    # The conversions tell their outcome in one line each, not every property they write.
    cacher_.images.before_patch = cacher_.store.before_remove = None
    failed = 0
    for image_id in queued:
        outcome = cacher_.cache(image_id)
        print("image %s: %s" % (image_id, outcome), flush=True)
        failed += outcome not in MADE + ENDED_WELL
    return 1 if failed else 0


def purge_orphans(conf: cfg.ConfigOpts, args: argparse.Namespace) -> int:
    cacher_ = reporting_core(conf, args.dry_run, [])
    removed, purged = cacher_.purge_orphans()
    print("%s %d orphaned caches, %d trashed caches" % (
        "would remove" if args.dry_run else "removed", removed, len(purged)))
    return 0


# -- check

def check_all(conf: cfg.ConfigOpts, args: argparse.Namespace) -> int:
    failed = 0
    for name, passed, line in check.run_all(conf):
        print("%-20s %s" % (name + ":", ("OK: " + line) if passed else "FAILED: " + line),
              flush=True)
        failed += not passed
    return 1 if failed else 0
