"""Console entry points. Each one parses its configuration, sets up logging, builds and runs."""

import logging as std_logging
import sys
import warnings

# Libraries' deprecation notices are for their developers, not for an operator's journal:
# eventlet's banner (osprofiler drags eventlet in), cryptography's "DSA is deprecated" (from 51,
# met at import by dnspython and pyOpenSSL), oslo.utils' "eventletutils module is deprecated"
# (8.x, with the eventlet of Pythons before 3.11). Every other warning goes to the log (setup
# below).
warnings.filterwarnings("ignore", message=r"(?s)\s*\S+( module)? is deprecated")

from oslo_config import cfg  # noqa: E402 - after the filter above
from oslo_log import log as logging  # noqa: E402 - after the filter above

from cacheraw import __version__  # noqa: E402 - after the filter above
from cacheraw.conf import CONF  # noqa: E402 - after the filter above
from cacheraw.conf import opts  # noqa: E402 - after the filter above


def parse_config(argv, prog, description):
    """Parse the command line and config files; exit 2 with one line when that fails."""
    logging.register_options(CONF)
    try:
        CONF(argv, project="cacheraw", prog=prog, version=__version__, description=description,
             default_config_files=[])
    except cfg.ConfigFilesNotFoundError as exc:
        fail(prog, "cannot read config file %s" % ", ".join(exc.config_files))
    except cfg.ConfigFilesPermissionDeniedError as exc:
        fail(prog, "permission denied reading config file %s" % ", ".join(exc.config_files))
    except cfg.ConfigFileParseError as exc:
        fail(prog, "cannot parse config file %s: %s" % (exc.config_file, exc.msg))
    except (cfg.Error, ValueError) as exc:
        fail(prog, str(exc).splitlines()[0])
    except IsADirectoryError as exc:
        fail(prog, "config file %s is a directory" % exc.filename)
    except OSError as exc:
        fail(prog, "cannot read config file %s: %s" % (exc.filename, exc.strerror))
    check_values(prog, CONF)
    logging.setup(CONF, "cacheraw", version=__version__)
    std_logging.captureWarnings(True)
    # The libraries' debug output would drown ours; oslo.messaging's connection news stays.
    if not CONF.debug:
        for noisy in ("amqp", "kombu", "keystoneauth", "urllib3", "stevedore"):
            std_logging.getLogger(noisy).setLevel(std_logging.WARNING)
    return CONF


def check_values(prog, conf):
    """oslo.config checks a value when it is first read: read each of cacheraw's now, so that a
    bad one stops the start with one line (exit 2) instead of a traceback later."""
    for group, group_opts in opts.list_opts():
        for opt in group_opts:
            try:
                getattr(conf[group.name], opt.dest)
            except cfg.NoSuchOptError:
                continue  # an auth plugin's option, registered once the plugin is loaded
            except ValueError as exc:
                why = str(exc).rsplit(" is not valid: ", 1)[-1]
                fail(prog, "[%s] %s: %s" % (group.name, opt.dest, why.splitlines()[0]))


def fail(prog, message, code=2):
    print("%s: error: %s" % (prog, message), file=sys.stderr)
    sys.exit(code)
