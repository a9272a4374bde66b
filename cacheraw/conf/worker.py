from oslo_config import cfg

GROUP = cfg.OptGroup("worker", title="The caching daemon")

OPTS = [
    cfg.IntOpt("max_concurrent_conversions", default=2, min=1,
               help="Conversions run at once by one worker."),
    cfg.IntOpt("sweep_interval", default=300, min=0,
               help="Seconds between two sweeps of the image list, which catch up images whose "
                    "notification was missed, retry transient errors and purge removed caches. "
                    "0 sweeps only at start-up."),
    cfg.IntOpt("shutdown_timeout", default=60, min=0,
               help="Seconds the first SIGTERM lets running conversions finish before they are "
                    "aborted and their images left Queued for the next start."),
    cfg.IntOpt("retry_attempts", default=5, min=1,
               help="Attempts of one call to Ceph or the image API on a transient fault."),
    cfg.FloatOpt("retry_initial_delay", default=1.0, min=0,
                 help="Seconds before the first retry of a call; doubled at each retry."),
    cfg.FloatOpt("retry_max_delay", default=30.0, min=0,
                 help="Longest wait between two retries of a call, in seconds."),
    cfg.IntOpt("error_retries", default=5, min=0,
               help="How often the sweep retries an image whose caching failed for a transient "
                    "cause. Permanent errors are not retried until the image changes or an "
                    "operator asks."),
    cfg.IntOpt("error_retry_delay", default=60, min=0,
               help="Seconds before the sweep first retries a transiently failed image; doubled "
                    "at each further attempt, up to error_retry_max_delay."),
    cfg.IntOpt("error_retry_max_delay", default=3600, min=0,
               help="Longest wait before the sweep retries a transiently failed image, in "
                    "seconds."),
    cfg.FloatOpt("orphan_breaker_ratio", default=0.5, min=0, max=1,
                 help="The sweep removes no orphaned cache when more than this fraction of the "
                      "pool's caches (and at least orphan_breaker_min of them) belong to images "
                      "the image API says are gone at once, as when the service user loses its "
                      "role: it logs an error and sets cacheraw_orphan_breaker_open until "
                      "'cacheraw-manage reconcile' removes them or the images are seen again."),
    cfg.IntOpt("orphan_breaker_min", default=5, min=1,
               help="The fewest orphaned caches found at once that can hold the sweep back "
                    "(see orphan_breaker_ratio)."),
]


def register_opts(conf):
    conf.register_group(GROUP)
    conf.register_opts(OPTS, group=GROUP)


def list_opts():
    return [(GROUP, OPTS)]
