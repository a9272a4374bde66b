"""Medians, spreads, ratios and targets; the table printed and the JSON kept."""

import datetime
import json
import os
import platform
import statistics
import subprocess
from importlib import metadata

from bench.images import MIB, human

# The targets, checked on every run.
E2E_FACTOR = 1.2            # default image: cacheraw end to end against bare qemu-img
MAX_OWN_STEPS_S = 0.25      # small image: what cacheraw adds to bare qemu-img
RECACHE_SLACK_S = 1.0       # recache --force --wait against the worker's end to end
MAX_STATUS_S = 1.0
MIN_SPEEDUP = 3.0
MAX_WORKER_RSS = 150 * MIB
MAX_STORED_FACTOR = 1.05    # what the cache adds to the pool's STORED, against non-zero data
MAX_CLONE_S = 1.0


def summary(values):
    values = sorted(values)
    return {"median": statistics.median(values), "min": values[0], "max": values[-1],
            "runs": values}


def med(samples, key="s"):
    return statistics.median(s[key] for s in samples)


def peak(samples, key):
    return max(s[key] for s in samples)


def paired(top, bottom, key="s"):
    """Ratios of the measurements taken in the same round: their median and range."""
    return summary([t[key] / b[key] for t, b in zip(top, bottom)])


def size_results(shape, samples, object_size, speedup_target):
    """What one image size showed, with ratios and targets."""
    s = samples
    timed = {k: v for k, v in s.items() if v and "s" in v[0]}
    ratio_cb = paired(s["cacheraw"], s["direct"])
    ratio_ac = paired(s["original"], s["cacheraw"])
    ratio_clone = paired(s["direct"], s["clone"])
    own_steps = summary([c["s"] - d["s"] for c, d in zip(s["cacheraw"], s["direct"])])
    minimum_du = shape["data_objects"] * object_size
    du = peak(s["cacheraw"], "du")
    # None when the statistics never showed the cache (they lag behind the writes).
    stored = s["stored"][0]["stored"] if s.get("stored") else None
    stored = stored if stored and stored > 0 else None
    targets = {
        # Data in Ceph is served to qemu-img from the pool (see docs/design.md, Conversion).
        "no local disk": peak(s["cacheraw"], "local_disk") == 0,
        "worker RSS <= 150 MiB": peak(s["cacheraw"], "worker_rss") <= MAX_WORKER_RSS,
        "clone <= 1 s": max(x["s"] for x in s["clone"]) <= MAX_CLONE_S,
        "recache <= e2e + 1 s": med(s["recache"]) <= med(s["cacheraw"]) + RECACHE_SLACK_S,
        "status < 1 s": med(s["status"]) < MAX_STATUS_S,
    }
    if stored is not None:
        targets["STORED <= 1.05 x non-zero data"] = stored <= MAX_STORED_FACTOR * shape["data"]
    if speedup_target:
        targets["e2e <= 1.2 x direct"] = ratio_cb["median"] <= E2E_FACTOR
        targets["original/cacheraw >= 3"] = ratio_ac["median"] >= MIN_SPEEDUP
    else:
        targets["own steps <= 0.25 s"] = own_steps["median"] <= MAX_OWN_STEPS_S
        targets["cacheraw faster than original"] = ratio_ac["median"] > 1
    calls = {k: summary([c["calls"].get(k, 0) for c in s["cacheraw"]])
             for k in sorted(set().union(*(c["calls"] for c in s["cacheraw"])))}
    return {
        "image": shape,
        "seconds": {k: summary([x["s"] for x in v]) for k, v in timed.items()},
        "e2e_limit_s": E2E_FACTOR * med(s["direct"]) if speedup_target else None,
        "own_steps_s": own_steps,
        "worker_steps_s": {k: summary([c["worker_steps"][k] for c in s["cacheraw"]
                                       if k in c["worker_steps"]])
                           for k in s["cacheraw"][0]["worker_steps"]},
        "calls_per_cached_image": calls,
        "ratios": {"cacheraw/direct": ratio_cb, "original/cacheraw": ratio_ac,
                   "convert/clone": ratio_clone,
                   "direct/read_floor": paired(s["direct"], s["read_floor"])},
        "memory": {"worker_rss_peak": peak(s["cacheraw"], "worker_rss"),
                   "qemu_img_rss_peak_cacheraw": peak(s["cacheraw"], "qemu_img_rss"),
                   "qemu_img_rss_peak_direct": peak(s["direct"], "qemu_img_rss"),
                   "qemu_img_rss_peak_original": peak(s["original"], "qemu_img_rss")},
        "local_disk": {"cacheraw": peak(s["cacheraw"], "local_disk"),
                       "original": peak(s["original"], "local_disk")},
        "space": {"nonzero_data": shape["data"], "cache_du": du,
                  "cache_raw_size": peak(s["cacheraw"], "cache_raw_size"),
                  "direct_du": peak(s["direct"], "du"), "original_du": peak(s["original"], "du"),
                  "object_size": object_size, "least_du_at_object_size": minimum_du,
                  "du/nonzero": du / shape["data"], "du/least": du / minimum_du,
                  "cache_stored": stored,
                  "stored/nonzero": stored / shape["data"] if stored is not None else None},
        "targets": targets,
    }


def concurrency_results(times):
    """times[slots][n] = [seconds, ...]"""
    result = {"seconds": {str(slots): {str(n): summary(v) for n, v in per.items()}
                          for slots, per in times.items()}}
    if 2 in times and 1 in times[2] and 2 in times[2]:
        ratio = (statistics.median(times[2][2]) / statistics.median(times[2][1]))
        result["two_images_two_slots/one_image"] = ratio
        result["targets"] = {"2 images on 2 slots < 1.8 x one image": ratio < 1.8}
    return result


def _version(argv):
    try:
        return subprocess.run(argv, capture_output=True, text=True,
                              timeout=30).stdout.splitlines()[0].strip()
    except (OSError, IndexError, subprocess.SubprocessError):
        return None


def machine():
    mem = {}
    with open("/proc/meminfo") as f:
        for line in f:
            key, value = line.split(":", 1)
            mem[key] = int(value.split()[0]) * 1024
    versions = {"python": platform.python_version(), "kernel": platform.release(),
                "qemu-img": _version(["qemu-img", "--version"]),
                "ceph": _version(["ceph", "--version"])}
    for package in ("cacheraw", "glance", "keystone", "oslo.messaging"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {"cores": os.cpu_count(), "memory_bytes": mem.get("MemTotal"),
            "memory_available_at_start": mem.get("MemAvailable"),
            "load_average_at_start": os.getloadavg(), "versions": versions,
            "commit": _version(["git", "rev-parse", "--short", "HEAD"])}


def _span(s):
    return "%6.2f  [%.2f-%.2f]" % (s["median"], s["min"], s["max"])


def print_table(results):
    print()
    print("cacheraw bench on %s, %d runs of each, medians [min-max] in seconds; ratios are of "
          "measurements taken in the same round" % (results.get("osd"), results["runs"]))
    for label, r in results["sizes"].items():
        sec, ratios = r["seconds"], r["ratios"]
        print()
        print("%s image: %s" % (label, r["image"]["description"]))
        rows = [("(a) original pipeline (export, convert, import, snap)", "original"),
                ("(b) qemu-img convert rbd -> rbd, snap", "direct"),
                ("(b) read floor: rbd export > /dev/null", "read_floor"),
                ("(c) cacheraw: image.upload -> Cached", "cacheraw"),
                ("(d) cacheraw-manage recache " + results["recache_args"], "recache"),
                ("(d) cacheraw-manage status", "status"),
                ("(f) volume from the cache: rbd clone + open", "clone")]
        for text, key in rows:
            if key in sec:
                print("  %-58s %s" % (text, _span(sec[key])))
        print("  %-58s %s" % ("(c)/(b)", _span(ratios["cacheraw/direct"])))
        print("  %-58s %s" % ("(c)-(b)   cacheraw's own steps, seconds", _span(r["own_steps_s"])))
        for step, span in r["worker_steps_s"].items():
            print("  %-58s %s" % ("  worker log: " + step.replace("_", " "), _span(span)))
        print("  %-58s %s" % ("(a)/(c)  cacheraw's speed-up", _span(ratios["original/cacheraw"])))
        print("  %-58s %s" % ("(b)/(f)  convert at create vs clone",
                                _span(ratios["convert/clone"])))
        calls = r["calls_per_cached_image"]
        print("  per cached image (medians): %s" % ", ".join(
            "%s %g" % (k.replace("_", " "), v["median"]) for k, v in calls.items()))
        mem, space, disk = r["memory"], r["space"], r["local_disk"]
        print("  peak RSS: worker %s, its qemu-img %s (original's qemu-img %s)"
              % (human(mem["worker_rss_peak"]), human(mem["qemu_img_rss_peak_cacheraw"]),
                 human(mem["qemu_img_rss_peak_original"])))
        print("  local temp disk: cacheraw %s, original pipeline %s"
              % (human(disk["cacheraw"]) if disk["cacheraw"] else "0 B", human(disk["original"])))
        print("  rbd du: cache %s = %.3f x the non-zero data (%s); %.3f x the least a thin copy "
              "uses with %s objects" % (human(space["cache_du"]), space["du/nonzero"],
                                        human(space["nonzero_data"]), space["du/least"],
                                        human(space["object_size"])))
        if space.get("cache_stored") is not None:
            print("  pool STORED added by the cache: %s = %.3f x the non-zero data"
                  % (human(space["cache_stored"]), space["stored/nonzero"]))
        print("  targets: " + ", ".join("%s %s" % (k, "ok" if v else "MISSED")
                                        for k, v in r["targets"].items()))
    conc = results.get("concurrency")
    if conc:
        print()
        print("(e) N images at once, %s each: seconds until the last is Cached"
              % conc["image"]["description"])
        for slots, per in conc["seconds"].items():
            print("  %s slot(s): " % slots + "   ".join(
                "N=%s %s" % (n, _span(s)) for n, s in per.items()))
        if "two_images_two_slots/one_image" in conc:
            print("  two images on two slots take %.2f x one image"
                  % conc["two_images_two_slots/one_image"])


def write_json(results, directory):
    os.makedirs(directory, exist_ok=True)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    path = os.path.join(directory, "bench-%s-%s.json" % (stamp, results.get("osd", "osd")))
    with open(path, "w") as f:
        json.dump(results, f, indent=1, sort_keys=True)
        f.write("\n")
    return path
