"""cacheraw installed on a controller as an operator would, its unit run by a real systemd.

A Debian 12 root with systemd as PID 1 (tools/nspawn.py; built once into .cache/) boots in a
systemd-nspawn container on the host's network. tools/install.sh, taken from the sdist of
`make dist`, installs the wheel into it from a folder of wheels; the worker's configuration
points at the local stack, and systemctl runs the unit as shipped, every hardening line in force.
"""

import configparser
import importlib.util
import io
import os
import re
import shutil
import subprocess
import sys
import time
import uuid

import pytest

from tests.functional.conftest import TOP
from tests.functional.conftest import need
from tests.functional.helpers import FAST
from tests.functional.helpers import names_in_pool
from tests.functional.helpers import upload
from tests.functional.helpers import wait_status

pytestmark = pytest.mark.systemd

UNIT = "cacheraw-worker.service"
SHIPPED_UNIT = TOP / "systemd" / UNIT
RELEASE = "/mnt/release"
WHEELHOUSE = "/mnt/wheelhouse"
# A qemu-img that waits while the flag file exists, so a test can act in mid-conversion. The flag
# is under /usr: qemu-img's sandbox shows it nothing else of the host.
SLOW_FLAG = "/usr/local/lib/cacheraw-test-slow"
SLOW_QEMU_IMG = "/usr/local/bin/slow-qemu-img"
SLOW_QEMU_IMG_TEXT = ('#!/bin/sh\nif [ "$1" = convert ]; then\n'
                      '  while [ -e %s ]; do sleep 0.2; done\nfi\nexec qemu-img "$@"\n' % SLOW_FLAG)
SECURITY_LIMIT = 2.0  # 1.5, and 0.5 for the namespaces and mounts of the qemu-img sandbox


def load_nspawn():
    spec = importlib.util.spec_from_file_location("nspawn", TOP / "tools" / "nspawn.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


nspawn = load_nspawn()


@pytest.fixture(scope="module")
def root():
    need(os.geteuid() == 0, "a systemd-nspawn container needs root")
    for tool in ("systemd-nspawn", "debootstrap", "nsenter", "unshare"):
        need(shutil.which(tool), "%s is missing: run 'make setup'" % tool)
    began = time.monotonic()
    if nspawn.build(nspawn.ROOT):
        print("controller root built in %.0f s" % (time.monotonic() - began))
    return nspawn.ROOT


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """What an operator downloads: the sdist and wheel of `make dist`, and the wheels of every
    dependency (the offline install of install.sh --find-links)."""
    out = tmp_path_factory.mktemp("release")
    subprocess.run([sys.executable, "-m", "build", "--outdir", str(out / "dist"), str(TOP)],
                   check=True, capture_output=True, timeout=300)
    wheel = next((out / "dist").glob("cacheraw-*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--wheel-dir",
                    str(out / "wheelhouse"), str(wheel)], check=True, capture_output=True,
                   timeout=600)
    return out


class Controller:
    """The container, with the worker installed, and the test's ways of driving it."""

    def __init__(self, container, stack, wheel, sdist):
        self.container = container
        self.stack = stack
        self.wheel = "%s/dist/%s" % (RELEASE, wheel.name)
        self.sdist_dir = "/root/" + sdist.name[:-len(".tar.gz")]
        self.sdist = "%s/dist/%s" % (RELEASE, sdist.name)
        self.pool = "systemd-%s" % uuid.uuid4().hex[:12]

    def run(self, *argv, **kwargs):
        return self.container.run(*argv, **kwargs)

    def install(self, *args):
        return self.run("%s/tools/install.sh" % self.sdist_dir, "--wheel", self.wheel,
                        "--find-links", WHEELHOUSE, *args, timeout=600)

    def systemctl(self, *args, check=True):
        return self.run("systemctl", *args, check=check, timeout=180)

    def show(self, *props):
        out = self.systemctl("show", UNIT, *("-p%s" % p for p in props)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def journal(self, *args):
        return self.run("journalctl", "-u", UNIT, "--no-pager", "-o", "cat", *args).stdout

    def cursor(self):
        out = self.run("journalctl", "-n0", "--show-cursor", "--no-pager").stdout
        return out.strip().rsplit("cursor: ", 1)[1]

    def write_config(self, extra=""):
        self.container.write("/etc/cacheraw/cacheraw.conf",
                             controller_conf(self.stack, self.pool, extra), "0640",
                             "root:cacheraw")

    def main_pid(self):
        return int(self.show("MainPID")["MainPID"])

    def proc_status(self, pid):
        text = self.run("cat", "/proc/%d/status" % pid).stdout
        return dict(re.findall(r"^(\w+):\s*(.*)$", text, re.M))


def controller_conf(stack, pool, extra=""):
    """The stack's cacheraw.conf, with the controller's paths and a notification pool of its own."""
    conf = configparser.RawConfigParser(strict=False)
    conf.read(stack["cacheraw_conf"])
    conf["ceph"]["conf"] = "/etc/cacheraw/ceph.conf"
    conf["ceph"]["keyring"] = "/etc/cacheraw/ceph.client.cacheraw.keyring"
    conf["converter"]["conversion_dir"] = "/var/lib/cacheraw/conversions"
    conf["notifications"]["pool"] = pool
    conf.read_string(extra)
    text = io.StringIO()
    conf.write(text)
    return text.getvalue()


def ceph_client_conf(stack):
    """Only what a client needs: the host's ceph.conf names the stack's own folders."""
    ceph = configparser.RawConfigParser()
    ceph.read(stack["ceph"]["conf"])
    keys = ("fsid", "mon host", "auth cluster required", "auth service required",
            "auth client required")
    return "[global]\n" + "".join("%s = %s\n" % (k, ceph["global"][k]) for k in keys)


def set_up_controller(controller, stack):
    """What an operator does: unpack the release, install, configure, enable the unit."""
    controller.run("tar", "-xzf", controller.sdist, "-C", "/root")
    out = controller.install().stdout
    assert "next: write /etc/cacheraw/cacheraw.conf" in out, out
    container = controller.container
    container.write("/etc/cacheraw/ceph.conf", ceph_client_conf(stack))
    keyring = open(stack["ceph"]["users"]["cacheraw"]["keyring"]).read()
    container.write("/etc/cacheraw/ceph.client.cacheraw.keyring", keyring, "0640",
                    "root:cacheraw")
    controller.write_config()
    container.write(SLOW_QEMU_IMG, SLOW_QEMU_IMG_TEXT, "0755")
    controller.systemctl("enable", "--now", UNIT)


@pytest.fixture(scope="module")
def controller(root, release, stack, tmp_path_factory):
    logs = tmp_path_factory.mktemp("controller")
    container = nspawn.Container(root, "cacheraw-test-%d" % os.getpid(), logs / "console.log",
                                 binds=[(release, RELEASE),
                                        (release / "wheelhouse", WHEELHOUSE)])
    wheel = next((release / "dist").glob("cacheraw-*.whl"))
    sdist = next((release / "dist").glob("cacheraw-*.tar.gz"))
    controller = Controller(container, stack, wheel, sdist)
    began = time.monotonic()
    container.boot()
    print("controller booted in %.1f s" % (time.monotonic() - began))
    try:
        began = time.monotonic()
        set_up_controller(controller, stack)
        print("cacheraw installed and started in %.1f s" % (time.monotonic() - began))
        yield controller
    finally:
        (logs / "journal.txt").write_text(controller.run("journalctl", "--no-pager",
                                                         check=False).stdout)
        container.poweroff()


def test_install_again_changes_nothing_and_keeps_the_configuration(controller):
    before = controller.run("sha256sum", "/etc/cacheraw/cacheraw.conf",
                            "/etc/systemd/system/" + UNIT).stdout
    out = controller.install().stdout
    assert "already installed" in out
    assert "kept /etc/cacheraw/cacheraw.conf" in out
    assert controller.run("sha256sum", "/etc/cacheraw/cacheraw.conf",
                          "/etc/systemd/system/" + UNIT).stdout == before
    installed = controller.run("cat", "/etc/systemd/system/" + UNIT).stdout
    shipped = SHIPPED_UNIT.read_text()
    assert installed == shipped.replace("ExecStart=/usr/bin/cacheraw-worker ",
                                        "ExecStart=/opt/cacheraw/bin/cacheraw-worker ")
    assert controller.run("ls", "/etc/cacheraw").stdout.split() == [
        "cacheraw.conf", "cacheraw.conf.sample", "ceph.client.cacheraw.keyring", "ceph.conf"]
    assert controller.run("cacheraw-manage", "--version").returncode == 0
    assert controller.run("ls", "/usr/share/doc/cacheraw", "/usr/share/doc/cacheraw/docs").stdout \
        .split() == ["/usr/share/doc/cacheraw:", "CHANGELOG.md", "LICENSE", "README.md", "docs",
                     "/usr/share/doc/cacheraw/docs:",
                     *sorted(p.name for p in (TOP / "docs").glob("*.md"))]


def test_start_returns_after_ready(controller):
    cursor = controller.cursor()
    controller.systemctl("restart", UNIT)
    # Type=notify: systemctl returned, so READY=1 came, after the listener started.
    state = controller.show("ActiveState", "SubState", "StatusText", "NRestarts")
    assert (state["ActiveState"], state["SubState"]) == ("active", "running"), state
    assert state["StatusText"].startswith("listening on exchange")
    assert "active (running)" in controller.systemctl("status", UNIT).stdout
    lines = controller.journal("--after-cursor", cursor).splitlines()
    started = [i for i, line in enumerate(lines) if "cacheraw-worker" in line and "started" in line]
    description = re.search(r"^Description=(.*)$", SHIPPED_UNIT.read_text(), re.M)[1]
    assert started and started[0] < lines.index("Started %s - %s." % (UNIT, description)), lines
    # No line of the unit was refused or ignored by this systemd.
    assert not [line for line in controller.run("journalctl", "-b", "--no-pager", "-o", "cat")
                .stdout.splitlines() if UNIT in line and ("nknown" in line or "gnoring" in line)]


def test_operators_check_passes_on_the_controller(controller):
    done = controller.run("cacheraw-manage", "--config-file", "/etc/cacheraw/cacheraw.conf",
                          "check", check=False, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_hardening_line_is_in_force(controller):
    pid = controller.main_pid()
    status = controller.proc_status(pid)
    uid = controller.run("id", "-u", "cacheraw").stdout.strip()
    assert status["Uid"].split()[0] == uid != "0"
    assert status["NoNewPrivs"] == "1"
    assert status["Seccomp"] == "2"  # SystemCallFilter=
    assert int(status["CapEff"], 16) == int(status["CapBnd"], 16) == 0
    mounts = controller.run("cat", "/proc/%d/mountinfo" % pid).stdout.splitlines()
    by_point = {line.split()[4]: line for line in mounts}
    assert by_point["/"].split()[5].split(",")[0] == "ro"  # ProtectSystem=strict
    assert by_point["/var/lib/cacheraw/conversions"].split()[5].split(",")[0] == "rw"
    assert "hidepid=invisible" in by_point["/proc"]  # ProtectProc=invisible
    assert "systemd-private-" in by_point["/tmp"].split()[3]  # PrivateTmp=
    init_mounts = controller.run("cat", "/proc/1/mountinfo").stdout.splitlines()
    init_dev = next(line for line in init_mounts if line.split()[4] == "/dev")
    assert by_point["/dev"].split()[2] != init_dev.split()[2]  # PrivateDevices=: a /dev of its own
    for ns in ("user", "mnt"):  # PrivateUsers=, the mount namespace of the sandbox
        assert controller.run("readlink", "/proc/%d/ns/%s" % (pid, ns)).stdout != \
            controller.run("readlink", "/proc/1/ns/%s" % ns).stdout
    lines = hardening_lines()
    shown = controller.show(*lines)
    for key, value in lines.items():
        assert shown[key] == shown_as(key, value, shown[key]), (key, value, shown[key])
    assert controller.show("User", "StateDirectory", "UMask") == {
        "User": "cacheraw", "StateDirectory": "cacheraw/conversions", "UMask": "0077"}


def hardening_lines():
    """The unit's hardening section as shipped: {key: value}."""
    text = SHIPPED_UNIT.read_text().split("# Hardening", 1)[1].split("[Install]")[0]
    return dict(line.split("=", 1) for line in text.splitlines()
                if "=" in line and not line.startswith("#"))


def shown_as(key, value, shown):
    """How `systemctl show` spells a unit file's setting (the shown value where it is a
    rewording of the same thing)."""
    if value == "true":
        return "yes"
    if key in ("RestrictAddressFamilies", "RestrictNamespaces") and \
            sorted(shown.split()) == sorted(value.split()):
        return shown
    if key == "SystemCallFilter" and shown:
        return shown  # the expanded list of system calls; Seccomp=2 above shows it applies
    if key == "SystemCallErrorNumber" and shown in ("1", "EPERM", "eperm"):
        return shown
    return value


def test_images_from_ceph_and_through_conversion_dir_are_cached(controller, demo_images,
                                                                qcow2, ceph):
    in_ceph = upload(demo_images, qcow2, cache_raw="True")
    outside = upload(demo_images, qcow2, headers={"X-Image-Meta-Store": "local"},
                     cache_raw="True")
    assert wait_status(demo_images, in_ceph["id"], "Cached", timeout=90)["store"] == "rbd"
    assert wait_status(demo_images, outside["id"], "Cached", timeout=90)["store"] == "file"
    assert {in_ceph["id"] + "_raw", outside["id"] + "_raw"} <= names_in_pool(ceph)
    journal = controller.journal()
    assert "Image %s: downloaded" % outside["id"] in journal
    assert controller.run("ls", "-A", "/var/lib/cacheraw/conversions").stdout == ""
    assert controller.run("stat", "-c", "%U %a", "/var/lib/cacheraw/conversions"
                          ).stdout.split() == ["cacheraw", "700"]
    controller.images_seen = [in_ceph["id"], outside["id"]]


def test_journal_tells_one_image_story_by_its_id(controller):
    image_id = controller.images_seen[0]
    story = [line for line in controller.journal().splitlines() if image_id in line]
    steps = ["queued", "caching", "converted to RAW in", "cached as"]
    found = [next(i for i, line in enumerate(story) if step in line) for step in steps]
    assert found == sorted(found), story


def test_security_exposure_of_the_installed_unit(controller):
    out = controller.run("systemd-analyze", "security", "--no-pager", UNIT).stdout
    score = float(re.search(r"Overall exposure level for %s: ([\d.]+)" % re.escape(UNIT),
                            out)[1])
    print("systemd-analyze security of the installed unit: %.1f" % score)
    assert score <= SECURITY_LIMIT, out


def test_watchdog_kills_a_stuck_worker_and_systemd_restarts_it(controller, demo_images, qcow2,
                                                               ceph):
    controller.run("mkdir", "-p", "/etc/systemd/system/%s.d" % UNIT)
    controller.container.write("/etc/systemd/system/%s.d/watchdog.conf" % UNIT,
                               "[Service]\nWatchdogSec=6\n")
    controller.write_config(FAST + "[converter]\nqemu_img = %s\n" % SLOW_QEMU_IMG)
    controller.run("touch", SLOW_FLAG)
    try:
        controller.systemctl("daemon-reload")
        controller.systemctl("restart", UNIT)
        restarts = int(controller.show("NRestarts")["NRestarts"])
        image = upload(demo_images, qcow2, cache_raw="True")
        wait_caching(controller, demo_images, image["id"])
        stuck = controller.main_pid()
        controller.run("sh", "-c", "kill -STOP %d" % stuck)
        wait_for(lambda: int(controller.show("NRestarts")["NRestarts"]) == restarts + 1
                 and controller.show("ActiveState")["ActiveState"] == "active", 90,
                 "a restart after the watchdog timeout")
        assert controller.main_pid() != stuck
        assert "Watchdog timeout" in controller.journal()
        controller.run("rm", "-f", SLOW_FLAG)
        wait_status(demo_images, image["id"], "Cached", timeout=120)
        assert controller.journal().count("Image %s: converted to RAW in" % image["id"]) == 1
        assert image["id"] + "_raw" in names_in_pool(ceph)
    finally:
        controller.run("rm", "-f", SLOW_FLAG, "/etc/systemd/system/%s.d/watchdog.conf" % UNIT)
        controller.systemctl("daemon-reload")


def test_stop_during_a_conversion_is_clean_and_leaves_it_queued(controller, demo_images,
                                                                 qcow2, ceph):
    controller.write_config(FAST + "[converter]\nqemu_img = %s\n[worker]\nshutdown_timeout = 5\n"
                            % SLOW_QEMU_IMG)
    controller.run("touch", SLOW_FLAG)
    try:
        controller.systemctl("restart", UNIT)
        image = upload(demo_images, qcow2, cache_raw="True")
        wait_caching(controller, demo_images, image["id"])
        began = time.monotonic()
        controller.systemctl("stop", "--no-block", UNIT)
        # STOPPING=1 and its status reached systemd while the conversion still ran.
        wait_for(lambda: controller.show("StatusText")["StatusText"]
                 == "finishing running conversions", 10, "the worker's STOPPING=1")
        wait_for(lambda: controller.show("ActiveState")["ActiveState"] == "inactive", 60,
                 "the worker stopped")
        assert time.monotonic() - began < 5 + 20
        state = controller.show("Result", "ExecMainCode", "ExecMainStatus")
        assert state == {"Result": "success", "ExecMainCode": "1", "ExecMainStatus": "0"}, state
        assert demo_images.get(image["id"])["cache_raw_status"] == "Queued"
        assert image["id"] + "_raw" not in names_in_pool(ceph)
    finally:
        controller.run("rm", "-f", SLOW_FLAG)
    controller.systemctl("start", UNIT)
    wait_status(demo_images, image["id"], "Cached", timeout=90)


def test_bad_configuration_exits_2_with_one_line_and_no_restart_loop(controller):
    controller.systemctl("stop", UNIT)
    controller.write_config("[ceph]\nkeyring = /etc/cacheraw/missing.keyring\n")
    cursor = controller.cursor()
    try:
        assert controller.systemctl("start", UNIT, check=False).returncode != 0
        state = controller.show("Result", "ExecMainStatus", "NRestarts", "ActiveState")
        # systemd has decided: a restart to come shows as SubState auto-restart for
        # RestartSec=5; "failed" is the end (RestartPreventExitStatus=2).
        wait_for(lambda: controller.show("ActiveState", "SubState")
                 == {"ActiveState": "failed", "SubState": "failed"}, 30, "the unit failed")
        assert controller.show("NRestarts", "ActiveState") == {
            "NRestarts": state["NRestarts"], "ActiveState": "failed"}
        assert (state["Result"], state["ExecMainStatus"]) == ("exit-code", "2")
        lines = controller.run("journalctl", "-u", UNIT, "-t", "cacheraw-worker", "--no-pager",
                               "-o", "cat", "--after-cursor", cursor).stdout.splitlines()
        assert len(lines) == 1 and lines[0].startswith("cacheraw-worker: error: "), lines
        assert "missing.keyring" in lines[0]
    finally:
        controller.write_config()
        controller.systemctl("reset-failed", UNIT)
    controller.systemctl("start", UNIT)


# An older Cinder than the stack's, with the libraries of its day (tools/cinder-releases.txt):
# the one an install that resolved dependencies would most likely have upgraded.
CINDER_OF_THE_HOST = ("25", "2024-10-10")


@pytest.fixture(scope="module")
def cinder_venv(release, tmp_path_factory):
    """Cinder's own virtual environment on a cinder-volume host, as deployment tools make one
    (Debian's Python; pip and setuptools of that day in it: its keystonemiddleware imports
    pkg_resources), built here and unpacked at the same path in the container."""
    path = tmp_path_factory.mktemp("cinder-host") / "venv"
    uv = [sys.executable.rsplit("/", 1)[0] + "/uv"]
    subprocess.run(uv + ["venv", "-q", "-p", "/usr/bin/python3", str(path)],
                   check=True, capture_output=True, timeout=120)
    version, as_of = CINDER_OF_THE_HOST
    subprocess.run(uv + ["pip", "install", "-q", "-p", str(path / "bin/python"),
                         "--exclude-newer", as_of, "cinder==%s.*" % version, "pip", "setuptools"],
                   check=True, capture_output=True, timeout=600)
    subprocess.run(["tar", "-cf", str(release / "cinder-venv.tar"), "-C", "/",
                    str(path).lstrip("/")], check=True, timeout=300)
    return str(path)


def freeze(controller, venv):
    """{name: version or source} of the packages in a virtual environment."""
    lines = controller.run(venv + "/bin/pip", "freeze", "--all").stdout.splitlines()
    return dict(re.split(r"==| @ ", line, maxsplit=1) for line in lines if line.strip())


def test_the_cinder_driver_enters_cinder_s_venv_alone(controller, cinder_venv):
    controller.run("tar", "-xf", RELEASE + "/cinder-venv.tar", "-C", "/", timeout=300)
    before = freeze(controller, cinder_venv)
    assert before["cinder"].startswith(CINDER_OF_THE_HOST[0] + ".")
    out = controller.run("%s/tools/install.sh" % controller.sdist_dir, "--cinder-venv",
                         cinder_venv, "--wheel", controller.wheel, timeout=300).stdout
    assert "without dependencies" in out
    after = freeze(controller, cinder_venv)
    # Cinder's package list is unchanged but for cacheraw: nothing upgraded, nothing added.
    assert {k: v for k, v in after.items() if k != "cacheraw"} == before
    assert "cacheraw" in after and "cacheraw" not in before
    controller.run(cinder_venv + "/bin/python", "-c",
                   "from cacheraw.cinder import driver\n"
                   "from cinder.volume.drivers import rbd\n"
                   "assert issubclass(driver.CacheRawRBDDriver, rbd.RBDDriver)")
    # Again (a new build of the same version): cacheraw replaced, the rest as it was.
    controller.run("%s/tools/install.sh" % controller.sdist_dir, "--cinder-venv", cinder_venv,
                   "--wheel", controller.wheel, timeout=300)
    assert freeze(controller, cinder_venv) == after


def test_uninstall_keeps_configuration_and_journal(controller):
    out = controller.run("%s/tools/install.sh" % controller.sdist_dir, "--uninstall").stdout
    assert "kept" in out
    assert controller.systemctl("is-active", UNIT, check=False).stdout.strip() == "inactive"
    for gone in ("/opt/cacheraw", "/etc/systemd/system/" + UNIT, "/usr/local/bin/cacheraw-worker",
                 "/usr/share/doc/cacheraw"):
        assert controller.run("test", "-e", gone, check=False).returncode == 1, gone
    assert controller.run("test", "-f", "/etc/cacheraw/cacheraw.conf").returncode == 0
    assert "started" in controller.journal()
    assert controller.run("id", "cacheraw").returncode == 0


def wait_caching(controller, images, image_id):
    wait_status(images, image_id, "Caching", timeout=60)
    wait_for(lambda: "Image %s: caching" % image_id in controller.journal(), 30,
             "the conversion of %s" % image_id)


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.3)
    raise AssertionError("%s: not seen in %ss" % (what, timeout))
