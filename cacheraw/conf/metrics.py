from oslo_config import cfg

GROUP = cfg.OptGroup("metrics", title="Prometheus metrics of the worker",
                     help="An HTTP endpoint (/metrics) in the Prometheus text format: "
                          "conversions by result, their duration, bytes read and written, queue "
                          "depth, conversions running, time of the last sweep, errors by cause, "
                          "and the process's own CPU and memory.")

OPTS = [
    cfg.BoolOpt("enabled", default=False,
                help="Serve the metrics. Off by default: the endpoint has no authentication."),
    cfg.HostAddressOpt("host", default="127.0.0.1",
                       help="Address the metrics endpoint listens on. Keep it on a loopback or "
                            "management address."),
    cfg.PortOpt("port", default=9469, help="TCP port of the metrics endpoint."),
]


def register_opts(conf):
    conf.register_group(GROUP)
    conf.register_opts(OPTS, group=GROUP)


def list_opts():
    return [(GROUP, OPTS)]
