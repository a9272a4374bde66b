"""cacheraw-manage: the operator's commands.

    cacheraw-manage --config-file F recache IMAGE_ID   convert the image again, now
    cacheraw-manage --config-file F status IMAGE_ID    show its cache properties and Ceph state
"""

import sys

from oslo_config import cfg

from cacheraw import cacher
from cacheraw import cmd
from cacheraw import exception
from cacheraw import store as ceph_store
from cacheraw import worker

PROG = "cacheraw-manage"


def add_commands(subparsers):
    recache = subparsers.add_parser(
        "recache", help="Remove the image's cache (clones keep working) and convert it again, "
                        "in the foreground, with the daemon's own code and lock.")
    recache.add_argument("image_id", help="ID (UUID) of the image.")
    recache.set_defaults(func=do_recache)
    status = subparsers.add_parser("status", help="Show the cache state of one image.")
    status.add_argument("image_id", help="ID (UUID) of the image.")
    status.set_defaults(func=do_status)


COMMAND = cfg.SubCommandOpt("command", title="Commands", handler=add_commands,
                            help="Run 'cacheraw-manage COMMAND --help' for its arguments.")


def checked_id(image_id):
    if not cacher.valid_id(image_id):
        cmd.fail(PROG, "not an image id (a lowercase UUID): %r" % image_id)
    return image_id


def do_recache(conf):
    image_id = checked_id(conf.command.image_id)
    core = worker.run_once(conf)
    image = core.images.get(image_id)
    if not cacher.wants_cache(image):
        cmd.fail(PROG, "image %s does not ask for a cache (status %s, cache_raw %r)"
                 % (image_id, image.get("status"), image.get("cache_raw")), code=1)
    outcome = core.cache(image_id, force=True)
    image = core.images.get(image_id)
    print("%s: %s" % (image_id, outcome))
    print_image(image)
    return 0 if outcome == "cached" else 1


def do_status(conf):
    image_id = checked_id(conf.command.image_id)
    core = worker.run_once(conf)
    image = core.images.get(image_id)
    print_image(image)
    name = ceph_store.cache_name(image_id)
    print("%-18s %s" % ("ceph", "%s/%s@snap %s" % (
        conf.ceph.pool, name,
        "present, protected" if core.store.has_protected_snap(name) else "absent")))
    print("%-18s %s" % ("conversion lock", "held" if core.store.is_locked(image_id) else "free"))
    return 0


def print_image(image):
    for key in ("status", "disk_format", "cache_raw", cacher.STATUS, cacher.URL, cacher.SIZE,
                cacher.ERROR_PROP):
        print("%-18s %s" % (key, image.get(key, "-")))


def main(argv=None):
    cmd.CONF.register_cli_opt(COMMAND)
    conf = cmd.parse_config(sys.argv[1:] if argv is None else argv, PROG,
                            "Operate cacheraw: inspect and re-cache images.")
    try:
        return conf.command.func(conf)
    except exception.ImageNotFound as exc:
        cmd.fail(PROG, str(exc), code=1)
    except exception.ConfigError as exc:
        cmd.fail(PROG, str(exc))
    except exception.CacherawError as exc:
        cmd.fail(PROG, str(exc), code=1)


if __name__ == "__main__":
    sys.exit(main())
