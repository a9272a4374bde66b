"""What the functional tests share beyond conftest's fixtures: uploads and waits on the image
API, reads of the pool, the garbage a fault may leave, qemu-img wrappers for [converter] qemu_img,
cacheraw-manage runs, and generators of hostile images used by more than one suite."""

import os
import re
import socket
import struct
import subprocess
import sys
import time
import urllib.request
import uuid

import rbd

from tests import notifications
from tests.functional.conftest import FAST  # noqa: F401 - the suites import it from here
from tests.functional.conftest import STATE
from tests.functional.conftest import VENV_BIN
from tests.functional.conftest import make_qcow2

LOCK_PREFIX = "cacheraw.lock."
MANAGE = os.path.join(os.path.dirname(sys.executable), "cacheraw-manage")


def upload(images, path, headers=None, **fields):
    fields.setdefault("disk_format", "qcow2")
    image = images.create(**fields)
    if headers:
        with open(path, "rb") as f:
            images.session.put(images.url + "/images/%s/file" % image["id"], data=f,
                               headers=dict(headers, **{"Content-Type":
                                                        "application/octet-stream"}))
    else:
        images.upload(image["id"], path)
    return images.wait(image["id"], lambda i: i["status"] == "active", what="active")


def wait_status(images, image_id, status, timeout=60):
    return images.wait(image_id, lambda i: i.get("cache_raw_status") == status, timeout,
                       what="cache_raw_status %s" % status)


# -- positive markers: what a "nothing happened" assertion waits for first

# The end of the worker's line at the end of each complete sweep (cacheraw/sweeper.py); its line
# once it has decided what an event leads to is "Handled EVENT for image ID" (messaging.py).
SWEEP_ENDED = " orphaned caches removed, "


EVENTS = ("image.upload", "image.update", "image.delete")


def handled(log, image_id, kinds=EVENTS):
    """How many notifications of ``kinds`` about the image the log says were handled."""
    return sum(log.count("Handled %s for image %s\n" % (kind, image_id)) for kind in kinds)


def wait_until_handled(listener, workers, image_ids, status=None, event="image.upload",
                       since=0.0, timeout=60):
    """Until ``workers`` (one notification pool: each event reaches one of them) have handled
    every image.* notification about the images that the test's listener (another pool, the
    same messages) heard so far, once it heard the image.update that shows ``status`` as
    cache_raw_status (without: the image's ``event``). ``since`` (time.monotonic() before the
    workers started) leaves out the events sent before their pool had a queue."""
    def logs():
        return "".join(w.log() for w in workers)

    for image_id in image_ids:
        if status:
            listener.wait_for_status(image_id, [status])
        else:
            listener.wait_for_event(event, image_id)
        heard = listener.heard(image_id, since=since)
        try:
            wait_until("the workers handling the %d notifications of image %s"
                       % (heard, image_id),
                       lambda image_id=image_id, heard=heard:
                       handled(logs(), image_id) >= heard, timeout)
        except AssertionError as exc:
            told = [line for line in logs().splitlines() if image_id in line
                    and ("Received" in line or "andl" in line or "Requeue" in line)]
            raise AssertionError("%s; the workers say:\n%s" % (exc, "\n".join(told))) from None


def wait_for_sweeps(*workers, count=2, timeout=60):
    """Until each worker has ended ``count`` more sweeps from now: with the default, a whole
    sweep that began after this call."""
    before = [w.log().count(SWEEP_ENDED) for w in workers]
    wait_until("%d more sweeps of each worker" % count,
               lambda: all(w.log().count(SWEEP_ENDED) >= n + count
                           for w, n in zip(workers, before)), timeout)


def read_rbd(ioctx, name, snapshot=None):
    with rbd.Image(ioctx, name, snapshot=snapshot, read_only=True) as image:
        size = image.size()
        return b"".join(image.read(off, min(4 << 20, size - off))
                        for off in range(0, size, 4 << 20))


def names_in_pool(ioctx):
    return set(rbd.RBD().list(ioctx))


def raw_of(path, tmp_path):
    out = tmp_path / ("%s.raw" % uuid.uuid4().hex)
    subprocess.run(["qemu-img", "convert", "-f", "qcow2", "-O", "raw", str(path), str(out)],
                   check=True, timeout=120)
    return out.read_bytes()


def small_disk(tmp_path_factory, name):
    """A small qcow2 in a new temporary folder ``name``, and its RAW conversion by qemu-img."""
    tmp = tmp_path_factory.mktemp(name)
    path = make_qcow2(tmp / "disk.qcow2")
    return path, raw_of(path, tmp)


def conversions(log, image_id):
    """How often the log says the image was converted (not merely recorded)."""
    return log.count("Image %s: converted to RAW in" % image_id)


def slow_qemu_img(tmp_path):
    """A qemu-img that pauses before converting, so a test can kill the worker mid-way."""
    path = tmp_path / "slow-qemu-img"
    path.write_text("#!/bin/sh\nif [ \"$1\" = convert ]; then sleep 60; fi\n"
                    "exec qemu-img \"$@\"\n")
    path.chmod(0o755)
    return path


def image_exists(images, image_id):
    response = images.session.get(images.url + "/images/%s" % image_id, raise_exc=False)
    assert response.status_code in (200, 404), response.text
    return response.status_code == 200


def garbage(ceph, images):
    """What a fault may have left: caches without their image, trashed caches without clones,
    lock objects."""
    found = []
    for name in names_in_pool(ceph):
        if name.endswith("_raw") and not image_exists(images, name[:-len("_raw")]):
            found.append("orphaned cache %s" % name)
    for entry in rbd.RBD().trash_list(ceph):
        if entry["name"].endswith("_raw"):
            with rbd.Image(ceph, image_id=entry["id"], read_only=True) as trashed:
                trashed.set_snap("snap")
                if not list(trashed.list_children2()):
                    found.append("trashed cache %s without clones" % entry["name"])
    found += ["lock object %s" % o.key for o in ceph.list_objects()
              if o.key.startswith(LOCK_PREFIX)]
    found += ["space reservation of %s" % key for key in reservations(ceph)]
    return found


def reservations(ceph):
    """The image ids with a space reservation (cacheraw.ceph.space) in the pool."""
    import rados
    with rados.ReadOpCtx() as op:
        found, _ = ceph.get_omap_vals(op, "", "", 1000)
        try:
            ceph.operate_read_op(op, "cacheraw.reservations")
        except rados.ObjectNotFound:
            return []
        return [key for key, _ in found]


def assert_no_garbage(ceph, images, timeout=30):
    # A worker removes its lock object just after it records the outcome: allow it that moment.
    deadline = time.monotonic() + timeout
    while True:
        found = garbage(ceph, images)
        if not found or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert found == [], found


def assert_cached_once(images, ids, logs):
    for image_id in ids:
        image = images.get(image_id)
        assert image.get("cache_raw_status") == "Cached", image
        assert conversions(logs, image_id) == 1, (image_id, logs[-5000:])


def assert_cache_matches(ceph, image_id, qcow2, tmp_path):
    with rbd.Image(ceph, image_id + "_raw", read_only=True) as cache:
        assert [s["name"] for s in cache.list_snaps()] == ["snap"]
        assert cache.is_protected_snap("snap")
    assert read_rbd(ceph, image_id + "_raw", "snap") == raw_of(qcow2, tmp_path)


def qemu_img_wrapper(tmp_path, name, convert):
    """A qemu-img for [converter] qemu_img: ``convert`` is the shell run for 'convert'
    (its arguments in "$@", the subcommand shifted off)."""
    path = tmp_path / name
    path.write_text("#!/bin/sh\nif [ \"$1\" = convert ]; then\n  shift\n%s\nfi\n"
                    "exec qemu-img \"$@\"\n" % convert)
    path.chmod(0o755)
    return path


def throttled_qemu_img(tmp_path, bytes_per_second=256 * 1024):
    """The real conversion, rate-limited: several seconds of writing into Ceph."""
    return qemu_img_wrapper(tmp_path, "throttled-qemu-img",
                            "exec qemu-img convert -r %d \"$@\"" % bytes_per_second)


def converter_conf(base, qemu_img):
    return base + "[converter]\nqemu_img = %s\n" % qemu_img


def wait_for_written_data(ceph, name, timeout=60):
    """Until qemu-img has written some of the cache: a conversion in full flow."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with rbd.Image(ceph, name, read_only=True) as image:
                written = []
                image.diff_iterate(0, image.size(), None,
                                   lambda _off, _len, exists, found=written: found.append(exists),
                                   whole_object=True)
                if any(written):
                    return
        except rbd.ImageNotFound:
            pass
        time.sleep(0.2)
    raise AssertionError("nothing written into %s in %ss" % (name, timeout))


def qemu_img_running_for(image_id):
    return subprocess.run(["pgrep", "-f", "qemu-img.*%s" % image_id],
                          capture_output=True).returncode == 0


def wait_until(what, check, timeout=30):
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "%s not reached in %ss" % (what, timeout)
        time.sleep(0.2)


def manage(stack, *args, timeout=180, log_file=None):
    """cacheraw-manage against the stack; with ``log_file``, its log goes there."""
    logging = ["--log-file", str(log_file)] if log_file else []
    return subprocess.run([MANAGE, "--config-file", stack["cacheraw_conf"], *logging, *args],
                          capture_output=True, text=True, timeout=timeout)


def map_bomb_qcow2(d, host=None, virtual_size=1 << 40, cluster_bits=19):
    """A consistent qcow2 of 1 TiB virtual in about 18 MiB: its clusters alternate between
    "reads as zeros" and unallocated, so that ``qemu-img map`` describes two million extents
    (some 200 MB of JSON). Written directly: a qemu-io command per cluster would take minutes."""
    path = d / "map-bomb.qcow2"
    cluster = 1 << cluster_bits
    entries = cluster // 8  # L2 entries per table
    l2_tables = -(-virtual_size // cluster // entries)
    l1_offset, refcount_table_offset, refcount_block_offset = cluster, 2 * cluster, 3 * cluster
    first_l2 = 4
    clusters = first_l2 + l2_tables
    header = struct.pack(">4sIQIIQIIQQIIQQQQII", b"QFI\xfb", 3, 0, 0, cluster_bits, virtual_size,
                         0, l2_tables, l1_offset, refcount_table_offset, 1, 0, 0, 0, 0, 0, 4,
                         104)
    copied = 1 << 63
    l1 = b"".join(struct.pack(">Q", copied | (first_l2 + i) * cluster) for i in range(l2_tables))
    # An L2 entry of 1: "reads as zeros", nothing allocated; 0: unallocated.
    l2 = struct.pack(">Q", 1) + struct.pack(">Q", 0)
    with open(path, "wb") as f:
        f.write(header + struct.pack(">II", 0, 0))  # no header extensions
        f.seek(l1_offset)
        f.write(l1)
        f.seek(refcount_table_offset)
        f.write(struct.pack(">Q", refcount_block_offset))
        f.seek(refcount_block_offset)
        f.write(struct.pack(">H", 1) * clusters)
        for i in range(l2_tables):
            f.seek((first_l2 + i) * cluster)
            f.write(l2 * (entries // 2))
    return path, "qcow2", "not enough space"


def check_bomb_qcow2(d, host=None, virtual_size=1 << 40, cluster_bits=16):
    """A qcow2 of 384 KiB that passes the format inspector and ``qemu-img info``: 1 TiB virtual,
    64 KiB clusters, all 2048 L1 entries pointing at one L2 table whose 8192 entries are
    misaligned. ``qemu-img check`` writes a line per bad entry: some 16 million lines, hundreds
    of MB of stderr within seconds."""
    path = d / "check-bomb.qcow2"
    cluster = 1 << cluster_bits
    l1_entries = -(-virtual_size // cluster // (cluster // 8))
    l1_offset, refcount_table_offset, refcount_block_offset, l2_offset = (
        cluster, 2 * cluster, 3 * cluster, 4 * cluster)
    clusters = 6
    header = struct.pack(">4sIQIIQIIQQIIQQQQII", b"QFI\xfb", 3, 0, 0, cluster_bits, virtual_size,
                         0, l1_entries, l1_offset, refcount_table_offset, 1, 0, 0, 0, 0, 0, 4,
                         104)
    copied = 1 << 63
    with open(path, "wb") as f:
        f.write(header + struct.pack(">II", 0, 0))  # no header extensions
        f.seek(l1_offset)
        f.write(struct.pack(">Q", copied | l2_offset) * l1_entries)
        f.seek(refcount_table_offset)
        f.write(struct.pack(">Q", refcount_block_offset))
        f.seek(refcount_block_offset)
        f.write(struct.pack(">H", 1) * clusters)
        f.seek(l2_offset)  # data clusters at an offset that is not a multiple of the cluster
        f.write(struct.pack(">Q", copied | (5 * cluster + 512)) * (cluster // 8))
        f.truncate(clusters * cluster)
    return path, "qcow2", "wrote more than"


def qemu_img_processes_of(pid):
    """The qemu-img (and bwrap sandbox) processes that descend from ``pid``."""
    children, found = {}, []
    for name in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open("/proc/%s/stat" % name, "rb") as f:
                fields = f.read().rsplit(b")", 1)
            comm = fields[0].split(b"(", 1)[1]
            children.setdefault(int(fields[1].split()[1]), []).append((int(name), comm))
        except (OSError, IndexError, ValueError):
            continue
    todo = [pid]
    while todo:
        for child, comm in children.get(todo.pop(), []):
            todo.append(child)
            if comm in (b"qemu-img", b"bwrap"):
                found.append(child)
    return found


def worker_usage(process):
    """(peak resident bytes, CPU seconds) of the worker process itself."""
    pid = process.proc.pid
    with open("/proc/%d/status" % pid) as f:
        peak = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return peak, cpu


def forged_notifier(transport_url, exchange):
    """oslo.messaging's Notifier as Glance uses it, publishing on ``exchange``."""
    return notifications.notifier(transport_url, exchange)


def openrc_env(user):
    env = {}
    for line in (STATE / ("%s-openrc" % user)).read_text().splitlines():
        if line.startswith("export ") and "=" in line:
            key, value = line[len("export "):].split("=", 1)
            env[key] = value
    return env


def openstack(*args, user="demo", check=True, timeout=300):
    done = subprocess.run([str(VENV_BIN / "openstack"), *args],
                          env={**os.environ, **openrc_env(user)}, capture_output=True, text=True,
                          timeout=timeout)
    if check:
        assert done.returncode == 0, "openstack %s: %s" % (" ".join(args), done.stderr)
    return done


def compressed_qcow2(path, data_bytes, pattern=0x5A, cluster_bits=16):
    """A consistent qcow2 whose every cluster up to ``data_bytes`` holds ``pattern``, each one
    compressed (deflate) to about 100 bytes: gigabytes of data in a few megabytes. Written
    directly: qemu-io's compressed writes of gigabytes take minutes."""
    import zlib
    cluster = 1 << cluster_bits
    compressor = zlib.compressobj(9, zlib.DEFLATED, -12)
    blob = compressor.compress(bytes([pattern]) * cluster) + compressor.flush()
    slot = 128  # four blobs per 512-byte sector, none crossing a sector's end
    assert len(blob) <= slot, len(blob)
    count = data_bytes // cluster
    entries = cluster // 8
    l2_tables = -(-count // entries)
    per_cluster = cluster // slot
    data_clusters = -(-count // per_cluster)
    l1_offset, refcount_table_offset, refcount_block_offset = cluster, 2 * cluster, 3 * cluster
    first_l2, first_data = 4, 4 + l2_tables
    assert first_data + data_clusters <= cluster // 2  # one refcount block
    header = struct.pack(">4sIQIIQIIQQIIQQQQII", b"QFI\xfb", 3, 0, 0, cluster_bits,
                         count * cluster, 0, l2_tables, l1_offset, refcount_table_offset, 1, 0, 0,
                         0, 0, 0, 4, 104)
    copied, compressed = 1 << 63, 1 << 62
    with open(path, "wb") as f:
        f.write(header + struct.pack(">II", 0, 0))
        f.seek(l1_offset)
        f.write(b"".join(struct.pack(">Q", copied | (first_l2 + i) * cluster)
                         for i in range(l2_tables)))
        f.seek(refcount_table_offset)
        f.write(struct.pack(">Q", refcount_block_offset))
        f.seek(refcount_block_offset)
        refcounts = [1] * first_data + [min(per_cluster, count - i * per_cluster)
                                        for i in range(data_clusters)]
        f.write(b"".join(struct.pack(">H", n) for n in refcounts))
        f.seek(first_l2 * cluster)
        f.write(b"".join(struct.pack(">Q", compressed | (first_data * cluster + i * slot))
                         for i in range(count)))
        f.seek(first_data * cluster)
        f.write(b"".join(blob.ljust(slot, b"\0") for _ in range(count)))
        f.truncate((first_data + data_clusters) * cluster)
    return path


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def scrape(port):
    """The worker's cacheraw_* samples on its /metrics endpoint, by name and labels."""
    text = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=10).read()
    samples = {}
    for line in text.decode().splitlines():
        match = re.match(r"^(cacheraw_\S+) (\S+)$", line)
        if match:
            samples[match.group(1)] = float(match.group(2))
    return samples
