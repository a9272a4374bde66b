"""Root disks from the cache: real Nova code with cacheraw's compute driver on the stack's Ceph,
for the oldest and the newest Nova cacheraw supports.

Each Nova runs in a virtual environment of its own (tools/nova-venv.sh, made here when missing):
the driver's unit tests (tests/nova/test_driver.py) and the boots of tests/nova/test_boot.py run
there. The images are uploaded to the stack's Glance and cached by a real worker; Nova's Glance
fixture serves their records as the stack's Glance returns them (cacheraw's properties
included). The image's delete and the disk's reads happen here, on the stack.
"""

import hashlib
import json
import os
import subprocess
import time
import uuid

import pytest
import rbd

from tests.functional.conftest import TOP, pools_as_cacheraw
from tests.functional.helpers import read_rbd
from tests.functional.helpers import small_disk
from tests.functional.helpers import upload
from tests.functional.helpers import wait_status

RELEASES = ("latest", "27")
OTHER_FSID = "0c7d1f44-5a06-403f-bb82-ae7ad0d693a6"
CACHE_FACTS = ("cache_raw", "cache_raw_status", "cache_raw_url", "cache_raw_size",
               "cache_raw_error")


def nova_venv(release):
    """The Python of the Nova release's virtual environment (made once, then reused)."""
    done = subprocess.run([str(TOP / "tools/nova-venv.sh"), release],
                          capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout + done.stderr
    return os.path.join(done.stdout.strip().splitlines()[-1], "bin", "python")


@pytest.fixture(scope="module", params=RELEASES)
def nova_python(request):
    return nova_venv(request.param)


def in_nova(nova_python, test_file, env=None, timeout=600):
    done = subprocess.run([nova_python, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "-W", "ignore::DeprecationWarning", str(TOP / test_file)],
                          capture_output=True, text=True, timeout=timeout, cwd=str(TOP),
                          env=dict(os.environ, **(env or {})))
    print(done.stdout[-6000:], done.stderr[-3000:])
    return done


def test_the_driver_s_unit_tests_pass_in_nova(nova_python):
    done = in_nova(nova_python, "tests/nova/test_driver.py")
    assert done.returncode == 0, done.stdout[-6000:]


@pytest.fixture(scope="module")
def worker(module_worker):
    return module_worker


@pytest.fixture(scope="module")
def cluster(stack):
    """The cluster as the cacheraw user, which reads the vms pool (docs/install.md: Ceph caps
    for Nova)."""
    with pools_as_cacheraw(stack, ("images", stack["ceph"]["vm_pool"])) as pools:
        yield pools


@pytest.fixture(scope="module")
def disk(tmp_path_factory):
    return small_disk(tmp_path_factory, "nova-disk")


class Caches:
    """RBD images named as caches (``<id>_raw@snap``) for forged images, made and removed here
    in the vms pool as Nova's user (in cacheraw's pool the worker would remove them as the
    caches of no image)."""

    def __init__(self, ioctx, raw):
        self.ioctx, self.raw, self.made = ioctx, raw, []

    def make(self, image_id, protected=True):
        name = image_id + "_raw"
        rbd.RBD().create(self.ioctx, name, len(self.raw), old_format=False, features=1)
        self.made.append(name)
        with rbd.Image(self.ioctx, name) as image:
            image.write(self.raw, 0)
            image.create_snap("snap")
            if protected:
                image.protect_snap("snap")

    def remove(self):
        for name in self.made:
            with rbd.Image(self.ioctx, name) as image:
                if image.is_protected_snap("snap"):
                    image.unprotect_snap("snap")
                image.remove_snap("snap")
            rbd.RBD().remove(self.ioctx, name)


def forged(record, fsid, changes, pool):
    """The record of a new image id: ``record`` with a cache_raw_url naming that id's cache, and
    ``changes`` (a None removes a property)."""
    image_id = str(uuid.uuid4())
    image = dict(record, id=image_id, name="forged-%s" % image_id[:8],
                 cache_raw_url="rbd://%s/%s/%s_raw/snap" % (fsid, pool, image_id))
    image.pop("direct_url", None)
    image.update(changes)
    return {k: v for k, v in image.items() if v is not None}


def cases(stack, cached, caches):
    """What each image's root disk must be: a clone of the cache (its parent) or, for each
    doubt, made upstream's way (no parent). Each forged image differs from "a cache made here"
    in one fact."""
    fsid = stack["ceph"]["fsid"]

    vms = stack["ceph"]["vm_pool"]

    def case(name, image, cloned_from=None):
        return {"name": name, "image": image,
                "parent": [cloned_from, image["id"] + "_raw", "snap"] if cloned_from else None}
    found = [case("cached by cacheraw", cached, stack["ceph"]["pool"]),
             case("no cache", forged(cached, fsid, dict.fromkeys(CACHE_FACTS), vms))]
    # name, changed properties, a protected snapshot, fsid and pool of the URL
    for name, changes, protected, url_fsid, pool in (
            ("a cache made here", {}, True, fsid, vms),
            ("Caching", {"cache_raw_status": "Caching"}, True, fsid, vms),
            ("a URL naming another image", {"cache_raw_url": cached["cache_raw_url"]}, True,
             fsid, vms),
            ("another fsid", {}, True, OTHER_FSID, vms),
            ("a missing pool", {}, True, fsid, "gone"),
            ("an unprotected snapshot", {}, False, fsid, vms)):
        image = forged(cached, url_fsid, changes, pool)
        caches.make(image["id"], protected=protected)
        found.append(case(name, image, vms if name == "a cache made here" else None))
    return found


@pytest.fixture(scope="module")
def nova_vms(stack):
    """The vms pool as Nova's user, which owns the root disks."""
    import rados
    conn = rados.Rados(conffile=stack["ceph"]["conf"], rados_id="nova")
    conn.connect(timeout=15)
    ioctx = conn.open_ioctx(stack["ceph"]["vm_pool"])
    yield ioctx
    ioctx.close()
    conn.shutdown()


def test_root_disks_clone_the_cache_or_take_the_upstream_path_and_survive_the_delete(
        stack, nova_python, worker, demo_images, cluster, nova_vms, disk, tmp_path):
    image = upload(demo_images, disk[0], cache_raw="True")
    cached = wait_status(demo_images, image["id"], "Cached")
    schema = demo_images.session.get(demo_images.url + "/schemas/image").json()
    caches = Caches(nova_vms, disk[1])
    vms = cluster[stack["ceph"]["vm_pool"]]
    results = {}
    try:
        facts = {"ceph": {"conf": stack["ceph"]["conf"], "user": "nova",
                          "pool": stack["ceph"]["vm_pool"]},
                 "qcow2": str(disk[0]), "schema": schema,
                 "cases": cases(stack, cached, caches)}
        (tmp_path / "facts.json").write_text(json.dumps(facts))
        done = in_nova(nova_python, "tests/nova/test_boot.py", {
            "CACHERAW_NOVA_FACTS": str(tmp_path / "facts.json"),
            "CACHERAW_NOVA_RESULTS": str(tmp_path / "results.json")})
        if (tmp_path / "results.json").exists():
            results = json.loads((tmp_path / "results.json").read_text())
        assert done.returncode == 0, done.stdout[-6000:]
        ours = results["cached by cacheraw"]["disk"]
        assert read_rbd(vms, ours)[:len(disk[1])] == disk[1]

        # The image's delete: its cache waits in the trash, the disk keeps its data.
        demo_images.delete(image["id"])
        worker.wait_for_log("Image %s: cache has clones; moved to the trash" % image["id"])
        assert image["id"] + "_raw" not in rbd.RBD().list(cluster["images"])
        assert read_rbd(vms, ours)[:len(disk[1])] == disk[1]
    finally:
        # Every root disk of the run, those of a run that stopped half-way too.
        for name in rbd.RBD().list(nova_vms):
            if name.endswith("_disk"):
                remove_quietly(nova_vms, name)
        caches.remove()
    worker.wait_for_log("Purged cache %s_raw" % image["id"], timeout=30)


def remove_quietly(ioctx, name):
    deadline = time.monotonic() + 30
    while True:
        try:
            rbd.RBD().remove(ioctx, name)
            return
        except rbd.ImageNotFound:
            return
        except rbd.ImageBusy:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


# Installing on a compute host: tools/install.sh --nova-venv into a copy of a Nova venv.

@pytest.fixture(scope="module")
def wheels(tmp_path_factory):
    """The wheels of cacheraw and of its Nova shim, as 'make dist' builds them."""
    out = tmp_path_factory.mktemp("nova-wheels")
    python = os.path.join(str(TOP), ".venv", "bin", "python")
    for source in (TOP, TOP / "nova-shim"):
        subprocess.run([python, "-m", "build", "--wheel", "--outdir", str(out), str(source)],
                       check=True, timeout=300, capture_output=True)
    return (next(out.glob("cacheraw-*.whl")), next(out.glob("cacheraw_nova-*.whl")))


def copy_of_nova_venv(nova_python, target):
    """A Nova venv like the test one, but with pip and without cacheraw: what a compute host
    has (uv links the packages from its cache)."""
    uv = str(TOP / ".venv" / "bin" / "uv")
    freeze = subprocess.run([uv, "pip", "freeze", "--python", nova_python], check=True,
                            capture_output=True, text=True, timeout=60).stdout
    wanted = [line for line in freeze.splitlines()
              if "cacheraw" not in line and not line.startswith("-e")]
    (target.parent / "requirements.txt").write_text("\n".join(wanted) + "\n")
    subprocess.run([uv, "venv", "-q", "--seed", "--python", os.path.realpath(nova_python),
                    str(target)], check=True, timeout=120)
    subprocess.run([uv, "pip", "install", "-q", "--no-deps", "--python",
                    str(target / "bin" / "python"), "-r",
                    str(target.parent / "requirements.txt")], check=True, timeout=600)
    return target


def tree(venv):
    """Every file of the venv but compiled bytecode, with its checksum."""
    found = {}
    for path in sorted(venv.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            found[str(path.relative_to(venv))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def install(*args):
    return subprocess.run([str(TOP / "tools/install.sh"), *map(str, args)],
                          capture_output=True, text=True, timeout=300)


LOAD = ("from oslo_utils import importutils; from cacheraw.nova import driver; "
        "assert importutils.import_class('nova.virt.cacheraw.LibvirtDriver') is "
        "driver.CacheRawLibvirtDriver; import nova.virt.cacheraw as s; print(s.__file__)")


def test_install_sh_adds_the_driver_to_nova_s_venv_and_uninstall_leaves_nova_as_it_was(
        wheels, tmp_path):
    # The newest Nova only: the script does the same in any; Nova 27 loads the driver through
    # the shim in the unit tests.
    venv = copy_of_nova_venv(nova_venv("latest"), tmp_path / "nova")
    python = str(venv / "bin" / "python")
    before = tree(venv)
    for _ in range(2):  # a second install changes nothing
        done = install("--nova-venv", venv, "--wheel", wheels[0], "--nova-wheel", wheels[1])
        assert done.returncode == 0, done.stdout + done.stderr
        loaded = subprocess.run([python, "-c", LOAD], capture_output=True, text=True,
                                timeout=120, cwd=str(tmp_path))
        assert loaded.returncode == 0, loaded.stderr[-3000:]
        assert "/site-packages/nova/virt/cacheraw/__init__.py" in loaded.stdout
    installed = tree(venv)
    added = {path.split("site-packages/", 1)[-1] for path in set(installed) - set(before)}
    assert {"nova/virt/cacheraw/__init__.py", "cacheraw/nova/driver.py"} <= added
    assert [p for p in before if installed.get(p) != before[p]] == []

    done = install("--uninstall", "--nova-venv", venv)
    assert done.returncode == 0, done.stdout + done.stderr
    assert tree(venv) == before
    gone = subprocess.run([python, "-c", "import nova.virt.cacheraw"], capture_output=True,
                          timeout=120, cwd=str(tmp_path))
    assert gone.returncode != 0
