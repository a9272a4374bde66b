"""cacheraw-manage: the operator's commands."""

import sys

from oslo_config import cfg

from cacheraw import cmd

CATEGORY = cfg.SubCommandOpt("command", title="Commands", help="Run 'cacheraw-manage COMMAND --help'.",
                             handler=lambda subparsers: add_commands(subparsers))


def add_commands(subparsers):
    status = subparsers.add_parser("status", help="Show the cache state of one image.")
    status.add_argument("image_id", help="ID (UUID) of the image.")
    status.set_defaults(func=show_status)


def show_status(conf):
    cmd.fail("cacheraw-manage", "not implemented yet", code=1)


def main(argv=None):
    cmd.CONF.register_cli_opt(CATEGORY)
    conf = cmd.parse_config(sys.argv[1:] if argv is None else argv, "cacheraw-manage",
                            "Operate cacheraw: inspect and re-cache images.")
    return conf.command.func(conf)


if __name__ == "__main__":
    sys.exit(main())
