"""(h) Instance root disks from the default image with ``[libvirt] images_type = rbd``: Nova's
own RBD image backend (download, convert, import: the first boot of the image on a host; then
import only, ``_base`` warm) against cacheraw's compute driver (a clone of the cache), in the
same run, on the same cached image. Nova's code runs in the newest Nova's virtual environment
(tools/nova-venv.sh) through bench/nova_roots.py.
"""

import json
import math
import os
import subprocess
import tempfile

from bench import measure, report
from bench.env import BenchError
from tests.functional.conftest import TOP

MAX_CACHERAW_S = 1.0
MIN_SPEEDUP = 10.0
CACHE_KEYS = ("cache_raw", "cache_raw_status", "cache_raw_url", "cache_raw_size")


def nova_python():
    done = subprocess.run([str(TOP / "tools/nova-venv.sh"), "latest"], capture_output=True,
                          text=True, timeout=1200)
    if done.returncode != 0:
        raise BenchError("no Nova venv: %s" % done.stderr[-2000:])
    return os.path.join(done.stdout.strip().splitlines()[-1], "bin", "python")


def nova_record(image):
    """The image as Nova's image API gives it to the compute driver: extra properties apart."""
    return {"id": image["id"], "disk_format": image["disk_format"],
            "container_format": image["container_format"], "size": image["size"],
            "min_disk": image["min_disk"], "min_ram": image["min_ram"], "status": "active",
            "locations": [], "properties": {k: image[k] for k in CACHE_KEYS if k in image}}


def measure_roots(stack, events, path, virtual, runs):
    python = nova_python()
    root_gib = max(1, math.ceil(virtual / 2 ** 30))
    print("bench: (h) root disks through Nova, %d rounds" % runs, flush=True)
    image_id = measure.upload_cached(stack, events, path)
    try:
        facts = {"conf": stack.facts["ceph"]["conf"], "user": "nova",
                 "pool": stack.facts["ceph"]["vm_pool"], "qcow2": str(path),
                 "image": nova_record(stack.demo.get(image_id)), "size": root_gib << 30,
                 "runs": runs}
        with tempfile.NamedTemporaryFile("w", suffix=".json") as f:
            json.dump(facts, f)
            f.flush()
            done = subprocess.run([python, str(TOP / "bench/nova_roots.py"), f.name],
                                  capture_output=True, text=True, timeout=3600, cwd=str(TOP))
        if done.returncode != 0:
            raise BenchError("(h) failed: %s" % done.stderr[-3000:])
        samples = json.loads(done.stdout.strip().splitlines()[-1])
        for line in done.stderr.splitlines():
            if "cacheraw" in line and ("WARNING" in line or "INFO" in line):
                print("bench:   nova: " + line.strip(), flush=True)
    finally:
        measure.delete_image(stack, image_id)
    return results(samples, root_gib, stack.facts["ceph"]["pool"], image_id)


def results(samples, root_gib, pool, image_id):
    clones = [s["parent"] for s in samples["cacheraw"]]
    seconds = {k: report.summary([s["s"] for s in v]) for k, v in samples.items()}
    speedup = report.paired(samples["upstream_first"], samples["cacheraw"])
    return {
        "root_gib": root_gib, "seconds": seconds, "upstream_first/cacheraw": speedup,
        "upstream_warm_base/cacheraw": report.paired(samples["upstream_warm_base"],
                                                     samples["cacheraw"]),
        "targets": {
            "cacheraw disks are clones of the cache":
                clones == [[pool, image_id + "_raw", "snap"]] * len(clones),
            "cacheraw <= %.1f s" % MAX_CACHERAW_S: seconds["cacheraw"]["max"] <= MAX_CACHERAW_S,
            "upstream first/cacheraw >= %d" % MIN_SPEEDUP: speedup["median"] >= MIN_SPEEDUP,
        },
    }


def print_table(result, description):
    print()
    print("(h) instance root disk through Nova's RBD image backend (%d GiB root disk of the "
          "%s), seconds:" % (result["root_gib"], description))
    rows = (("upstream Rbd, first boot on the host (download, convert, import)",
             "upstream_first"),
            ("upstream Rbd, next boot (_base warm: import)", "upstream_warm_base"),
            ("cacheraw's compute driver (clone of the cache)", "cacheraw"))
    for text, key in rows:
        print("  %-66s %s" % (text, report._span(result["seconds"][key])))
    for key in ("upstream_first/cacheraw", "upstream_warm_base/cacheraw"):
        print("  %-66s %s" % (key.replace("_", " "), report._span(result[key])))
    print("  targets: " + ", ".join("%s %s" % (k, "ok" if v else "MISSED")
                                    for k, v in result["targets"].items()))
