"""One measurement each: the original pipeline, bare qemu-img, the read floor, cacheraw end to
end, recache, a clone from the cache, and N images with N conversion slots.

Every function takes the image service's image (its data in ``<pool>/<id>@snap``), returns
seconds and what else it saw, and leaves the pool as it found it.
"""

import os
import subprocess
import time
import uuid

from cacheraw import properties

from bench.env import BenchError, Probe, VENV_BIN, run_measured, timed


CACHE_PROPERTIES = ["cache_raw_status", "cache_raw_url", "cache_raw_size"]


def _scratch(prefix):
    return "bench-%s-%s" % (prefix, uuid.uuid4().hex[:8])


def original(stack, image_id, tmp):
    """``rbd export`` to a local qcow2, ``qemu-img convert`` to a local RAW, ``rbd import``,
    snapshot and protect."""
    local_qcow2, local_raw = os.path.join(tmp, "export.qcow2"), os.path.join(tmp, "export.raw")
    target = _scratch("orig")
    began = time.monotonic()
    try:
        stack.rbd_cli("export", "--no-progress", stack.spec(image_id, properties.CACHE_SNAP),
                      local_qcow2)
        _, qemu_rss = run_measured(["qemu-img", "convert", "-f", "qcow2", "-O", "raw",
                                    local_qcow2, local_raw])
        stack.rbd_cli("import", "--no-progress", local_raw, stack.spec(target))
        stack.publish_raw(target)
        took = time.monotonic() - began
        local_disk = sum(os.stat(p).st_blocks * 512 for p in (local_qcow2, local_raw))
        used = stack.du(target)
    finally:
        for path in (local_qcow2, local_raw):
            if os.path.exists(path):
                os.unlink(path)
        stack.store.remove(target)
    return {"s": took, "qemu_img_rss": qemu_rss, "local_disk": local_disk, "du": used}


def read_floor(stack, image_id):
    """``rbd export`` of the source to /dev/null: reading it is all any conversion must do."""
    took, _ = run_measured(["rbd", "--conf", stack.conf.ceph.conf, "--id", stack.conf.ceph.user,
                            "--keyring", stack.conf.ceph.keyring, "--no-progress", "export",
                            stack.spec(image_id, properties.CACHE_SNAP), "-"])
    return {"s": took}


def direct(stack, image_id, virtual_size):
    """Bare ``qemu-img convert`` from the image in RBD into a new RBD image created as cacheraw
    creates its caches, with the converter's own flags, then snapshot and protect."""
    target = _scratch("direct")
    options = stack.conf.converter
    began = time.monotonic()
    try:
        stack.create_raw(target, virtual_size)
        _, qemu_rss = run_measured(
            [options.qemu_img, "convert", "-n", "--target-is-zero", "-W",
             "-m", str(options.coroutines),
             "--image-opts", stack.qemu_opts("qcow2", image_id, properties.CACHE_SNAP),
             "--target-image-opts", stack.qemu_opts("raw", target)])
        stack.publish_raw(target)
        took = time.monotonic() - began
        used = stack.du(target)
    finally:
        stack.store.remove(target)
    return {"s": took, "qemu_img_rss": qemu_rss, "du": used}


def end_to_end(stack, events, worker, path):
    """Upload a new image asking for a cache: from the ``image.upload`` notification to the
    ``image.update`` that carries ``Cached`` (sent once it is visible in the API)."""
    events.forget()
    image = stack.demo.create(disk_format="qcow2", cache_raw="True")
    worker.wait_idle()
    before = worker.counters()
    probe = Probe(worker.proc.pid, worker.conversion_dir)
    probe.start()
    try:
        stack.demo.upload(image["id"], path)
        uploaded = events.uploaded(image["id"])
        cached = events.settled(image["id"])
    finally:
        probe.stop()
    # The worker also reads the image at the notifications of its own writes.
    worker.wait_idle()
    after = worker.counters()
    calls = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    calls["image_api"] = sum(v for k, v in calls.items() if k.startswith("image_api_"))
    image = stack.service.get(image["id"])
    if image.get("cache_raw_status") != "Cached":
        raise BenchError("image %s ended %s: %s" % (image["id"], image.get("cache_raw_status"),
                                                    image.get("cache_raw_error")))
    layout = stack.layout(properties.cache_name(image["id"]))
    if not layout["object_map_valid"]:
        raise BenchError("cache of image %s has an invalid object map" % image["id"])
    return image, {"s": cached - uploaded, "worker_rss": probe.rss,
                   "qemu_img_rss": probe.children_hwm, "local_disk": probe.disk,
                   "du": stack.du(properties.cache_name(image["id"])),
                   "cache_raw_size": int(image["cache_raw_size"]), **layout,
                   "worker_steps": worker.steps(image["id"]), "calls": calls}


def recache_args():
    """``--force --wait`` when this cacheraw-manage has them (a rebuild in the foreground)."""
    done = subprocess.run([str(VENV_BIN / "cacheraw-manage"), "recache", "--help"],
                          capture_output=True, text=True, timeout=60)
    return ["--force", "--wait"] if "--force" in done.stdout and "--wait" in done.stdout else []


def recache(stack, image_id, args):
    took, _ = run_measured([str(VENV_BIN / "cacheraw-manage"), "--config-file", stack.conf_file,
                            "recache", *args, image_id])
    return {"s": took}


def status(stack, image_id):
    """``cacheraw-manage status``: a process, start-up included."""
    took, _ = run_measured([str(VENV_BIN / "cacheraw-manage"), "--config-file", stack.conf_file,
                            "status", image_id])
    return {"s": took}


def stored(stack, image_id):
    """What the cache adds to the pool's STORED bytes (the mgr's ``df``): read with the cache,
    then again once it is removed."""
    with_cache = stack.pool_stored()
    stack.store.remove(properties.cache_name(image_id))
    without = stack.pool_stored(changed_from=with_cache)
    return {"stored": with_cache - without}


def clone(stack, image_id):
    """A volume from the cache: ``rbd clone`` of its snapshot, opened and read."""
    name = _scratch("volume")
    try:
        took, _ = timed(stack.clone_and_open, properties.cache_name(image_id), name)
    finally:
        stack.remove_image(name)
    return {"s": took}


def wait_removed(stack, name, timeout=120):
    """The worker removes a deleted image's cache on its image.delete notification."""
    deadline = time.monotonic() + timeout
    while name in stack.store.list_caches():
        if time.monotonic() > deadline:
            raise BenchError("cache %s still there %d s after its image was deleted"
                             % (name, timeout))
        time.sleep(0.2)


def delete_image(stack, image_id):
    stack.demo.delete(image_id, raise_exc=False)
    wait_removed(stack, properties.cache_name(image_id))


def together(stack, events, worker, image_ids):
    """Ask for the caches of several images at the same moment, as when they are uploaded
    together: their caches are removed first, then their cache status, which tells the
    worker (through image.update) to cache them again. Seconds until the last is Cached."""
    worker.wait_idle()
    for image_id in image_ids:
        stack.store.remove(properties.cache_name(image_id))
        if set(CACHE_PROPERTIES) - set(stack.service.get(image_id)):
            raise BenchError("image %s is not Cached before the measurement" % image_id)
    events.forget()
    began = time.monotonic()
    for image_id in image_ids:
        stack.service.remove_properties(image_id, CACHE_PROPERTIES)
    last = max(events.settled(image_id) for image_id in image_ids)
    for image_id in image_ids:
        status = stack.service.get(image_id).get("cache_raw_status")
        if status != "Cached":
            raise BenchError("image %s ended %s" % (image_id, status))
    return {"s": last - began}


def upload_cached(stack, events, path):
    """An image uploaded and cached, for later measurements."""
    stack.check_not_full()
    events.forget()
    image = stack.demo.create(disk_format="qcow2", cache_raw="True")
    stack.demo.upload(image["id"], path)
    events.settled(image["id"])
    return image["id"]
