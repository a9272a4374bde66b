"""cacheraw-manage: the operator's commands (what they do is cacheraw.manage).

    recache IMAGE_ID [--force] [--wait]   (re)build an image's cache now, with the daemon's code
    status IMAGE_ID [--format F]          the image API's view next to Ceph's
    list [--status S] [--format F]        the same for every image that asks for a cache
    reconcile [--dry-run]                 the daemon's sweep, run by hand
    purge-orphans [--dry-run]             remove caches whose image is gone
    check                                 configuration and connectivity, one line per check
"""

import logging as std_logging
import sys

from oslo_config import cfg
from oslo_log import log as logging

from cacheraw import cmd
from cacheraw import exception
from cacheraw import manage
from cacheraw import properties

PROG = "cacheraw-manage"
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
    recache.set_defaults(func=manage.recache)
    status = subparsers.add_parser("status", help="Show the cache state of one image.")
    status.add_argument("image_id", help="ID (UUID) of the image.")
    status.add_argument("--format", choices=FORMATS, default="table")
    status.set_defaults(func=manage.status)
    listing = subparsers.add_parser(
        "list", help="Show the cache state of every image that asks for a cache or has a "
                     "cache status.")
    listing.add_argument("--status", choices=properties.STATUSES,
                         help="Only images with this cache_raw_status.")
    listing.add_argument("--format", choices=FORMATS, default="table")
    listing.set_defaults(func=manage.listing)
    reconcile = subparsers.add_parser(
        "reconcile", help="Run the daemon's sweep now: queue and convert images that lack a "
                          "cache, retry due errors, remove orphaned and purge trashed caches.")
    reconcile.add_argument("--dry-run", action="store_true", help="Only say what it would do.")
    reconcile.set_defaults(func=manage.reconcile)
    purge = subparsers.add_parser(
        "purge-orphans", help="Remove <uuid>_raw caches whose image no longer exists and "
                              "trashed caches whose clones are gone. Nothing else is touched.")
    purge.add_argument("--dry-run", action="store_true", help="Only say what it would do.")
    purge.set_defaults(func=manage.purge_orphans)
    checking = subparsers.add_parser(
        "check", help="Check the configuration, Ceph and its caps, the image API and the right "
                      "to write cache_raw_*, and the message bus.")
    checking.set_defaults(func=manage.check_all)


COMMAND = cfg.SubCommandOpt("command", title="Commands", handler=add_commands,
                            help="Run 'cacheraw-manage COMMAND --help' for its arguments.")


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
        return conf.command.func(conf, conf.command)
    except manage.Refused as exc:
        cmd.fail(PROG, str(exc), code=exc.code)
    except exception.ImageNotFound as exc:
        cmd.fail(PROG, str(exc), code=1)
    except exception.ConfigError as exc:
        cmd.fail(PROG, str(exc))
    except exception.CacherawError as exc:
        cmd.fail(PROG, exception.one_line(exc), code=1)
    except KeyboardInterrupt:
        cmd.fail(PROG, "interrupted", code=130)


if __name__ == "__main__":
    sys.exit(main())
