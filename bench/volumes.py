"""(g) Volume create from the default image through the Cinder API, create call to
``available``: upstream's RBD driver, Cinder's image-volume cache (first and second create) and
cacheraw's driver, one backend and volume type each (CACHERAW_STACK_CINDER_BACKENDS).
"""

import math
import time

from bench import measure, report
from tests import image_client
from bench.env import BenchError

BACKENDS = ("cacheraw", "upstream", "imagecache")
POLL_S = 0.2
MAX_CACHERAW_S = 1.5
MIN_SPEEDUP = 10.0
MAX_BEHIND_WARM_S = 0.25


class Volumes:
    """The demo user's volumes, and the admin's view to clear Cinder's image-volume cache."""

    def __init__(self, stack):
        facts = stack.facts
        missing = set(BACKENDS) - set(facts.get("cinder", {}).get("backends", []))
        if missing:
            raise BenchError("the stack lacks the Cinder backends %s: start it with "
                             "CACHERAW_STACK_CINDER_BACKENDS=%s ('make bench' does)"
                             % (", ".join(sorted(missing)), ",".join(BACKENDS)))
        self.demo = image_client.session(facts, "demo", timeout=300)
        self.admin = image_client.session(facts, "admin", timeout=300)
        base = facts["cinder"]["url"].rstrip("/") + "/v3/"
        self.url = base + self.demo.get_project_id()
        self.admin_url = base + self.admin.get_project_id()

    def create(self, image_id, size_gib, volume_type):
        """Seconds from the create call to ``available``."""
        began = time.monotonic()
        volume = self.demo.post(self.url + "/volumes", json={"volume": {
            "size": size_gib, "imageRef": image_id, "volume_type": volume_type}}).json()["volume"]
        while True:
            status = self.demo.get(self.url + "/volumes/%s" % volume["id"]).json()[
                "volume"]["status"]
            if status == "available":
                took = time.monotonic() - began
                break
            if status == "error" or time.monotonic() - began > 900:
                raise BenchError("volume %s (%s) ended %s" % (volume["id"], volume_type, status))
            time.sleep(POLL_S)
        self.delete(self.demo, self.url, volume["id"])
        return {"s": took}

    @staticmethod
    def delete(session, url, volume_id):
        session.delete(url + "/volumes/%s" % volume_id)
        deadline = time.monotonic() + 300
        while session.get(url + "/volumes/%s" % volume_id, raise_exc=False).status_code != 404:
            if time.monotonic() > deadline:
                raise BenchError("volume %s not deleted in 300 s" % volume_id)
            time.sleep(POLL_S)

    def clear_image_cache(self, image_id):
        """Cinder keeps its image-volume cache entries (volumes named image-<id>) in its
        internal project; the bench removes them with the image."""
        listed = self.admin.get(self.admin_url + "/volumes", params={
            "all_tenants": 1, "name": "image-%s" % image_id}).json()["volumes"]
        for volume in listed:
            self.delete(self.admin, self.admin_url + "", volume["id"])


def measure_volumes(stack, events, path, virtual, runs):
    volumes = Volumes(stack)
    size_gib = max(1, math.ceil(virtual / 2 ** 30))
    samples = {k: [] for k in ("upstream", "imagecache_first", "imagecache_second", "cacheraw")}
    for run in range(runs):
        print("bench: (g) volume create, round %d of %d" % (run + 1, runs), flush=True)
        image_id = measure.upload_cached(stack, events, path)
        try:
            samples["upstream"].append(volumes.create(image_id, size_gib, "upstream"))
            samples["imagecache_first"].append(volumes.create(image_id, size_gib, "imagecache"))
            samples["imagecache_second"].append(volumes.create(image_id, size_gib,
                                                               "imagecache"))
            samples["cacheraw"].append(volumes.create(image_id, size_gib, "cacheraw"))
            volumes.clear_image_cache(image_id)
        finally:
            measure.delete_image(stack, image_id)
        print("bench:   " + ", ".join("%s %.2f s" % (k, v[-1]["s"]) for k, v in samples.items()),
              flush=True)
    return results(samples, size_gib)


def results(samples, size_gib):
    seconds = {k: report.summary([s["s"] for s in v]) for k, v in samples.items()}
    speedup = report.paired(samples["upstream"], samples["cacheraw"])
    behind = report.summary([c["s"] - w["s"] for c, w in zip(samples["cacheraw"],
                                                             samples["imagecache_second"])])
    return {
        "volume_gib": size_gib, "poll_s": POLL_S, "seconds": seconds,
        "upstream/cacheraw": speedup, "cacheraw-imagecache_second_s": behind,
        "targets": {
            "cacheraw <= %.1f s" % MAX_CACHERAW_S: seconds["cacheraw"]["max"] <= MAX_CACHERAW_S,
            "upstream/cacheraw >= %d" % MIN_SPEEDUP: speedup["median"] >= MIN_SPEEDUP,
            "cacheraw within %.2f s of the warm image-volume cache" % MAX_BEHIND_WARM_S:
                behind["median"] <= MAX_BEHIND_WARM_S,
        },
    }


def print_table(result, description):
    print()
    print("(g) volume create through the Cinder API, create call -> available (%d GiB volume "
          "of the %s), seconds:" % (result["volume_gib"], description))
    rows = (("upstream RBDDriver (download, convert, import)", "upstream"),
            ("Cinder's image-volume cache, first create", "imagecache_first"),
            ("Cinder's image-volume cache, second create", "imagecache_second"),
            ("cacheraw's driver (clone of the cache)", "cacheraw"))
    for text, key in rows:
        print("  %-58s %s" % (text, report._span(result["seconds"][key])))
    print("  %-58s %s" % ("upstream / cacheraw", report._span(result["upstream/cacheraw"])))
    print("  targets: " + ", ".join("%s %s" % (k, "ok" if v else "MISSED")
                                    for k, v in result["targets"].items()))
