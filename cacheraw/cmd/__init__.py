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

from oslo_config import cfg
from oslo_log import log as logging

from cacheraw import __version__
from cacheraw.conf import CONF


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
    logging.setup(CONF, "cacheraw", version=__version__)
    std_logging.captureWarnings(True)
    # The libraries' debug output would drown ours; oslo.messaging's connection news stays.
    if not CONF.debug:
        for noisy in ("amqp", "kombu", "keystoneauth", "urllib3", "stevedore"):
            std_logging.getLogger(noisy).setLevel(std_logging.WARNING)
    return CONF


def fail(prog, message, code=2):
    print("%s: error: %s" % (prog, message), file=sys.stderr)
    sys.exit(code)
