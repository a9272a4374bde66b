"""cacheraw-worker: the daemon that caches RAW copies of images in Ceph."""

import sys

from cacheraw import cmd
from cacheraw import exception
from cacheraw import worker


def main(argv=None):
    conf = cmd.parse_config(sys.argv[1:] if argv is None else argv, "cacheraw-worker",
                            "Listen to the image service's notifications and cache RAW copies "
                            "of the images that ask for it in Ceph.")
    try:
        service = worker.Worker(conf)
        service.start()
    except exception.ConfigError as exc:
        cmd.fail("cacheraw-worker", str(exc))
    except exception.CacherawError as exc:
        cmd.fail("cacheraw-worker", str(exc), code=1)
    return service.wait()


if __name__ == "__main__":
    sys.exit(main())
