"""make bench: cacheraw's conversion against the original pipeline, measured in the same run.

The original copied each image three times through a local disk: ``rbd export`` of the qcow2,
``qemu-img convert`` to a local RAW file, ``rbd import`` of it (then snapshot and protect).
cacheraw reads the qcow2 in place in Ceph and writes the RAW straight into its RBD image.
Prints medians and the ratio baseline / cacheraw (higher is better for cacheraw).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from oslo_config import cfg

from cacheraw import converter as conv
from cacheraw import store as ceph_store
from cacheraw.conf import register_opts

TOP = Path(__file__).resolve().parents[1]
STATE = Path(os.environ.get("CACHERAW_STACK_DIR", TOP / ".stack"))


def make_source(store, tmp, data_mib):
    """A qcow2 of 2 GiB virtual size holding ``data_mib`` MiB of random data, stored in the pool
    as the image service stores images (``<name>@snap``, protected)."""
    raw, path = Path(tmp) / "bench.raw", Path(tmp) / "bench.qcow2"
    with open(raw, "wb") as f:
        for _ in range(data_mib):
            f.write(os.urandom(1 << 20))
        f.truncate(2 << 30)
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(path)],
                   check=True)
    raw.unlink()
    name = "bench-%s" % uuid.uuid4()
    store.create(name, path.stat().st_size)
    with open(path, "rb") as f, store._image(name) as image:
        offset = 0
        for chunk in iter(lambda: f.read(4 << 20), b""):
            image.write(chunk, offset)
            offset += len(chunk)
    store.publish(name)
    return name, path


def rbd_cli(conf, *args):
    base = ["rbd", "--conf", conf.ceph.conf, "--id", conf.ceph.user, "-p", conf.ceph.pool]
    if conf.ceph.keyring:
        base += ["--keyring", conf.ceph.keyring]
    subprocess.run(base + list(args), check=True, capture_output=True, timeout=600)


def original(conf, store, source, tmp):
    local_qcow2, local_raw = Path(tmp) / "export.qcow2", Path(tmp) / "export.raw"
    target = "bench-orig-%s" % uuid.uuid4().hex[:8]
    began = time.monotonic()
    rbd_cli(conf, "export", "%s@snap" % source, str(local_qcow2))
    subprocess.run(["qemu-img", "convert", "-f", "qcow2", "-O", "raw", str(local_qcow2),
                    str(local_raw)], check=True)
    rbd_cli(conf, "import", str(local_raw), target)
    store.publish(target)
    took = time.monotonic() - began
    local_disk = sum(p.stat().st_blocks * 512 for p in (local_qcow2, local_raw))
    local_qcow2.unlink()
    local_raw.unlink()
    store.remove(target)
    return took, local_disk


def cacheraw(conf, store, source):
    target = "bench-new-%s" % uuid.uuid4().hex[:8]
    converter = conv.Converter(conf, store)
    src = conv.RBDSource(store, source, "snap")
    began = time.monotonic()
    info = converter.info(src, "qcow2")
    store.create(target, info["virtual-size"])
    converter.convert(src, "qcow2", target, conv.Job(target))
    store.publish(target)
    took = time.monotonic() - began
    store.remove(target)
    return took


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-mib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    conf = cfg.ConfigOpts()
    register_opts(conf)
    conf(["--config-file", str(STATE / "cacheraw.conf")])
    store = ceph_store.CephStore(conf)
    store.connect()
    with tempfile.TemporaryDirectory() as tmp:
        source, _ = make_source(store, tmp, args.data_mib)
        try:
            base, local_disk = zip(*[original(conf, store, source, tmp)
                                     for _ in range(args.runs)])
            ours = [cacheraw(conf, store, source) for _ in range(args.runs)]
        finally:
            store.remove(source)
    result = {"data_mib": args.data_mib, "runs": args.runs,
              "original_pipeline_s": round(statistics.median(base), 2),
              "cacheraw_s": round(statistics.median(ours), 2),
              "original_local_disk_mib": max(local_disk) >> 20, "cacheraw_local_disk_mib": 0}
    result["speedup"] = round(result["original_pipeline_s"] / result["cacheraw_s"], 2)
    print("bench: qcow2 (2 GiB virtual, %d MiB data) to a protected RAW snapshot in Ceph"
          % args.data_mib)
    print("bench: original pipeline %.2f s, cacheraw %.2f s: %.2fx faster"
          % (result["original_pipeline_s"], result["cacheraw_s"], result["speedup"]))
    print("bench: local disk used: original pipeline %d MiB, cacheraw 0 MiB"
          % result["original_local_disk_mib"])
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
