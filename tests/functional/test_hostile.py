"""Hostile images and messages on the real stack.

Every image of the corpus is generated here and uploaded with container_format ``ovf`` (the
stack's Glance inspects only ``bare`` uploads), so that cacheraw's own defences are what is
tested. Each ends ``Error`` with a clear one-line ``cache_raw_error``, the worker alive within
bounded memory and CPU, and not one byte of a planted host file in Ceph: every RBD image the test
made is read back in full and searched for the secret.
"""

import json
import os
import re
import subprocess
import uuid

import pytest
import rbd

from cacheraw import messaging
from tests.functional.conftest import WorkerProcess
from tests.functional.conftest import make_qcow2
from tests.functional.conftest import set_quota
from tests.functional.conftest import settled_usage
from tests.functional.helpers import assert_no_garbage
from tests.functional.helpers import check_bomb_qcow2
from tests.functional.helpers import conversions
from tests.functional.helpers import forged_notifier
from tests.functional.helpers import manage
from tests.functional.helpers import names_in_pool
from tests.functional.helpers import qemu_img_processes_of
from tests.functional.helpers import upload
from tests.functional.helpers import wait_status
from tests.functional.helpers import wait_until
from tests.functional.helpers import worker_usage

pytestmark = pytest.mark.hostile

SECRET = b"HOST-SECRET-" + uuid.uuid4().hex.encode()
# The worker's own bounds while it refuses the whole corpus (qemu-img has its own limits).
WORKER_MAX_RSS = 200 * 1024 * 1024
WORKER_MAX_CPU_SECONDS = 120
SMALL_WRITES = (("0x5a", "0", "1M"),)


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("hostile")


@pytest.fixture(scope="module")
def host_file(corpus_dir):
    """A file of the worker's host that no image may ever read."""
    path = corpus_dir / "host-secret"
    path.write_bytes(SECRET * 8192)
    return path


@pytest.fixture(scope="class")
def worker(stack, corpus_dir):
    override = corpus_dir / "worker.conf"
    override.write_text("[notifications]\npool = tests-hostile-%s\n[worker]\nsweep_interval = 2\n"
                        "[ceph]\nlock_duration = 10\n[converter]\n"
                        "allowed_source_formats = qcow2,vmdk\n" % uuid.uuid4().hex[:8])
    process = WorkerProcess(stack["cacheraw_conf"], corpus_dir / "worker.log",
                            ("--config-file", str(override)))
    process.wait_for_log("started")
    yield process
    process.stop()


# -- the corpus: each maker returns (path, disk_format, words the error must contain)

def qemu_img(*args):
    subprocess.run(["qemu-img", *map(str, args)], check=True, timeout=60, capture_output=True)


def backing_host_file(d, host):
    path = d / "backing.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-b", host, "-F", "raw", path, "16M")
    return path, "qcow2", "backing file"


def json_backing_file(d, host):
    path = d / "json-backing.qcow2"
    name = "json:" + json.dumps({"driver": "raw",
                                 "file": {"driver": "file", "filename": str(host)}})
    qemu_img("create", "-q", "-f", "qcow2", "-u", "-b", name, "-F", "raw", path, "16M")
    return path, "qcow2", "backing file"


def external_data_file(d, host):
    path = d / "data-file.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-o",
             "data_file=%s,data_file_raw=on" % host, path, "1M")
    return path, "qcow2", "data file"


def vmdk_flat_extent(d, host):
    path = d / "flat.vmdk"
    path.write_text('# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n'
                    'createType="monolithicFlat"\n\n# Extent description\n'
                    'RW 2048 FLAT "%s" 0\n\nddb.virtualHWVersion = "4"\n' % host)
    return path, "vmdk", "unsafe vmdk image"


def vmdk_sparse_naming_a_host_file(d, host):
    """A sparse VMDK whose embedded descriptor lists a flat extent on a host file too."""
    path = d / "sparse.vmdk"
    qemu_img("create", "-q", "-f", "vmdk", path, "16M")
    data = bytearray(path.read_bytes())
    start = data.index(b'RW ')
    end = data.index(b"\n", start) + 1
    extra = b'RW 2048 FLAT "%s" 0\n' % str(host).encode()
    tail = data.index(b"\0", end)
    data[end:tail + len(extra)] = extra + bytes(data[end:tail])
    path.write_bytes(bytes(data))
    return path, "vmdk", "unsafe vmdk image"


def raw_bytes_as_qcow2(d, host):
    path = d / "raw-bytes.qcow2"
    path.write_bytes(os.urandom(1 << 20))
    return path, "qcow2", "not qcow2"


def qcow2_as_vmdk(d, host):
    return make_qcow2(d / "as-vmdk.qcow2", size="16M", writes=SMALL_WRITES), "vmdk", "not vmdk"


def truncated_qcow2(d, host):
    whole = make_qcow2(d / "whole.qcow2", size="16M", writes=(("0x5a", "0", "4M"),))
    path = d / "truncated.qcow2"
    path.write_bytes(whole.read_bytes()[:200000])
    return path, "qcow2", "truncated"


def petabyte_qcow2(d, host):
    path = d / "petabyte.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", path, "1P")
    return path, "qcow2", "exceeds the limit"


def patched_qcow2(d, name, offset, value):
    path = make_qcow2(d / name, size="16M", writes=SMALL_WRITES)
    data = bytearray(path.read_bytes())
    data[offset:offset + len(value)] = value
    path.write_bytes(bytes(data))
    return path


def corrupt_l1_size(d, host):
    # l1_size, a big-endian u32 at byte 36 of the qcow2 header.
    return patched_qcow2(d, "l1.qcow2", 36, b"\x7f\xff\xff\xff"), "qcow2", "l1 table"


def corrupt_refcount_table(d, host):
    # refcount_table_clusters, a big-endian u32 at byte 56.
    return (patched_qcow2(d, "refcount.qcow2", 56, b"\xff\xff\xff\x00"), "qcow2",
            "reference count table")


def luks_qcow2(d, host):
    path = d / "luks.qcow2"
    # qemu-img times its key derivation and, on a busy machine, at times fails with "Unable to
    # get accurate CPU usage": a few tries.
    for _ in range(5):
        done = subprocess.run(
            ["qemu-img", "create", "-q", "-f", "qcow2", "--object", "secret,id=s0,data=swordfish",
             "-o", "encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=10", str(path),
             "16M"], timeout=60, capture_output=True, text=True)
        if done.returncode == 0:
            return path, "qcow2", "encrypted"
    raise AssertionError("qemu-img could not make a LUKS image: %s" % done.stderr)


CORPUS = [backing_host_file, json_backing_file, external_data_file, vmdk_flat_extent,
          vmdk_sparse_naming_a_host_file, raw_bytes_as_qcow2, qcow2_as_vmdk,
          truncated_qcow2, petabyte_qcow2, corrupt_l1_size, corrupt_refcount_table, luks_qcow2,
          check_bomb_qcow2]


# -- what every case must end with

def export_and_search(ceph, names, secret=SECRET):
    """Read every RBD image named (and each of its snapshots) in full; none may hold the
    secret."""
    for name in names:
        with rbd.Image(ceph, name, read_only=True) as image:
            snaps = [None] + [s["name"] for s in image.list_snaps()]
        for snap in snaps:
            with rbd.Image(ceph, name, snapshot=snap, read_only=True) as image:
                size, offset, tail = image.size(), 0, b""
                while offset < size:
                    chunk = tail + image.read(offset, min(4 << 20, size - offset))
                    assert secret not in chunk, "host data in %s@%s" % (name, snap)
                    tail = chunk[-len(secret):]
                    offset += 4 << 20


def assert_refused(images, ceph, worker, image_id, words, before):
    failed = wait_status(images, image_id, "Error", timeout=90)
    reason = failed["cache_raw_error"]
    assert words in reason.lower().replace("_", " ").replace("-", " "), reason
    assert "\n" not in reason and len(reason) <= 250
    assert not reason.startswith(("temporary failure", "internal error")), reason
    assert "file.driver" not in reason and "conf=" not in reason, reason  # no option strings
    assert worker.proc.poll() is None
    assert qemu_img_processes_of(worker.proc.pid) == []  # dead before the error was recorded
    peak, cpu = worker_usage(worker)
    assert peak < WORKER_MAX_RSS, peak
    assert cpu < WORKER_MAX_CPU_SECONDS, cpu
    assert conversions(worker.log(), image_id) == 0
    made = names_in_pool(ceph) - before
    assert image_id + "_raw" not in made
    export_and_search(ceph, made)


# Text built to inject into command lines and RBD names, as image names and ids.
INJECTING_TEXT = ["x:conf=/etc/passwd", "images/other@snap", "../../etc/passwd", "--help",
                  "-o", "a,file.filename=/etc/passwd", "json:{}", "x\nrbd:images/y"]


class TestCorpus:
    """The cases that share one worker (it stops before the tests that need their own)."""

    @pytest.mark.parametrize("make", CORPUS, ids=[m.__name__ for m in CORPUS])
    def test_hostile_image_is_refused(self, make, worker, demo_images, ceph, corpus_dir,
                                      host_file):
        before = names_in_pool(ceph)
        path, disk_format, words = make(corpus_dir, host_file)
        image = upload(demo_images, path, cache_raw="True", disk_format=disk_format,
                       container_format="ovf")
        assert_refused(demo_images, ceph, worker, image["id"], words, before)

    def test_qcow2_data_labelled_raw_is_never_read_and_needs_no_cache(self, worker, demo_images,
                                                                     ceph, corpus_dir):
        """A raw image needs no cache (its consumers clone it as it is): the worker never reads
        its data, so a qcow2 labelled raw is neither inspected nor converted; it ends NotNeeded
        and nothing is made in the pool."""
        before = names_in_pool(ceph)
        path = make_qcow2(corpus_dir / "as-raw.qcow2", size="16M", writes=SMALL_WRITES)
        image = upload(demo_images, path, cache_raw="True", disk_format="raw")
        done = wait_status(demo_images, image["id"], "NotNeeded", timeout=90)
        assert not any(done.get(key) for key in ("cache_raw_url", "cache_raw_size",
                                                 "cache_raw_error")), done
        assert worker.proc.poll() is None
        assert conversions(worker.log(), image["id"]) == 0
        assert image["id"] + "_raw" not in names_in_pool(ceph) - before

    def test_compressed_bomb_never_fills_the_pool(self, worker, demo_images, service_images, ceph,
                                                   corpus_dir, admin_cluster):
        """A 256 MiB disk of compressed clusters in a file of well under 1 MiB: the space check
        counts what the RAW copy will take, and refuses it before a byte is written."""
        path = corpus_dir / "bomb.qcow2"
        qemu_img("create", "-q", "-f", "qcow2", path, "256M")
        subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -c -P 0x5a 0 128M",
                        "-c", "write -c -P 0x5a 128M 128M", str(path)], check=True, timeout=120,
                       capture_output=True)
        assert path.stat().st_size < 1 << 20
        before = names_in_pool(ceph)
        used = settled_usage(ceph)
        set_quota(admin_cluster, used + (64 << 20))
        image = upload(demo_images, path, cache_raw="True", container_format="ovf")
        assert_refused(demo_images, ceph, worker, image["id"], "not enough space in pool", before)
        assert settled_usage(ceph) < used + (16 << 20)
        assert_no_garbage(ceph, service_images)
        # Refused for want of space, it would be converted by the sweep once the quota is
        # lifted, under the next test.
        demo_images.delete(image["id"])

    def test_image_names_never_reach_a_command_line(self, worker, demo_images, ceph,
                                                    corpus_dir):
        path = make_qcow2(corpus_dir / "named.qcow2", size="8M",
                          writes=(("0x33", "0", "256K"),))
        before = names_in_pool(ceph)
        ids = [upload(demo_images, path, cache_raw="True", name=name.replace("\n", " "))["id"]
               for name in INJECTING_TEXT[:4]]
        for image_id in ids:
            wait_status(demo_images, image_id, "Cached", timeout=90)
        made = names_in_pool(ceph) - before
        assert made == set(ids) | {i + "_raw" for i in ids}


# ("--help" is the command's help there, not an id.)
@pytest.mark.parametrize("bad_id", [t for t in INJECTING_TEXT if t != "--help"] + [
    "6ba7b810-9dad-11d1-80b4-00C04FD430C8", "6ba7b810-9dad-11d1-80b4-00c04fd430c8_raw",
    "6ba7b810-9dad-11d1-80b4-00c04fd430c8,driver=file", "6ba7b810-9dad-11d1-80b4-00c04fd430c8@x"])
def test_manage_refuses_ids_that_are_not_uuids(stack, bad_id):
    done = manage(stack, "recache", bad_id, timeout=60)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert "error" in done.stderr, done.stderr


UUID_LIKE = str(uuid.UUID(int=0x6ba7b8109dad11d180b400c04fd430c8))
MALFORMED = [
    ("info", "image.upload", {}),
    ("info", "image.upload", {"id": 5}),
    ("info", "image.upload", {"id": None}),
    ("info", "image.upload", {"id": ["x"]}),
    ("info", "image.upload", {"id": {"nested": UUID_LIKE}}),
    ("info", "image.upload", "a plain string"),
    ("info", "image.upload", None),
    ("info", "image.upload", [UUID_LIKE]),
    ("info", "image.update", {"id": "x" * 20000}),
    ("info", "image.delete", {"id": "../../etc/passwd", "deleted": True}),
    ("error", "image.upload", "Image upload failed: the storage is full"),
    ("error", "image.upload", {"id": 7}),
    ("info", "image.frobnicate", {"id": UUID_LIKE}),
    ("info", "compute.instance.create.end", {"instance_id": UUID_LIKE}),
    ("info", "image.upload", {"id": str(uuid.uuid4())}),  # no such image
    ("info", "image.delete", {"id": str(uuid.uuid4()), "deleted": True}),
] + [("info", "image.upload", {"id": text}) for text in INJECTING_TEXT] + [
    ("info", "image.upload", {"id": UUID_LIKE.upper()}),
    ("info", "image.upload", {"id": UUID_LIKE + "_raw"}),
    ("info", "image.upload", {"id": UUID_LIKE + "@snap"}),
]


def reaching_the_endpoint():
    """The forged events that pass the worker's filter (image.upload, .update, .delete)."""
    return [event for event in MALFORMED if re.match(messaging.EVENT_TYPES, event[1])]


def outcomes(log):
    """The lines that end the handling of an event: ignored (no id, error priority) or
    handled (an id the worker refuses, or no such image)."""
    return sum(log.count(text) for text in (" without an image id\n", " at error priority from ",
                                            "Handled image."))


def test_forged_and_malformed_notifications_lose_no_valid_event(stack, start_worker,
                                                                demo_images, service_images,
                                                                ceph, corpus_dir):
    # An exchange of this test's own: Glance's real notifications never reach this worker, so
    # only the forged valid event can bring the image in (and the start-up sweep is over).
    exchange = "tests-forged-%s" % uuid.uuid4().hex[:8]
    worker = start_worker(extra_conf="[notifications]\nexchange = %s\n"
                                     "[worker]\nsweep_interval = 0\n" % exchange)
    worker.wait_for_log("Sweep:")
    path = make_qcow2(corpus_dir / "forged.qcow2", size="8M", writes=(("0x44", "0", "256K"),))
    image = upload(demo_images, path, cache_raw="True")
    before = names_in_pool(ceph)
    notifier, transport = forged_notifier(stack["rabbitmq"]["transport_url"], exchange)
    try:
        for priority, event_type, payload in MALFORMED:
            getattr(notifier, priority)({}, event_type, payload)
        # Each one that passes the worker's filter ends in one line: ignored, or handled.
        wait_until("the worker handling the %d forged events" % len(reaching_the_endpoint()),
                   lambda: outcomes(worker.log()) >= len(reaching_the_endpoint()), 60)
        assert "cache_raw_status" not in demo_images.get(image["id"])
        valid = {k: image.get(k) for k in ("id", "name", "status", "disk_format", "size")}
        valid["properties"] = {"cache_raw": "True"}
        notifier.info({}, "image.upload", valid)
        wait_status(demo_images, image["id"], "Cached", timeout=90)
    finally:
        transport.cleanup()
    log = worker.log()
    assert worker.proc.poll() is None
    assert "Traceback" not in log
    assert log.count("Ignoring") >= 10, log
    assert conversions(log, image["id"]) == 1
    assert names_in_pool(ceph) - before == {image["id"] + "_raw"}
    assert_no_garbage(ceph, service_images)


# -- the cache properties belong to the service

@pytest.mark.parametrize("prop, value", [("cache_raw_status", "Cached"),
                                         ("cache_raw_url", "rbd://x/images/y_raw/snap"),
                                         ("cache_raw_size", "1"),
                                         ("cache_raw_error", "")])
def test_member_cannot_set_cache_properties(demo_images, prop, value):
    refused = demo_images.session.post(demo_images.url + "/images", raise_exc=False, json={
        "name": "forged", "disk_format": "qcow2", "container_format": "bare", prop: value})
    assert refused.status_code == 403, refused.text
    image = demo_images.create(disk_format="qcow2", cache_raw="True")
    try:
        response = demo_images.patch(image["id"], [{"op": "add", "path": "/" + prop,
                                                    "value": value}], raise_exc=False)
        assert response.status_code == 403, response.text
        assert prop not in demo_images.get(image["id"])
    finally:
        demo_images.delete(image["id"])
