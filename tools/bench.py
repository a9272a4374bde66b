"""make bench: cacheraw against the original pipeline and against the physical limits, measured
in the same run on the same cluster, each several times.

The original pipeline copied each image three times through a local disk: ``rbd export`` of the
qcow2, ``qemu-img convert`` to a local RAW file, ``rbd import`` (then snapshot and protect).
cacheraw reads the qcow2 in place in Ceph and writes the RAW straight into its RBD image.

Needs the local stack (tools/run-tests.sh --bench starts one with enough store). Prints a table
and writes the results as JSON under bench/results/.
"""

import argparse
import logging
import os
import sys
import tempfile
import warnings
from pathlib import Path

# oslo.messaging may drag in eventlet and its deprecation banner.
warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")

TOP = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TOP))

from cacheraw import properties  # noqa: E402
from cacheraw.exception import CacherawError  # noqa: E402

from bench import identical, images, measure, report, roots, volumes  # noqa: E402
from bench.env import BenchError, Events, Stack, Worker  # noqa: E402
from bench.images import GIB, MIB, Shape  # noqa: E402

# Memstore keeps data in the OSD's memory: measured, its RSS grew to about three times the
# most data the pool held at once.
OSD_MEMORY_FACTOR = 3
# A memstore OSD refuses writes once 95% full: keep well clear of it.
HEADROOM = 1.4
SMALL_VIRTUAL = 112 * MIB  # a cirros-sized image, for latency


def env_default(name, default, kind=int):
    return kind(os.environ.get("CACHERAW_BENCH_" + name, default))


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--virtual-gib", type=float, default=env_default("VIRTUAL_GIB", 4, float),
                   help="virtual size of the default image (env CACHERAW_BENCH_VIRTUAL_GIB)")
    p.add_argument("--data-mib", type=int, default=env_default("DATA_MIB", 1536),
                   help="random data in it (env CACHERAW_BENCH_DATA_MIB)")
    p.add_argument("--zeros-mib", type=int, default=env_default("ZEROS_MIB", 300),
                   help="allocated clusters holding zeros (env CACHERAW_BENCH_ZEROS_MIB)")
    p.add_argument("--small-data-mib", type=int, default=env_default("SMALL_DATA_MIB", 15),
                   help="random data in the small image (env CACHERAW_BENCH_SMALL_DATA_MIB)")
    p.add_argument("--runs", type=int, default=env_default("RUNS", 3),
                   help="repetitions of each measurement (env CACHERAW_BENCH_RUNS)")
    p.add_argument("--concurrency-scale", type=int, default=env_default("CONCURRENCY_SCALE", 4),
                   help="the images of the N-at-once measurement are the default one divided "
                        "by this (env CACHERAW_BENCH_CONCURRENCY_SCALE)")
    p.add_argument("--slots", default="1,2,4", help="conversion slots to try for N at once")
    p.add_argument("--counts", default="1,2,4", help="numbers of images uploaded at once")
    p.add_argument("--sizes", default=env_default("SIZES", "small,default", str),
                   help="image sizes to measure (a) to (d) and (f) on; empty for none "
                        "(env CACHERAW_BENCH_SIZES)")
    p.add_argument("--skip-concurrency", action="store_true",
                   default=not env_default("CONCURRENCY", 1),
                   help="skip N at once (env CACHERAW_BENCH_CONCURRENCY=0)")
    p.add_argument("--skip-volumes", action="store_true",
                   help="skip (g), volume create through Cinder")
    p.add_argument("--skip-roots", action="store_true",
                   help="skip (h), instance root disks through Nova's RBD image backend")
    p.add_argument("--skip-identical", action="store_true",
                   help="skip (i), the second upload of the default image")
    p.add_argument("--results", default=str(TOP / "bench" / "results"),
                   help="folder of the JSON results")
    args = p.parse_args(argv)
    args.slots = [int(x) for x in args.slots.split(",")]
    args.counts = [int(x) for x in args.counts.split(",")]
    args.sizes = [x for x in args.sizes.split(",") if x]
    return args


def shapes(args):
    default = Shape("default", int(args.virtual_gib * GIB), args.data_mib * MIB,
                    args.zeros_mib * MIB)
    small = Shape("small", SMALL_VIRTUAL, args.small_data_mib * MIB, MIB)
    scale = args.concurrency_scale
    medium = Shape("concurrent", default.virtual // scale // MIB * MIB,
                   default.data // scale // MIB * MIB, default.zeros // scale // MIB * MIB)
    return default, small, medium


def stored(shape):
    """Bytes an uploaded image and its cache hold in the pool."""
    return 2 * shape.data + shape.zeros


def check_room(stack, args, default, medium):
    """The pool must hold the largest moment of the run: one image and one RAW copy of it.
    Returns that size in bytes."""
    # (g) adds a volume of the default image's data beside the image and its cache, (i) a
    # second upload of the image.
    both_skipped = args.skip_volumes and args.skip_identical
    need = max(stored(default) + (0 if both_skipped else default.data + default.zeros),
               0 if args.skip_concurrency else max(args.counts) * stored(medium))
    free = stack.pool_free()
    if free < need * HEADROOM:
        raise BenchError(
            "the pool has %s free, the benchmark needs %s: stop this stack (make stack-down) "
            "and run 'make bench', which starts one with enough store, or set "
            "CACHERAW_STACK_MEMSTORE_MIB=%d before stack-up"
            % (images.human(free), images.human(need), need * HEADROOM * 1.2 // MIB))
    if stack.facts["ceph"].get("objectstore") != "memstore":
        return need
    with open("/proc/meminfo") as f:
        available = next(int(line.split()[1]) * 1024 for line in f
                         if line.startswith("MemAvailable:"))
    in_memory = stack.facts["ceph"].get("objectstore") == "memstore"
    if in_memory and available < need * OSD_MEMORY_FACTOR:
        raise BenchError("%s of memory available, the benchmark needs about %s (the OSD keeps "
                         "the data in memory)" % (images.human(available),
                                                  images.human(need * OSD_MEMORY_FACTOR)))
    return need


def build(shape, tmp):
    path = os.path.join(tmp, shape.name + ".qcow2")
    print("bench: building %s" % shape.describe(), flush=True)
    extents = images.build(shape, path, tmp)
    return path, extents


def describe(shape, extents, object_size):
    objects = set()
    for offset, length, kind in extents:
        if kind == "data":
            objects.update(range(offset // object_size, (offset + length - 1) // object_size + 1))
    return {"description": shape.describe(), "virtual": shape.virtual, "data": shape.data,
            "zeros": shape.zeros, "extents": len(extents), "data_objects": len(objects)}


def one_round(stack, events, worker, path, shape, tmp, recache_args, samples, first):
    """Every measurement once, on one freshly uploaded image, then the image is deleted. The
    pool's STORED bytes settle slowly: the cache's share of them is read in the first round."""
    stack.check_not_full()
    image, samples_c = measure.end_to_end(stack, events, worker, path)
    image_id = image["id"]
    try:
        samples["cacheraw"].append(samples_c)
        samples["clone"].append(measure.clone(stack, image_id))
        samples["recache"].append(measure.recache(stack, image_id, recache_args))
        samples["status"].append(measure.status(stack, image_id))
        # The pool holds the image and one copy at a time.
        if first:
            samples["stored"].append(measure.stored(stack, image_id))
        stack.store.remove(properties.cache_name(image_id))
        samples["original"].append(measure.original(stack, image_id, tmp))
        samples["read_floor"].append(measure.read_floor(stack, image_id))
        samples["direct"].append(measure.direct(stack, image_id, shape.virtual))
    finally:
        measure.delete_image(stack, image_id)
    return image_id


def measure_size(stack, events, worker, shape, path, extents, args, tmp, recache_args):
    samples = {k: [] for k in ("cacheraw", "clone", "recache", "status", "original",
                               "read_floor", "direct", "stored")}
    for run in range(args.runs):
        print("bench: %s image, round %d of %d" % (shape.name, run + 1, args.runs), flush=True)
        one_round(stack, events, worker, path, shape, tmp, recache_args, samples,
                  first=run == 0)
        print("bench:   " + ", ".join("%s %.2f s" % (k, v[-1]["s"]) for k, v in samples.items()
                                      if "s" in v[-1])
              + "; image API calls %d" % samples["cacheraw"][-1]["calls"]["image_api"],
              flush=True)
    object_size = samples["cacheraw"][0]["object_size"]
    return report.size_results(describe(shape, extents, object_size), samples, object_size,
                               speedup_target=shape.name == "default")


def measure_concurrency(stack, events, shape, path, args, tmp):
    times, ids = {}, []
    try:
        worker = Worker(stack, tmp, max(args.slots))
        try:
            for _ in range(max(args.counts)):
                ids.append(measure.upload_cached(stack, events, path))
        finally:
            worker.stop()
        for slots in args.slots:
            times[slots] = measure_slots(stack, events, ids, slots, args, tmp)
    finally:
        cleaner = Worker(stack, tmp, 1)  # removes the caches of the deleted images
        try:
            for image_id in ids:
                measure.delete_image(stack, image_id)
        finally:
            cleaner.stop()
    result = report.concurrency_results(times)
    result["image"] = {"description": shape.describe()}
    return result


def measure_slots(stack, events, ids, slots, args, tmp):
    """{N: [seconds, ...]} with a worker of ``slots`` conversion slots."""
    worker = Worker(stack, tmp, slots)
    try:
        # A new worker's first conversion pays for imports and cold caches: not timed.
        measure.together(stack, events, worker, ids[:1])
        times = {n: [] for n in args.counts}
        for run in range(args.runs):
            for n in args.counts:
                stack.check_not_full()
                took = measure.together(stack, events, worker, ids[:n])["s"]
                times[n].append(took)
                print("bench: %d slot(s), %d image(s) at once: %.2f s" % (slots, n, took),
                      flush=True)
        return times
    finally:
        worker.stop()


def run(args):
    stack = Stack()
    default, small, medium = shapes(args)
    need = check_room(stack, args, default, medium)
    recache_args = measure.recache_args()
    results = {"runs": args.runs, "machine": report.machine(), "sizes": {},
               "osd": stack.facts["ceph"].get("objectstore"),
               "settings": {"coroutines": stack.conf.converter.coroutines,
                            "max_concurrent_conversions":
                                stack.conf.worker.max_concurrent_conversions,
                            "qemu_img_convert": "-n --target-is-zero -W -m %d"
                                                % stack.conf.converter.coroutines},
               "recache_args": " ".join(recache_args) or "(plain)"}
    with tempfile.TemporaryDirectory(prefix="cacheraw-bench-") as tmp:
        chosen = [s for s in (small, default) if s.name in args.sizes]
        built = {s.name: build(s, tmp) for s in chosen}
        print("bench: warming the OSD up with %s" % images.human(need), flush=True)
        stack.warm_up(need)
        with Events(stack.facts["rabbitmq"]["transport_url"]) as events:
            # N at once first: on a memstore OSD, many large images written and removed once
            # drove its usage count below zero (the pool then reads as full).
            if not args.skip_concurrency:
                path, _ = build(medium, tmp)
                results["concurrency"] = measure_concurrency(stack, events, medium, path,
                                                             args, tmp)
                os.unlink(path)
            worker = Worker(stack, tmp, stack.conf.worker.max_concurrent_conversions)
            try:
                for shape in chosen:
                    path, extents = built[shape.name]
                    results["sizes"][shape.name] = measure_size(
                        stack, events, worker, shape, path, extents, args, tmp, recache_args)
                    if shape.name != "default" or (args.skip_volumes and args.skip_roots
                                                     and args.skip_identical):
                        os.unlink(path)
                # (g) after the sizes: the pool then holds one image, its cache and a volume.
                if not args.skip_volumes:
                    path, _ = built.get("default") or build(default, tmp)
                    built["default"] = (path, None)
                    results["volumes"] = volumes.measure_volumes(stack, events, path,
                                                                 default.virtual, args.runs)
                    results["volumes"]["image"] = {"description": default.describe()}
                # (h) the same image's root disks through Nova: upstream's path and the clone.
                if not args.skip_roots:
                    path, _ = built.get("default") or build(default, tmp)
                    results["roots"] = roots.measure_roots(stack, events, path,
                                                           default.virtual, args.runs)
                    results["roots"]["image"] = {"description": default.describe()}
            finally:
                worker.stop()
            # (i) with a worker of its own, alone (another worker, which converts every image,
            # would take its images too): two uploads of the image and one cache in the pool.
            if not args.skip_identical:
                path, _ = built.get("default") or build(default, tmp)
                results["identical"] = identical.measure_identical(stack, events, path,
                                                                   args.runs, tmp)
                results["identical"]["image"] = {"description": default.describe()}
    report.print_table(results)
    if "identical" in results:
        identical.print_table(results["identical"], "default image: "
                              + results["identical"]["image"]["description"])
    if "volumes" in results:
        volumes.print_table(results["volumes"], "default image: "
                            + results["volumes"]["image"]["description"])
    if "roots" in results:
        roots.print_table(results["roots"], "default image: "
                          + results["roots"]["image"]["description"])
    print("\nbench: results in %s" % report.write_json(results, args.results))
    return 0


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    # Retries of the store's calls (a cache still open by the worker) are expected here.
    logging.basicConfig(level=logging.ERROR)
    try:
        return run(args)
    except BenchError as exc:
        print("bench: error: %s" % exc, file=sys.stderr)
        return 1
    except CacherawError as exc:
        print("bench: error: %s (is the stack running? 'make bench' starts one)" % exc,
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
