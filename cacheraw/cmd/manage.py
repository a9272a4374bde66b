"""cacheraw-manage: the operator's commands.

    recache IMAGE_ID [--force] [--wait]   (re)build an image's cache now, with the daemon's code
    status IMAGE_ID [--format F]          the image API's view next to Ceph's
    list [--status S] [--format F]        the same for every image that asks for a cache
    reconcile [--dry-run]                 the daemon's sweep, run by hand
    purge-orphans [--dry-run]             remove caches whose image is gone
    check                                 configuration and connectivity, one line per check
"""

import contextlib
import logging as std_logging
import sys
import threading
import time

from oslo_config import cfg
from oslo_log import log as logging

from cacheraw import cacher
from cacheraw import check
from cacheraw import cmd
from cacheraw import converter as conv
from cacheraw import exception
from cacheraw import image_api
from cacheraw import report
from cacheraw import worker

PROG = "cacheraw-manage"
POLL_INTERVAL = 0.5
FORMATS = ("table", "json")


def add_commands(subparsers):
    recache = subparsers.add_parser(
        "recache", help="Cache the image now, in the foreground, with the daemon's own code and "
                        "lock. A valid cache is left alone unless --force. Exits 0 when the "
                        "image ends Cached.")
    recache.add_argument("image_id", help="ID (UUID) of the image.")
    recache.add_argument("--force", action="store_true",
                         help="Rebuild even a valid cache (clones of the old one keep working).")
    recache.add_argument("--wait", action="store_true",
                         help="Show the conversion's progress (also a running daemon's).")
    recache.set_defaults(func=do_recache)
    status = subparsers.add_parser("status", help="Show the cache state of one image.")
    status.add_argument("image_id", help="ID (UUID) of the image.")
    status.add_argument("--format", choices=FORMATS, default="table")
    status.set_defaults(func=do_status)
    listing = subparsers.add_parser(
        "list", help="Show the cache state of every image that asks for a cache or has a "
                     "cache status.")
    listing.add_argument("--status", choices=report.STATUSES,
                         help="Only images with this cache_raw_status.")
    listing.add_argument("--format", choices=FORMATS, default="table")
    listing.set_defaults(func=do_list)
    reconcile = subparsers.add_parser(
        "reconcile", help="Run the daemon's sweep now: queue and convert images that lack a "
                          "cache, retry due errors, remove orphaned and purge trashed caches.")
    reconcile.add_argument("--dry-run", action="store_true", help="Only say what it would do.")
    reconcile.set_defaults(func=do_reconcile)
    purge = subparsers.add_parser(
        "purge-orphans", help="Remove <uuid>_raw caches whose image no longer exists and "
                              "trashed caches whose clones are gone. Nothing else is touched.")
    purge.add_argument("--dry-run", action="store_true", help="Only say what it would do.")
    purge.set_defaults(func=do_purge_orphans)
    checking = subparsers.add_parser(
        "check", help="Check the configuration, Ceph and its caps, the image API and the right "
                      "to write cache_raw_*, and the message bus.")
    checking.set_defaults(func=do_check)


COMMAND = cfg.SubCommandOpt("command", title="Commands", handler=add_commands,
                            help="Run 'cacheraw-manage COMMAND --help' for its arguments.")


def checked_id(image_id):
    if not cacher.valid_id(image_id):
        cmd.fail(PROG, "not an image id (a lowercase UUID): %r" % image_id)
    return image_id


# -- recache

def do_recache(conf):
    image_id = checked_id(conf.command.image_id)
    core = worker.run_once(conf)
    image = core.images.get(image_id)
    if not cacher.wants_cache(image):
        cmd.fail(PROG, "image %s does not ask for a cache (status %s, cache_raw %r)"
                 % (image_id, image.get("status"), image.get("cache_raw")), code=1)
    core.fix_store_property(image)
    if not conf.command.force and core.cache_valid(image):
        print("%s: already cached as %s; left alone (--force rebuilds it)"
              % (image_id, image[cacher.URL]))
        return 0
    view = report.ProgressView() if conf.command.wait else None
    outcome = convert_watching(core, image_id, conf.command.force, view)
    if outcome == "busy":
        holder = core.store.lock_holder(image_id)
        print("%s: another worker converts it (%s); waiting for it"
              % (image_id, report.holder_text(holder)), flush=True)
        wait_for_lock(core, image_id, view)
        if core.images.get(image_id).get(cacher.STATUS) in (cacher.QUEUED, cacher.CACHING):
            # Its lock ran out without a result: that worker died. Do it here.
            convert_watching(core, image_id, False, view)
    # The image as our own last write left it, when we wrote last; else as it is now.
    image = (core.images.own_write(image_id) if outcome == "cached" else None) \
        or core.images.get(image_id)
    print(final_line(image))
    return 0 if image.get(cacher.STATUS) == cacher.CACHED else 1


def convert_watching(core, image_id, force, view):
    """core.cache() in a thread while the progress it publishes is shown."""
    job = conv.Job(image_id)
    result = {}

    def convert():
        try:
            result["outcome"] = core.cache(image_id, job, force=force)
        except BaseException as exc:  # noqa: BLE001 - raised again in the main thread
            result["error"] = exc

    thread = threading.Thread(target=convert, name="recache", daemon=True)
    thread.start()
    try:
        while thread.is_alive():
            if view is not None:
                view.update(_progress(core, image_id))
            thread.join(POLL_INTERVAL)
    except KeyboardInterrupt:
        job.cancel(cacher.SHUTDOWN)  # the image is left Queued, its partial cache removed
        thread.join()
        cmd.fail(PROG, "interrupted; image %s left Queued" % image_id, code=130)
    if "error" in result:
        raise result["error"]
    if view is not None and result["outcome"] != "busy":
        view.finish(result["outcome"] == "cached")
    return result["outcome"]


def wait_for_lock(core, image_id, view):
    """Follow another worker's conversion until it releases the lock."""
    try:
        while core.store.is_locked(image_id):
            if view is not None:
                view.update(_progress(core, image_id))
            time.sleep(POLL_INTERVAL)
    except KeyboardInterrupt:
        cmd.fail(PROG, "interrupted; the other worker goes on", code=130)
    if view is not None:
        view.finish(core.images.get(image_id).get(cacher.STATUS) == cacher.CACHED)


def _progress(core, image_id):
    try:
        return core.store.progress(image_id)
    except exception.CacherawError:
        return None  # a missed sample; the next poll tries again


def final_line(image):
    status = image.get(cacher.STATUS) or "no cache status"
    if status == cacher.CACHED:
        detail = "%s, %s bytes used" % (image.get(cacher.URL), image.get(cacher.SIZE))
    elif status == cacher.ERROR:
        detail = image.get(cacher.ERROR_PROP)
    else:
        detail = None
    return "%s: %s%s" % (image["id"], status, ": %s" % detail if detail else "")


# -- status and list

def do_status(conf):
    image_id = checked_id(conf.command.image_id)
    core = worker.run_once(conf)
    view = report.image_view(core, core.images.get(image_id))
    print(report.as_json(view) if conf.command.format == "json" else report.status_text(view))
    return 0


def do_list(conf):
    core = worker.run_once(conf)
    views = [report.image_view(core, image) for image in all_images(core.images)
             if report.is_followed(image)
             and (conf.command.status is None
                  or image.get(cacher.STATUS) == conf.command.status)]
    if conf.command.format == "json":
        print(report.as_json(views))
    else:
        print(report.table(report.LIST_COLUMNS, [report.list_row(v) for v in views]))
    return 0


def all_images(images):
    """Every image, hidden ones too, as the sweep sees them."""
    for hidden in ("false", "true"):
        yield from images.list(os_hidden=hidden)


# -- reconcile and purge-orphans: the daemon's own code, every change printed

class Say:
    def __init__(self, dry_run):
        self.dry_run = dry_run

    def __call__(self, doing, done=None):
        print(("would %s" % doing) if self.dry_run else (done or doing), flush=True)


class ReportingImages:
    """The image API for the core, printing each change, and making it unless dry-run."""

    def __init__(self, images, say):
        self._images = images
        self._say = say

    def __getattr__(self, name):
        return getattr(self._images, name)

    def update(self, image_id, wanted, only_if=None, only_if_absent=None):
        image = self._images.get(image_id)
        if (only_if is not None and not only_if(image)) or \
                (only_if_absent is not None and only_if_absent in image):
            return image
        ops = image_api.patch_ops(image, wanted)
        if not ops:
            return image
        self._say("set %s on image %s" % (describe(ops), image_id))
        if self._say.dry_run:
            image = dict(image, **wanted)
            return {k: v for k, v in image.items() if v is not None}
        return self._images.update(image_id, wanted, only_if, only_if_absent)


def describe(ops):
    """JSON-patch operations as an operator reads them: a=1, b=2, removed c."""
    return ", ".join("removed %s" % op["path"][1:] if op["op"] == "remove"
                     else "%s=%s" % (op["path"][1:], op["value"]) for op in ops)


class DryRunLease:
    """A lease that nothing holds, for --dry-run: no step it fences is made anyway."""

    def __init__(self, image_id):
        self.image_id = image_id

    def held(self):
        return True

    def check(self):
        pass


class ReportingStore:
    """The Ceph store for the core, printing each removal, and making it unless dry-run."""

    def __init__(self, store, say):
        self._store = store
        self._say = say

    def __getattr__(self, name):
        return getattr(self._store, name)

    def conversion_lock(self, image_id, on_lost=None):
        if not self._say.dry_run:
            return self._store.conversion_lock(image_id, on_lost)
        if self._store.is_locked(image_id):
            raise exception.LockBusy("image %s is being cached by another worker" % image_id)
        return contextlib.nullcontext(DryRunLease(image_id))

    def remove(self, name):
        facts = self._store.cache_facts(name)
        if not facts["exists"]:
            return "absent"
        where = "%s/%s" % (self._store.pool, name)
        if facts["clones"]:
            self._say("move cache %s to the trash (%d clones use it)" % (where, facts["clones"]),
                      "moved cache %s to the trash (%d clones use it)" % (where, facts["clones"]))
            return self._store.remove(name) if not self._say.dry_run else "trashed"
        self._say("remove cache %s" % where, "removed cache %s" % where)
        return self._store.remove(name) if not self._say.dry_run else "removed"

    def remove_partial(self, name):
        if self._store.has_protected_snap(name):
            return "finished"
        return self.remove(name)

    def purge_trash(self):
        trashed = self._store.trashed_caches()
        for entry in trashed:
            if entry["clones"]:
                print("kept trashed cache %s (id %s): %d clones use it"
                      % (entry["name"], entry["id"], entry["clones"]))
        if not self._say.dry_run:
            purged = self._store.purge_trash()
        else:
            purged = [entry["name"] for entry in trashed if not entry["clones"]]
        for name in purged:
            self._say("purge trashed cache %s (no clones left)" % name,
                      "purged trashed cache %s (no clones left)" % name)
        return purged


def reporting_core(conf, dry_run, queued):
    core = worker.run_once(conf)
    say = Say(dry_run)

    def enqueue(image_id):
        if image_id not in queued:
            queued.append(image_id)
            say("convert image %s" % image_id, "image %s: to convert" % image_id)
        return True

    return core, cacher.Cacher(conf, ReportingImages(core.images, say),
                               ReportingStore(core.store, say), core.converter, enqueue=enqueue)


def do_reconcile(conf):
    queued = []
    core, reporting = reporting_core(conf, conf.command.dry_run, queued)
    counts = {}
    for image in all_images(core.images):
        if cacher.wants_cache(image):
            status = image.get(cacher.STATUS) or "no status"
            counts[status] = counts.get(status, 0) + 1
    print("found %s" % (", ".join("%d %s" % (n, s) for s, n in sorted(counts.items()))
                        or "no image that asks for a cache"))
    reporting.sweep()
    failed = 0
    if not conf.command.dry_run:
        for image_id in queued:
            outcome = core.cache(image_id)
            print("image %s: %s" % (image_id, outcome), flush=True)
            failed += outcome not in ("cached", "skipped", "busy", "deleted")
    return 1 if failed else 0


def do_purge_orphans(conf):
    _, reporting = reporting_core(conf, conf.command.dry_run, [])
    removed, purged = reporting.purge_orphans()
    print("%s %d orphaned caches, %d trashed caches" % (
        "would remove" if conf.command.dry_run else "removed", removed, len(purged)))
    return 0


# -- check

def do_check(conf):
    failed = 0
    for name, passed, line in check.run_all(conf):
        print("%-20s %s" % (name + ":", ("OK: " + line) if passed else "FAILED: " + line),
              flush=True)
        failed += not passed
    return 1 if failed else 0


def main(argv=None):
    cmd.CONF.register_cli_opt(COMMAND)
    # stdout is the command's answer (JSON for scripts); the daemon's log lines go to stderr,
    # and only warnings unless --debug or a --log-file asks for the whole story.
    logging.register_options(cmd.CONF)
    cmd.CONF.set_default("use_stderr", True)
    conf = cmd.parse_config(sys.argv[1:] if argv is None else argv, PROG,
                            "Operate cacheraw: inspect, check and re-cache images.")
    if not (conf.debug or conf.log_file):
        std_logging.getLogger("cacheraw").setLevel(std_logging.WARNING)
    try:
        return conf.command.func(conf)
    except exception.ImageNotFound as exc:
        cmd.fail(PROG, str(exc), code=1)
    except exception.ConfigError as exc:
        cmd.fail(PROG, str(exc))
    except exception.CacherawError as exc:
        cmd.fail(PROG, cacher.one_line(exc), code=1)
    except KeyboardInterrupt:
        cmd.fail(PROG, "interrupted", code=130)


if __name__ == "__main__":
    sys.exit(main())
