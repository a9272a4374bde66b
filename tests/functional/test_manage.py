"""cacheraw-manage on the real stack: recache with progress, status, list, reconcile,
purge-orphans and check."""

import json
import re
import subprocess
import uuid

import pytest
import rados
import rbd

from cacheraw import properties

from tests.functional.conftest import make_qcow2
from tests.functional.helpers import FAST
from tests.functional.helpers import MANAGE
from tests.functional.helpers import names_in_pool
from tests.functional.helpers import upload
from tests.functional.helpers import wait_status

# The client address of a worker that died holding a lock (no client of the stack has it).
DEAD_CLIENT = "127.0.0.1:0/4242"

# qemu-img whose conversions write in order at RATE, so that their progress can be watched.
THROTTLED_QEMU_IMG = """#!/usr/bin/python3
import os, sys
args = sys.argv[1:]
if args[:1] == ["convert"]:
    kept, skip = ["convert", "-r", "RATE", "-m", "1"], False
    for arg in args[1:]:
        if skip:
            skip = False
        elif arg == "-m":
            skip = True
        elif arg != "-W":
            kept.append(arg)
    args = kept
os.execvp("qemu-img", ["qemu-img"] + args)
"""


def manage(stack, *args, extra_conf=None, timeout=180):
    argv = [MANAGE, "--config-file", stack["cacheraw_conf"]]
    if extra_conf:
        argv += ["--config-file", str(extra_conf)]
    return subprocess.run(argv + list(args), capture_output=True, text=True, timeout=timeout)


def conf_file(tmp_path, text):
    path = tmp_path / ("override-%s.conf" % uuid.uuid4().hex[:8])
    path.write_text(text)
    return path


def throttled_conf(tmp_path, rate):
    path = tmp_path / ("qemu-img-%s" % rate)
    path.write_text(THROTTLED_QEMU_IMG.replace("RATE", rate))
    path.chmod(0o755)
    return "[converter]\nqemu_img = %s\n" % path


@pytest.fixture
def throttled(tmp_path):
    return throttled_conf(tmp_path, "4M")


@pytest.fixture
def slow_qcow2(tmp_path):
    """24 MiB of data: about 6 s through the throttled qemu-img."""
    return make_qcow2(tmp_path / "slow.qcow2", size="256M", writes=(("0x5a", "0", "24M"),))


@pytest.fixture
def admin(stack):
    cluster = rados.Rados(conffile=stack["ceph"]["conf"], rados_id="admin")
    cluster.connect(timeout=15)
    ioctx = cluster.open_ioctx(stack["ceph"]["pool"])
    yield cluster, ioctx
    ioctx.close()
    cluster.shutdown()


def rbd_id(ioctx, name):
    with rbd.Image(ioctx, name, read_only=True) as image:
        return image.id()


def status_json(stack, image_id):
    done = manage(stack, "status", image_id, "--format", "json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def no_traceback(done):
    assert "Traceback" not in done.stderr + done.stdout, done.stderr


# -- recache

def test_recache_wait_shows_progress_and_ends_cached(stack, demo_images, slow_qcow2, ceph,
                                                     throttled, tmp_path):
    image = upload(demo_images, slow_qcow2, cache_raw="True")  # no worker runs
    slow = conf_file(tmp_path, throttled)
    done = manage(stack, "recache", image["id"], "--wait", extra_conf=slow)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    progress = [line for line in lines if line.startswith("progress ")]
    assert len(progress) >= 3, done.stdout  # a line every few seconds, not a \r bar
    assert any(" 0.0%" not in line and "100.0%" not in line for line in progress), done.stdout
    assert progress[-1].startswith("progress 100.0%") and progress[-1].endswith(" MiB/s")
    assert "\r" not in done.stdout
    assert lines[-1].startswith("%s: Cached: rbd://" % image["id"])
    cached = demo_images.get(image["id"])
    assert cached["cache_raw_status"] == "Cached"
    assert cached["store"] == "rbd"
    first = rbd_id(ceph, image["id"] + "_raw")

    # A valid cache is left alone without --force.
    again = manage(stack, "recache", image["id"])
    assert again.returncode == 0, again.stderr
    assert "already cached" in again.stdout and "left alone" in again.stdout
    assert rbd_id(ceph, image["id"] + "_raw") == first

    # --force rebuilds it (a new RBD image under the same name); without --wait, no progress.
    forced = manage(stack, "recache", image["id"], "--force")
    assert forced.returncode == 0, forced.stderr
    assert "progress" not in forced.stdout
    assert forced.stdout.strip().startswith("%s: Cached: rbd://" % image["id"])
    assert rbd_id(ceph, image["id"] + "_raw") != first
    assert demo_images.get(image["id"])["cache_raw_status"] == "Cached"


def test_recache_follows_a_worker_that_converts_the_image(start_worker, stack, demo_images,
                                                          slow_qcow2, tmp_path):
    worker = start_worker(extra_conf=FAST + throttled_conf(tmp_path, "1M"))  # about 24 s
    image = upload(demo_images, slow_qcow2, cache_raw="True")
    wait_status(demo_images, image["id"], "Caching")
    worker.wait_for_log("caching")
    during = status_json(stack, image["id"])
    assert during["ceph"]["lock_holder"]["pid"] == worker.proc.pid
    done = manage(stack, "recache", image["id"], "--wait")
    assert done.returncode == 0, done.stderr
    assert "another worker converts it" in done.stdout, worker.log()
    assert "pid %d" % worker.proc.pid in done.stdout
    assert "progress" in done.stdout and "MiB/s" in done.stdout
    assert done.stdout.splitlines()[-1].startswith("%s: Cached" % image["id"])
    assert worker.log().count("Image %s: converted to RAW in" % image["id"]) == 1


def test_recache_takes_over_from_a_worker_that_died_holding_the_lock(stack, demo_images,
                                                                      service_images, qcow2,
                                                                      admin):
    image = upload(demo_images, qcow2, cache_raw="True")
    service_images.patch(image["id"], [{"op": "add", "path": "/cache_raw_status",
                                        "value": "Caching"}])
    _, ioctx = admin
    lock = "cacheraw.lock." + image["id"]
    ioctx.lock_exclusive(lock, "cacheraw", "dead-worker", duration=8)
    # The dead worker's client address, which the taker blocklists before it touches the image
    # (a record without one is refused: nobody could be fenced).
    ioctx.set_xattr(lock, "cacheraw.holder", json.dumps(
        {"host": "dead-host", "pid": 4242, "addr": DEAD_CLIENT}).encode())
    try:
        done = manage(stack, "recache", image["id"], "--wait")
    finally:
        try:
            ioctx.remove_object(lock)
        except rados.ObjectNotFound:
            pass
    assert done.returncode == 0, done.stderr
    assert "another worker converts it (dead-host pid 4242)" in done.stdout
    assert done.stdout.splitlines()[-1].startswith("%s: Cached" % image["id"])
    assert demo_images.get(image["id"])["cache_raw_status"] == "Cached"


def test_recache_of_an_image_without_cache_raw_fails(stack, demo_images, qcow2):
    image = upload(demo_images, qcow2)
    done = manage(stack, "recache", image["id"], "--wait")
    assert done.returncode == 1
    assert "does not ask for a cache" in done.stderr
    no_traceback(done)


def test_recache_of_a_raw_image_says_it_needs_none_and_succeeds(stack, demo_images, tmp_path,
                                                                 ceph):
    path = tmp_path / "disk.raw"
    path.write_bytes(bytes(1 << 20))
    image = upload(demo_images, path, disk_format="raw", cache_raw="True")  # no worker runs
    done = manage(stack, "recache", image["id"])
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip().splitlines()[-1] == (
        "%s: NotNeeded: image is already raw; clone it directly" % image["id"])
    assert demo_images.get(image["id"])["cache_raw_status"] == "NotNeeded"
    assert image["id"] + "_raw" not in names_in_pool(ceph)


# -- status and list

def test_status_and_list_show_the_image_api_next_to_ceph(stack, demo_images, qcow2, ceph,
                                                         admin):
    image = upload(demo_images, qcow2, cache_raw="True")
    assert manage(stack, "recache", image["id"]).returncode == 0
    name = image["id"] + "_raw"
    view = status_json(stack, image["id"])
    assert view["image"]["cache_raw_status"] == "Cached"
    assert view["image"]["store"] == "rbd"
    assert view["ceph"]["exists"] and view["ceph"]["protected"]
    assert str(view["ceph"]["used_bytes"]) == view["image"]["cache_raw_size"]
    assert view["ceph"]["clones"] == 0
    assert view["ceph"]["lock_holder"] is None
    assert view["problems"] == []

    clone = "volume-%s" % uuid.uuid4().hex[:8]
    rbd.RBD().clone(ceph, name, "snap", ceph, clone, features=rbd.RBD_FEATURE_LAYERING)
    try:
        assert status_json(stack, image["id"])["ceph"]["clones"] == 1
    finally:
        rbd.RBD().remove(ceph, clone)

    # A holder record left on a lock object nobody holds is no holder.
    _, admin_ioctx = admin
    lock = "cacheraw.lock." + image["id"]
    admin_ioctx.write_full(lock, b"")
    admin_ioctx.set_xattr(lock, "cacheraw.holder", json.dumps(
        {"host": "dead-host", "pid": 1}).encode())
    try:
        assert status_json(stack, image["id"])["ceph"]["lock_holder"] is None
    finally:
        admin_ioctx.remove_object(lock)

    table = manage(stack, "status", image["id"])
    assert table.returncode == 0, table.stderr
    for key, value in (("  cache_raw_status", "Cached"), ("  snapshot", "protected"),
                       ("  lock holder", "-"), ("problems", "none")):
        assert re.search(r"^%s +%s$" % (key, value), table.stdout, re.M), table.stdout

    listed = manage(stack, "list", "--status", "Cached", "--format", "json")
    assert listed.returncode == 0, listed.stderr
    assert image["id"] in [v["id"] for v in json.loads(listed.stdout)]
    errors = json.loads(manage(stack, "list", "--status", "Error", "--format", "json").stdout)
    assert image["id"] not in [v["id"] for v in errors]
    assert all(v["image"]["cache_raw_status"] == "Error" for v in errors)
    rows = manage(stack, "list").stdout.splitlines()
    assert rows[0].split()[:3] == ["ID", "CACHE_RAW", "STATUS"]
    assert [r for r in rows if r.startswith(image["id"])][0].split()[1:3] == ["True", "Cached"]


def test_status_shows_a_cache_missing_in_ceph(stack, demo_images, qcow2, ceph):
    image = upload(demo_images, qcow2, cache_raw="True")
    assert manage(stack, "recache", image["id"]).returncode == 0
    name = image["id"] + "_raw"
    with rbd.Image(ceph, name) as cache:
        cache.unprotect_snap("snap")
        cache.remove_snap("snap")
    rbd.RBD().remove(ceph, name)
    view = status_json(stack, image["id"])
    assert not view["ceph"]["exists"]
    assert any("no protected snapshot" in p for p in view["problems"])


def test_status_shows_properties_that_break_the_rules(stack, demo_images, service_images,
                                                      qcow2):
    """What Glance's schema cannot refuse (a value the service user wrote) is reported."""
    image = upload(demo_images, qcow2)
    service_images.patch(image["id"], [{"op": "add", "path": "/cache_raw_size", "value": "lots"}])
    view = status_json(stack, image["id"])
    assert any(p.startswith("cache_raw_size is 'lots'") for p in view["problems"]), view
    table = manage(stack, "status", image["id"])
    assert "cache_raw_size is 'lots'" in table.stdout, table.stdout


# -- reconcile and purge-orphans

def plant(ioctx, name, protected=True):
    rbd.RBD().create(ioctx, name, 4 << 20, old_format=False)
    if protected:
        with rbd.Image(ioctx, name) as image:
            image.create_snap("snap")
            image.protect_snap("snap")


def drop(ioctx, name):
    try:
        with rbd.Image(ioctx, name) as image:
            for snap in image.list_snaps():
                if image.is_protected_snap(snap["name"]):
                    image.unprotect_snap(snap["name"])
                image.remove_snap(snap["name"])
        rbd.RBD().remove(ioctx, name)
    except rbd.ImageNotFound:
        pass


@pytest.fixture
def planted(admin):
    """An orphaned cache (no such image) and foreign RBD images that only look alike."""
    _, ioctx = admin
    names = {"orphan": "%s_raw" % uuid.uuid4(),
             "foreign": "foreign-test-%s" % uuid.uuid4().hex[:8],
             "lookalike": "%s_raw" % uuid.uuid4().hex,
             "upper": ("%s_raw" % uuid.uuid4()).upper().replace("_RAW", "_raw")}
    for name in names.values():
        plant(ioctx, name)
    yield names
    for name in names.values():
        drop(ioctx, name)


def test_reconcile_dry_run_says_what_the_sweep_would_do(stack, demo_images, qcow2, ceph,
                                                       planted):
    image = upload(demo_images, qcow2, cache_raw="True")  # no worker: nobody queued it
    done = manage(stack, "reconcile", "--dry-run")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert out.startswith("found ")
    assert "would set cache_raw_status=Queued" in out and "on image %s" % image["id"] in out
    assert "would convert image %s" % image["id"] in out
    assert "would remove cache images/%s" % planted["orphan"] in out
    for name in ("foreign", "lookalike", "upper"):
        assert planted[name] not in out
    # Nothing changed.
    assert "cache_raw_status" not in demo_images.get(image["id"])
    assert set(planted.values()) <= names_in_pool(ceph)


def test_reconcile_queues_and_converts_what_the_sweep_finds(stack, demo_images, qcow2, ceph,
                                                           planted):
    image = upload(demo_images, qcow2, cache_raw="True")  # no worker: nobody queued it
    done = manage(stack, "reconcile", timeout=600)
    out = done.stdout
    # The status and the store property, in one write.
    assert "set cache_raw_status=Queued, store=rbd on image %s" % image["id"] in out, \
        done.stderr
    assert "image %s: cached" % image["id"] in out, done.stderr
    assert "removed cache images/%s" % planted["orphan"] in out
    assert demo_images.get(image["id"])["cache_raw_status"] == "Cached"
    pool = names_in_pool(ceph)
    assert planted["orphan"] not in pool
    assert {planted["foreign"], planted["lookalike"], planted["upper"]} <= pool


def test_purge_orphans_removes_only_orphaned_caches(stack, planted, ceph, admin):
    _, ioctx = admin
    dry = manage(stack, "purge-orphans", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would remove cache images/%s" % planted["orphan"] in dry.stdout
    assert set(planted.values()) <= names_in_pool(ceph)

    done = manage(stack, "purge-orphans")
    assert done.returncode == 0, done.stderr
    assert "removed cache images/%s" % planted["orphan"] in done.stdout
    for name in ("foreign", "lookalike", "upper"):
        assert planted[name] not in done.stdout
    pool = names_in_pool(ceph)
    assert planted["orphan"] not in pool
    assert {planted["foreign"], planted["lookalike"], planted["upper"]} <= pool


def test_purge_orphans_trashes_a_cache_with_clones_then_purges_it(stack, admin, ceph):
    _, ioctx = admin
    orphan = "%s_raw" % uuid.uuid4()
    plant(ioctx, orphan)
    clone = "volume-%s" % uuid.uuid4().hex[:8]
    rbd.RBD().clone(ioctx, orphan, "snap", ioctx, clone, features=rbd.RBD_FEATURE_LAYERING)
    try:
        done = manage(stack, "purge-orphans")
        assert done.returncode == 0, done.stderr
        assert "moved cache images/%s to the trash (1 clones use it)" % orphan in done.stdout
        assert orphan not in names_in_pool(ceph)
        kept = manage(stack, "purge-orphans", "--dry-run")
        assert "kept trashed cache %s" % orphan in kept.stdout
    finally:
        rbd.RBD().remove(ioctx, clone)
    dry = manage(stack, "purge-orphans", "--dry-run")
    assert "would purge trashed cache %s" % orphan in dry.stdout
    done = manage(stack, "purge-orphans")
    assert "purged trashed cache %s" % orphan in done.stdout
    assert not [e for e in rbd.RBD().trash_list(ioctx) if e["name"] == orphan]


# -- check

CHECKS = ("config:", "converter:", "ceph:", "image API endpoint:", "image API write:",
          "message bus:", "Glance notifications:", "Glance direct_url:", "Glance protections:",
          "Glance image schema:")


def check_lines(done):
    lines = done.stdout.splitlines()
    assert [line.split(":")[0] + ":" for line in lines] == list(CHECKS), done.stdout
    return dict(zip(CHECKS, lines))


def test_check_passes_on_the_stack(stack, ceph):
    done = manage(stack, "check")
    assert done.returncode == 0, done.stdout + done.stderr
    for line in check_lines(done).values():
        assert "OK: " in line, line
    # The scratch images are gone.
    assert not [n for n in names_in_pool(ceph) if n.startswith(properties.SCRATCH_PREFIX)]


@pytest.fixture
def read_only_ceph_user(admin, tmp_path):
    cluster, _ = admin
    name = "ro-%s" % uuid.uuid4().hex[:8]
    ret, out, err = cluster.mon_command(json.dumps({
        "prefix": "auth get-or-create", "entity": "client." + name, "format": "plain",
        "caps": ["mon", "profile rbd", "osd", "profile rbd-read-only pool=images"]}), b"",
        timeout=20)
    assert ret == 0, err
    keyring = tmp_path / ("ceph.client.%s.keyring" % name)
    keyring.write_bytes(out)
    yield name, keyring
    cluster.mon_command(json.dumps({"prefix": "auth rm", "entity": "client." + name}), b"",
                        timeout=20)


def test_check_names_missing_ceph_caps(stack, tmp_path, read_only_ceph_user, ceph):
    name, keyring = read_only_ceph_user
    override = conf_file(tmp_path, "[ceph]\nuser = %s\nkeyring = %s\n" % (name, keyring))
    done = manage(stack, "check", extra_conf=override)
    assert done.returncode == 1
    line = check_lines(done)["ceph:"]
    assert line.startswith("ceph:") and "FAILED: client.%s cannot create an RBD image in " \
        "pool images" % name in line, line
    assert "OK" in check_lines(done)["image API write:"]
    assert not [n for n in names_in_pool(ceph) if n.startswith(properties.SCRATCH_PREFIX)]
    no_traceback(done)


def test_check_names_a_user_who_may_not_write_cache_properties(stack, tmp_path):
    demo = stack["keystone"]["users"]["demo"]
    override = conf_file(tmp_path, "[image_api]\nusername = %s\npassword = %s\n"
                         "project_name = %s\n" % (demo["username"], demo["password"],
                                                  demo["project_name"]))
    done = manage(stack, "check", extra_conf=override)
    assert done.returncode == 1
    lines = check_lines(done)
    assert "FAILED: user demo may not write cache_raw_status" in lines["image API write:"]
    assert "403" in lines["image API write:"]
    assert "OK" in lines["ceph:"] and "OK" in lines["image API endpoint:"]
    no_traceback(done)


def test_check_names_a_missing_qemu_img(stack, tmp_path):
    override = conf_file(tmp_path, "[converter]\nqemu_img = /nonexistent/qemu-img\n")
    done = manage(stack, "check", extra_conf=override)
    assert done.returncode == 1
    assert "FAILED: cannot run /nonexistent/qemu-img" in check_lines(done)["converter:"]


def test_check_names_an_unreachable_bus(stack, tmp_path):
    override = conf_file(tmp_path, "[DEFAULT]\ntransport_url = rabbit://u:secret@127.0.0.1:9/\n")
    done = manage(stack, "check", extra_conf=override, timeout=120)
    assert done.returncode == 1
    line = check_lines(done)["message bus:"]
    assert "FAILED: cannot connect to 127.0.0.1:9" in line
    assert "secret" not in done.stdout + done.stderr
    no_traceback(done)


# -- bad arguments

def test_bad_arguments_give_one_line_and_no_traceback(stack, tmp_path):
    unreachable = conf_file(tmp_path, "[image_api]\nendpoint_override = http://127.0.0.1:9\n"
                            "[worker]\nretry_attempts = 1\n")
    missing = str(uuid.uuid4())
    for args, extra, message in (
            (["recache", "../../etc/passwd"], None, "not an image id"),
            (["recache", missing.upper()], None, "not an image id"),
            (["status", missing], None, "image %s not found" % missing),
            (["recache", missing, "--wait"], None, "image %s not found" % missing),
            (["list", "--status", "Bogus"], None, "invalid choice"),
            (["status", missing, "--format", "xml"], None, "invalid choice"),
            (["status", missing], unreachable, "cannot reach the image API"),
            (["status", missing], conf_file(tmp_path, "[ceph]\nconf = /nonexistent\n"),
             "cannot read Ceph configuration file /nonexistent"),
            (["frobnicate"], None, "invalid choice")):
        done = manage(stack, *args, extra_conf=extra)
        assert done.returncode != 0, args
        assert message in done.stderr.strip().splitlines()[-1], (args, done.stderr)
        no_traceback(done)
