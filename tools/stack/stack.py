"""The local stack cacheraw is run and tested against, on one machine.

A one-node Ceph cluster (bluestore in a sparse file; CACHERAW_STACK_OSD=memstore keeps it in
memory), RabbitMQ, MariaDB, Keystone, Glance and Cinder (its volume backend is cacheraw's driver),
all bound to 127.0.0.1 on non-default ports, with every file they write under one state folder
(default ``.stack/``).

    stack.py up       start everything (does nothing when the stack already runs)
    stack.py schemas  make the database schemas the stack loads (once per environment: make setup)
    stack.py down     stop exactly the processes ``up`` started, by their pid files
    stack.py status   say what runs
    stack.py stop-service glance|rabbitmq|ceph-osd, start-service glance|rabbitmq|ceph-osd
                      an outage of one service, for the tests (ceph-osd: bluestore only)
    stack.py glance-variant [--set SECTION.OPTION=VALUE ...]
                      restart Glance with these settings over its own (none: its own again)

Everything the stack made is described in ``<state>/stack.json`` for the tests and tools.
"""

import argparse
import concurrent.futures
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

TOP = Path(__file__).resolve().parents[2]
STATE = Path(os.environ.get("CACHERAW_STACK_DIR", TOP / ".stack")).resolve()
VENV_BIN = Path(sys.executable).parent
HOST = "127.0.0.1"
# CACHERAW_STACK_PORT_OFFSET (a multiple of 1000) moves every port, so that several stacks, each
# with its own state folder, can run side by side.
PORT_OFFSET = int(os.environ.get("CACHERAW_STACK_PORT_OFFSET", "0"))
PORTS = {name: port + PORT_OFFSET for name, port in {
    "ceph-mon": 13300,  # v2; v1 is the next port
    "epmd": 14369,
    "rabbitmq": 15673,
    "rabbitmq-dist": 15674,
    "keystone": 15357,
    "glance": 19292,
    "mariadb": 13306,
    "cinder": 18776,
}.items()}
CEPH_PORT_RANGE = (16800 + PORT_OFFSET, 16899 + PORT_OFFSET)
# The port of the tests' own web server on 127.0.0.1, the one source Glance's web-download
# accepts here (its [import_filtering_opts] below).
WEB_DOWNLOAD_PORT = 18090 + PORT_OFFSET
MEMSTORE_BYTES = int(os.environ.get("CACHERAW_STACK_MEMSTORE_MIB", "3072")) * 1024 * 1024
# bluestore keeps the OSD's data in a sparse file, so that the OSD can be stopped and started
# again (an outage); memstore loses everything when its OSD stops.
OSD_STORE = os.environ.get("CACHERAW_STACK_OSD", "bluestore")
BLUESTORE_BYTES = int(os.environ.get("CACHERAW_STACK_BLUESTORE_MIB", "8192")) * 1024 * 1024
WITH_MGR = os.environ.get("CACHERAW_STACK_MGR", "1") == "1"
POOL = "images"
VOLUME_POOL = "volumes"
# Nova's ephemeral disks ([libvirt] images_rbd_pool): the Nova functional tests' root disks.
VM_POOL = "vms"
# The volume backends of Cinder, each with a volume type of its name: "cacheraw" (cacheraw's
# driver, the default type), "upstream" (Cinder's own RBD driver) and "imagecache" (Cinder's own
# RBD driver with its image-volume cache), for comparisons. Each backend is one more process.
CINDER_DRIVERS = {
    "cacheraw": "cacheraw.cinder.driver.CacheRawRBDDriver",
    "upstream": "cinder.volume.drivers.rbd.RBDDriver",
    "imagecache": "cinder.volume.drivers.rbd.RBDDriver",
}
CINDER_BACKENDS = [b.strip() for b in os.environ.get(
    "CACHERAW_STACK_CINDER_BACKENDS", "cacheraw").split(",") if b.strip()]
# The schemas of the services' databases, made by "stack.py schemas" for this environment.
SCHEMA_DIR = VENV_BIN.parent / "cacheraw-stack-schemas"
# CACHERAW_STACK_OPENSTACK=<series> (a row of tools/cinder-releases.txt, 2024.1 say): Keystone,
# Glance and Cinder of that release, from the environment tools/setup.sh makes for it
# (.venv-openstack-<series>: the row's Python, the services with the libraries of their day,
# cacheraw's driver without dependencies).
OPENSTACK_SERIES = os.environ.get("CACHERAW_STACK_OPENSTACK", "")
SERVICES_BIN = (TOP / (".venv-openstack-%s" % OPENSTACK_SERIES) / "bin" if OPENSTACK_SERIES
                else VENV_BIN)
DATABASES = ("keystone", "glance", "cinder")
CMD_TIMEOUT = 60
RABBIT_VHOST = "openstack"
RABBIT_USER = "openstack"

# Order matters for "down": consumers first, Ceph last.
SERVICES = ["cinder-volume", "cinder-scheduler", "cinder-api", "glance", "keystone", "mariadb",
            "rabbitmq", "epmd", "ceph-mgr", "ceph-osd", "ceph-mon"]


class StackError(Exception):
    pass


# --- small helpers -------------------------------------------------------------------------------

def log(msg):
    print("stack: %s" % msg, flush=True)


def timed(func):
    """Log how long a step of the start-up took (for whoever makes it faster)."""
    def step(*args):
        began = time.monotonic()
        result = func(*args)
        with open(STATE / "log" / "startup-times.log", "a") as f:
            f.write("%s %.1f s\n" % (func.__name__, time.monotonic() - began))
        return result
    step.__name__ = func.__name__
    return step


def run(argv, timeout=CMD_TIMEOUT, env=None, cwd=None, input=None):
    try:
        done = subprocess.run(argv, env=env, cwd=cwd, input=input, capture_output=True,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise StackError("%s timed out after %ss" % (argv[0], timeout)) from None
    if done.returncode != 0:
        raise StackError("%s failed (%s): %s" % (" ".join(map(str, argv[:3])), done.returncode,
                                                 (done.stderr or done.stdout).strip()[-2000:]))
    return done.stdout


def pid_file(service):
    return STATE / "pids" / ("%s.pid" % service)


def start(service, argv, log_name=None, env=None, cwd=None):
    """Start a daemon in its own process group and record its pid."""
    out = open(STATE / "log" / (log_name or "%s.out" % service), "ab")
    proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env=env, cwd=cwd, start_new_session=True)
    pid_file(service).write_text("%d\n" % proc.pid)
    return proc


def read_pid(service):
    try:
        return int(pid_file(service).read_text().strip())
    except (OSError, ValueError):
        return None


def alive(pid):
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is not alive.
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def port_open(port):
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((HOST, port)) == 0


def wait_for(what, check, timeout, proc=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise StackError("%s exited with %s; see %s" % (what, proc.returncode, STATE / "log"))
        try:
            if check():
                return
        except Exception:  # noqa: BLE001 - not ready yet, whatever the reason
            pass
        time.sleep(0.1)
    raise StackError("%s not ready after %ss; see %s" % (what, timeout, STATE / "log"))


def http_ok(url):
    with urllib.request.urlopen(url, timeout=2) as resp:
        return resp.status < 500


def write(path, text, mode=0o644):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)


# --- Ceph ----------------------------------------------------------------------------------------

def ceph_conf_text(fsid):
    d = STATE / "ceph"
    mon = PORTS["ceph-mon"]
    return f"""[global]
fsid = {fsid}
mon host = [v2:{HOST}:{mon},v1:{HOST}:{mon + 1}]
mon initial members = a
public addr = {HOST}
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
ms bind port min = {CEPH_PORT_RANGE[0]}
ms bind port max = {CEPH_PORT_RANGE[1]}
osd pool default size = 1
osd pool default min size = 1
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool delete = true
mon warn on pool no redundancy = false
mon data avail warn = 1
run dir = {d}/run
admin socket = {d}/run/$name.asok
pid file = {d}/run/$name.pid
log file = {STATE}/log/ceph-$name.log
crash dir = {d}/crash
[mon]
mon data = {d}/mon.$id
keyring = {d}/mon.$id/keyring
paxos propose interval = 0.1
paxos min wait = 0.01
[mgr]
mgr data = {d}/mgr.$id
keyring = {d}/mgr.$id/keyring
mgr initial modules =
# Pool statistics (ceph df) a second after a write instead of five, for the bench.
mgr stats period = 1
mgr disabled modules = dashboard prometheus restful
[osd]
osd data = {d}/osd.$id
keyring = {d}/osd.$id/keyring
osd memory target = 939524096
{osd_store_conf()}[client]
keyring = {d}/ceph.$name.keyring
"""


def osd_store_conf():
    if OSD_STORE == "memstore":
        return "osd objectstore = memstore\nmemstore device bytes = %d\n" % MEMSTORE_BYTES
    if OSD_STORE != "bluestore":
        raise StackError("CACHERAW_STACK_OSD must be bluestore or memstore, not %r" % OSD_STORE)
    # A sparse file: only what is written takes disk space. Small caches keep the OSD's memory
    # near that of memstore.
    return "\n".join([
        "osd objectstore = bluestore",
        "bluestore block create = true",
        "bluestore block size = %d" % BLUESTORE_BYTES,
        "bluestore fsck on mount = false",
        "bluestore cache autotune = false",
        "bluestore cache size = 134217728",
        ""])


@timed
def ceph_up(facts):
    d = STATE / "ceph"
    for sub in ("run", "crash", "mon.a", "osd.0", "mgr.x"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    fsid = str(uuid.uuid4())
    conf = d / "ceph.conf"
    write(conf, ceph_conf_text(fsid))
    admin_keyring = d / "ceph.client.admin.keyring"
    mon_keyring = d / "mon-bootstrap.keyring"  # outside mon data: --mkfs wants an empty dir
    run(["ceph-authtool", "--create-keyring", mon_keyring, "--gen-key", "-n", "mon.",
         "--cap", "mon", "allow *"])
    run(["ceph-authtool", "--create-keyring", admin_keyring, "--gen-key", "-n", "client.admin",
         "--cap", "mon", "allow *", "--cap", "osd", "allow *", "--cap", "mgr", "allow *"])
    run(["ceph-authtool", mon_keyring, "--import-keyring", admin_keyring])
    mon = PORTS["ceph-mon"]
    run(["monmaptool", "--create", "--fsid", fsid, "--addv", "a",
         "[v2:%s:%d,v1:%s:%d]" % (HOST, mon, HOST, mon + 1), d / "monmap"])
    run(["ceph-mon", "-c", conf, "--mkfs", "-i", "a", "--monmap", d / "monmap",
         "--keyring", mon_keyring])
    start("ceph-mon", ["ceph-mon", "-f", "-c", str(conf), "-i", "a"])

    import rados  # noqa: E402 - only the set-up uses client.admin
    cluster = rados.Rados(conffile=str(conf), name="client.admin")
    cluster.connect(timeout=20)
    try:
        osd_up(cluster, conf)
        if WITH_MGR:
            mgr_up(cluster, conf)
        pool_up(cluster, POOL)
        pool_up(cluster, VOLUME_POOL)
        pool_up(cluster, VM_POOL)
        mirroring_up(cluster, VOLUME_POOL)
        facts["ceph"] = {
            "conf": str(conf), "fsid": fsid, "pool": POOL, "volume_pool": VOLUME_POOL,
            "vm_pool": VM_POOL,
            "objectstore": OSD_STORE,
            "users": {name: ceph_user(cluster, name, caps)
                      for name, caps in CEPH_CAPS.items()},
        }
    finally:
        cluster.shutdown()


def mon_command(cluster, cmd, inbuf=b""):
    ret, out, err = cluster.mon_command(json.dumps(cmd), inbuf, timeout=20)
    if ret != 0:
        raise StackError("ceph %s failed (%s): %s" % (cmd["prefix"], ret, err))
    return out


def osd_up(cluster, conf):
    osd_uuid = str(uuid.uuid4())
    key = run(["ceph-authtool", "--gen-print-key"]).strip()
    out = mon_command(cluster, {"prefix": "osd new", "uuid": osd_uuid, "format": "json"},
                      json.dumps({"cephx_secret": key}).encode())
    osd_id = json.loads(out)["osdid"]
    run(["ceph-authtool", "--create-keyring", STATE / "ceph" / ("osd.%d" % osd_id) / "keyring",
         "--name", "osd.%d" % osd_id, "--add-key", key])
    run(["ceph-osd", "-c", conf, "-i", str(osd_id), "--mkfs", "--osd-uuid", osd_uuid],
        timeout=120)
    osd_start(cluster, conf)


def osd_start(cluster, conf):
    proc = start("ceph-osd", ["ceph-osd", "-f", "-c", str(conf), "-i", "0"])

    def osd_is_up():
        stat = json.loads(mon_command(cluster, {"prefix": "osd stat", "format": "json"}))
        return stat.get("num_up_osds", stat.get("osdmap", {}).get("num_up_osds")) == 1
    wait_for("ceph-osd", osd_is_up, 60, proc)


def osd_restart():
    """Start the stopped OSD again (its data survives on bluestore)."""
    import rados  # noqa: E402 - only the stack's own tooling uses client.admin
    conf = STATE / "ceph" / "ceph.conf"
    cluster = rados.Rados(conffile=str(conf), name="client.admin")
    cluster.connect(timeout=20)
    try:
        osd_start(cluster, conf)
    finally:
        cluster.shutdown()


def osd_stoppable():
    facts = json.loads((STATE / "stack.json").read_text())
    if facts["ceph"].get("objectstore") != "bluestore":
        raise StackError("the OSD runs on memstore, which loses its data when stopped: "
                         "start the stack with CACHERAW_STACK_OSD=bluestore")


def mgr_up(cluster, conf):
    out = mon_command(cluster, {"prefix": "auth get-or-create", "entity": "mgr.x",
                                "caps": ["mon", "allow profile mgr", "osd", "allow *",
                                         "mds", "allow *"]})
    write(STATE / "ceph" / "mgr.x" / "keyring", out.decode(), 0o600)
    start("ceph-mgr", ["ceph-mgr", "-f", "-c", str(conf), "-i", "x"])


def pool_up(cluster, pool):
    import rbd
    mon_command(cluster, {"prefix": "osd pool create", "pool": pool, "pg_num": 8, "pgp_num": 8})
    with cluster.open_ioctx(pool) as ioctx:
        rbd.RBD().pool_init(ioctx, True)


def mirroring_up(cluster, pool):
    """RBD mirroring in image mode, as a replicated volume type needs it of Cinder's pool (there
    is no second cluster: the images are mirrored to none, which Ceph allows)."""
    import rbd
    with cluster.open_ioctx(pool) as ioctx:
        rbd.RBD().mirror_mode_set(ioctx, rbd.RBD_MIRROR_MODE_IMAGE)


# The caps of the Ceph documentation for Glance, Cinder and Nova. cacheraw reads the volumes and
# vms pools only to see the clones of its caches there (docs/install.md: "Ceph caps").
CEPH_CAPS = {
    "glance": ["mon", "profile rbd", "osd", "profile rbd pool=%s" % POOL,
               "mgr", "profile rbd pool=%s" % POOL],
    "cacheraw": ["mon", "profile rbd",
                 "osd", "profile rbd pool=%s, profile rbd-read-only pool=%s, "
                        "profile rbd-read-only pool=%s" % (POOL, VOLUME_POOL, VM_POOL),
                 "mgr", "profile rbd pool=%s" % POOL],
    "cinder": ["mon", "profile rbd",
               "osd", "profile rbd pool=%s, profile rbd-read-only pool=%s" % (VOLUME_POOL, POOL),
               "mgr", "profile rbd pool=%s" % VOLUME_POOL],
    "nova": ["mon", "profile rbd",
             "osd", "profile rbd pool=%s, profile rbd-read-only pool=%s" % (VM_POOL, POOL),
             "mgr", "profile rbd pool=%s" % VM_POOL],
}


def ceph_user(cluster, name, caps):
    entity = "client.%s" % name
    out = mon_command(cluster, {"prefix": "auth get-or-create", "entity": entity, "format": "plain",
                                "caps": caps})
    keyring = STATE / "ceph" / ("ceph.%s.keyring" % entity)
    write(keyring, out.decode(), 0o600)
    return {"name": name, "keyring": str(keyring)}


# --- RabbitMQ ------------------------------------------------------------------------------------

def rabbit_env():
    d = STATE / "rabbitmq"
    env = dict(os.environ)
    env.update({
        "HOME": str(d),
        "RABBITMQ_CONF_ENV_FILE": str(d / "rabbitmq-env.conf"),
        "RABBITMQ_NODENAME": "cacheraw-stack@localhost",
        "RABBITMQ_NODE_IP_ADDRESS": HOST,
        "RABBITMQ_NODE_PORT": str(PORTS["rabbitmq"]),
        "RABBITMQ_DIST_PORT": str(PORTS["rabbitmq-dist"]),
        "ERL_EPMD_ADDRESS": HOST,
        "ERL_EPMD_PORT": str(PORTS["epmd"]),
        "RABBITMQ_MNESIA_BASE": str(d / "mnesia"),
        "RABBITMQ_LOG_BASE": str(STATE / "log" / "rabbitmq"),
        "RABBITMQ_PID_FILE": str(d / "rabbitmq.pid"),
        "RABBITMQ_CONFIG_FILE": str(d / "rabbitmq.conf"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(d / "enabled_plugins"),
    })
    return env


@timed
def rabbit_up(facts):
    d = STATE / "rabbitmq"
    d.mkdir(parents=True, exist_ok=True)
    password = secrets.token_hex(12)
    write(d / "rabbitmq-env.conf", "")
    write(d / "enabled_plugins", "[].\n")
    write(d / "rabbitmq.conf", "\n".join([
        "listeners.tcp.default = %s:%d" % (HOST, PORTS["rabbitmq"]),
        "loopback_users = none",
        "default_vhost = %s" % RABBIT_VHOST,
        "default_user = %s" % RABBIT_USER,
        "default_pass = %s" % password,
        "default_permissions.configure = .*",
        "default_permissions.read = .*",
        "default_permissions.write = .*",
        "log.console = false",
        "",
    ]), 0o600)
    write(d / ".erlang.cookie", secrets.token_hex(16), 0o400)
    env = rabbit_env()
    epmd = start("epmd", ["epmd", "-address", HOST, "-port", str(PORTS["epmd"])], env=env)
    wait_for("epmd", lambda: port_open(PORTS["epmd"]), 10, epmd)
    rabbit_start()
    facts["rabbitmq"] = {
        "transport_url": "rabbit://%s:%s@%s:%d/%s" % (RABBIT_USER, password, HOST,
                                                      PORTS["rabbitmq"], RABBIT_VHOST),
    }


def rabbit_start():
    proc = start("rabbitmq", ["/usr/lib/rabbitmq/bin/rabbitmq-server"], env=rabbit_env())
    wait_for("rabbitmq", lambda: port_open(PORTS["rabbitmq"]), 40, proc)


# --- MariaDB -------------------------------------------------------------------------------------

def mariadb_conf_text(d, port):
    network = ("port = %d\nbind-address = %s" % (port, HOST)) if port else "skip-networking"
    return f"""[mariadbd]
datadir = {d}/data
socket = {d}/mysqld.sock
pid-file = {d}/mysqld.pid
# Its own temporary folder: two stacks that start at once (make test) once collided in /tmp
# ("Error on delete of '/tmp/#sql-temptable-...'") while installing their system tables.
tmpdir = {d}/tmp
log-error = {STATE if port else d}/log/mariadb.log
{network}
skip-name-resolve
character-set-server = utf8mb4
collation-server = utf8mb4_general_ci
max_connections = 400
innodb_buffer_pool_size = 64M
innodb_log_file_size = 16M
# A test stack: durability across a power cut is not needed, speed is.
innodb_flush_log_at_trx_commit = 2
innodb_doublewrite = 0
sync_binlog = 0
skip-log-bin
"""


def mariadb_start(d, port, service="mariadb"):
    """Initialise a MariaDB data folder in ``d`` and start a server on it (on the unix socket
    only when ``port`` is None). Returns the command line of its client, as this user."""
    (d / "log").mkdir(parents=True, exist_ok=True)
    (d / "tmp").mkdir(parents=True, exist_ok=True)
    write(d / "my.cnf", mariadb_conf_text(d, port))
    user = pwd.getpwuid(os.getuid()).pw_name
    defaults = "--defaults-file=%s" % (d / "my.cnf")
    run(["mariadb-install-db", defaults, "--user=%s" % user, "--skip-test-db",
         "--auth-root-authentication-method=socket"], timeout=120)
    proc = start(service, ["mariadbd", defaults, "--user=%s" % user])
    client = ["mariadb", "--socket=%s" % (d / "mysqld.sock"), "--user=%s" % user]
    wait_for("mariadb", lambda: subprocess.run(client + ["-e", "SELECT 1"], capture_output=True,
                                               timeout=5).returncode == 0, 30, proc)
    return client


def mariadb_database(client, name):
    """An empty database and a user of the same name. Returns its SQLAlchemy URL (the unix
    socket's when the server has no TCP port)."""
    password = secrets.token_hex(12)
    run(client, input=(
        "CREATE DATABASE {n} CHARACTER SET utf8mb4;"
        "CREATE USER '{n}'@'localhost' IDENTIFIED BY '{p}';"
        "CREATE USER '{n}'@'{h}' IDENTIFIED BY '{p}';"
        "GRANT ALL ON {n}.* TO '{n}'@'localhost';"
        "GRANT ALL ON {n}.* TO '{n}'@'{h}';").format(n=name, p=password, h=HOST))
    return password


@timed
def mariadb_up(facts):
    d = STATE / "mariadb"
    client = mariadb_start(d, PORTS["mariadb"])
    missing = [db for db in DATABASES if not schema_file(db).exists()]
    if missing:
        raise StackError("no database schema for %s (%s): run 'make setup'"
                         % (", ".join(missing), ", ".join(map(str, map(schema_file, missing)))))
    urls = {}
    for db in DATABASES:
        password = mariadb_database(client, db)
        run(client + [db], input=schema_file(db).read_text(), timeout=120)
        urls[db] = "mysql+pymysql://%s:%s@%s:%d/%s?charset=utf8mb4" % (
            db, password, HOST, PORTS["mariadb"], db)
    facts["mariadb"] = {"port": PORTS["mariadb"], "socket": str(d / "mysqld.sock"),
                        "databases": urls}


def schemas():
    """Run the migrations of Keystone, Glance and Cinder once on a scratch MariaDB and keep a
    dump of each schema, so that the stack loads them instead of migrating at each start."""
    stamp = SCHEMA_DIR / ("versions-%s" % OPENSTACK_SERIES if OPENSTACK_SERIES else "versions")
    want = schema_versions()
    if stamp.exists() and stamp.read_text() == want:
        return
    log("making the database schemas of %s (once)" % ", ".join(DATABASES))
    scratch = SCHEMA_DIR / "scratch"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    service = "schemas-mariadb"
    (STATE / "pids").mkdir(parents=True, exist_ok=True)
    (STATE / "log").mkdir(parents=True, exist_ok=True)
    try:
        client = mariadb_start(scratch, None, service)
        for db in DATABASES:
            password = mariadb_database(client, db)
            url = "mysql+pymysql://%s:%s@localhost/%s?unix_socket=%s&charset=utf8mb4" % (
                db, password, db, scratch / "mysqld.sock")
            conf = scratch / ("%s.conf" % db)
            write(conf, "[DEFAULT]\n[database]\nconnection = %s\n" % url, 0o600)
            run(SYNC_COMMANDS[db](conf), timeout=600)
            dump = run(["mariadb-dump", "--socket=%s" % (scratch / "mysqld.sock"),
                        "--user=%s" % pwd.getpwuid(os.getuid()).pw_name, "--skip-comments",
                        "--skip-dump-date", db], timeout=120)
            write(schema_file(db), dump)
        stamp.write_text(want)
    finally:
        pid = read_pid(service)
        if pid is not None and group_alive(pid):
            stop_group(service, pid)
        pid_file(service).unlink(missing_ok=True)
        shutil.rmtree(scratch, ignore_errors=True)
    log("database schemas in %s" % SCHEMA_DIR)


SYNC_COMMANDS = {
    "keystone": lambda conf: [str(SERVICES_BIN / "keystone-manage"), "--config-file", str(conf),
                              "db_sync"],
    "glance": lambda conf: [str(SERVICES_BIN / "glance-manage"), "--config-file", str(conf),
                            "db_sync"],
    "cinder": lambda conf: [str(SERVICES_BIN / "cinder-manage"), "--config-file", str(conf),
                            "db", "sync"],
}


def schema_versions():
    from importlib import metadata
    versions = {db: metadata.version(db) for db in DATABASES}
    if OPENSTACK_SERIES:
        versions = {db: run([str(SERVICES_BIN / "python"), "-c", "import importlib.metadata as "
                             "m; print(m.version(%r))" % db]).strip() for db in DATABASES}
    return "".join("%s %s\n" % item for item in versions.items())


def schema_file(db):
    """The dump of a database's schema, kept beside the environment of its service."""
    return SERVICES_BIN.parent / "cacheraw-stack-schemas" / ("%s.sql" % db)


# --- Keystone ------------------------------------------------------------------------------------

def keystone_url():
    return "http://%s:%d/v3" % (HOST, PORTS["keystone"])


def wsgi_app(package, older):
    """The service's WSGI application: <package>.wsgi.api, or the factory of the releases
    before it (CACHERAW_STACK_OPENSTACK)."""
    site = next(SERVICES_BIN.parent.glob("lib/python3*/site-packages"))
    return "%s.wsgi.api:application" % package if (site / package / "wsgi" / "api.py").exists() \
        else older


def gunicorn_conf(name, app, port, env, threads=4, workers=1):
    return "\n".join([
        "bind = %r" % ("%s:%d" % (HOST, port)),
        "wsgi_app = %r" % app,
        "workers = %d" % workers,
        "threads = %d" % threads,
        "timeout = 300",
        "control_socket_disable = True",
        "errorlog = %r" % str(STATE / "log" / ("%s-error.log" % name)),
        "accesslog = %r" % str(STATE / "log" / ("%s-access.log" % name)),
        "raw_env = %r" % ["%s=%s" % kv for kv in env.items()],
        "",
    ])


@timed
def keystone_prepare(facts):
    d = STATE / "keystone"
    d.mkdir(parents=True, exist_ok=True)
    conf = d / "keystone.conf"
    write(conf, f"""[DEFAULT]
log_file = {STATE}/log/keystone.log
[database]
connection = {facts["mariadb"]["databases"]["keystone"]}
[token]
provider = fernet
[fernet_tokens]
key_repository = {d}/fernet-keys
[fernet_receipts]
key_repository = {d}/fernet-keys
[credential]
key_repository = {d}/credential-keys
[cache]
enabled = true
backend = dogpile.cache.memory
[identity]
# bcrypt's least work: a test stack creates and authenticates users at each start.
password_hash_rounds = 4
""")
    manage = [str(SERVICES_BIN / "keystone-manage"), "--config-file", str(conf)]
    # What fernet_setup and credential_setup write, without two more keystone-manage runs: a
    # staged key (0) and a primary key (1) in each repository.
    from cryptography.fernet import Fernet
    for repository in ("fernet-keys", "credential-keys"):
        (d / repository).mkdir(mode=0o700)
        for index in ("0", "1"):
            write(d / repository / index, Fernet.generate_key().decode(), 0o600)
    # Keystone imports while bootstrap fills its database: it reads the database per request.
    proc = keystone_start()
    admin_password = secrets.token_hex(12)
    run(manage + ["bootstrap", "--bootstrap-password", admin_password,
                  "--bootstrap-username", "admin", "--bootstrap-project-name", "admin",
                  "--bootstrap-role-name", "admin", "--bootstrap-service-name", "keystone",
                  "--bootstrap-region-id", "RegionOne",
                  "--bootstrap-public-url", keystone_url(),
                  "--bootstrap-internal-url", keystone_url()], timeout=120)
    users = {"admin": {"username": "admin", "password": admin_password, "project_name": "admin"}}
    # The services start with their passwords before Keystone knows them (keystone_register).
    for name, project, _ in KEYSTONE_USERS:
        users[name] = {"username": name, "password": secrets.token_hex(12),
                       "project_name": project}
    facts["keystone"] = {"auth_url": keystone_url(), "users": users, "proc": proc}


def database_and_keystone(facts):
    mariadb_up(facts)
    keystone_prepare(facts)


def keystone_start():
    d = STATE / "keystone"
    env = {"OS_KEYSTONE_CONFIG_DIR": str(d)}
    # Keystone parses the WSGI server's command line as its own: no arguments, a config file.
    write(d / "gunicorn.conf.py",
          gunicorn_conf("keystone", wsgi_app("keystone", "keystone.server.wsgi:"
                                             "initialize_public_application()"),
                        PORTS["keystone"], env))
    return start("keystone", [str(SERVICES_BIN / "gunicorn")], cwd=d, env={**os.environ, **env})


@timed
def keystone_up(facts):
    wait_for("keystone", lambda: http_ok(keystone_url()), 60, facts["keystone"].pop("proc"))
    keystone_register(facts)


# Users of the services and of the tests: (name, project, role).
KEYSTONE_USERS = (("glance", "service", "admin"), ("cacheraw", "service", "admin"),
                  ("cinder", "service", "admin"), ("demo", "demo", "member"),
                  ("alt", "alt", "member"))


def keystone_register(facts):
    sess = admin_session(facts)

    def post(path, body):
        return sess.post(keystone_url() + path, json=body).json()

    def get_id(path, key, name):
        items = sess.get(keystone_url() + path, params={"name": name}).json()[key]
        return items[0]["id"]

    roles = {name: get_id("/roles", "roles", name) for name in ("admin", "member")}
    projects = {}
    for name in ("service", "demo", "alt"):
        projects[name] = post("/projects", {"project": {"name": name, "domain_id": "default"}})[
            "project"]["id"]
    users = facts["keystone"]["users"]
    for name, project, role in KEYSTONE_USERS:
        user_id = post("/users", {"user": {"name": name, "password": users[name]["password"],
                                           "domain_id": "default"}})["user"]["id"]
        sess.put(keystone_url() + "/projects/%s/users/%s/roles/%s" % (
            projects[project], user_id, roles[role]))
        users[name].update({"id": user_id, "project_id": projects[project]})
    volume_url = cinder_url() + "/v3/%(project_id)s"
    for name, kind, url in (("glance", "image", glance_url()),
                            ("cinderv3", "volumev3", volume_url),
                            ("cinder", "block-storage", volume_url)):
        service_id = post("/services", {"service": {"name": name, "type": kind}})["service"]["id"]
        for interface in ("public", "internal"):
            post("/endpoints", {"endpoint": {"service_id": service_id, "interface": interface,
                                             "region_id": "RegionOne", "url": url}})


def authtoken_text(user):
    """The [keystone_authtoken] section of a service that runs as ``user``."""
    return f"""[keystone_authtoken]
www_authenticate_uri = {keystone_url()}
auth_url = {keystone_url()}
auth_type = password
project_domain_name = Default
user_domain_name = Default
project_name = {user["project_name"]}
username = {user["username"]}
password = {user["password"]}
region_name = RegionOne
"""


# --- Glance --------------------------------------------------------------------------------------

def glance_url():
    return "http://%s:%d" % (HOST, PORTS["glance"])


# Glance's policy files for cacheraw, as operators install them: property protections (only the
# service user writes the cache_raw_* properties) and the image schema of the extension's
# properties, which Glance finds next to glance-api.conf.
GLANCE_POLICY_DIR = TOP / "etc" / "glance"


def glance_conf_text(facts):
    d = STATE / "glance"
    glance = facts["keystone"]["users"]["glance"]
    paste = SERVICES_BIN.parent / "etc" / "glance" / "glance-api-paste.ini"
    return f"""[DEFAULT]
log_file = {STATE}/log/glance.log
show_image_direct_url = true
show_multiple_locations = false
enabled_backends = ceph:rbd, local:file
enabled_import_methods = [glance-direct,web-download,copy-image]
node_staging_uri = file://{d}/staging
property_protection_file = {GLANCE_POLICY_DIR}/property-protections.conf
property_protection_rule_format = roles
transport_url = {facts["rabbitmq"]["transport_url"]}
worker_self_reference_url = {glance_url()}
[database]
connection = {facts["mariadb"]["databases"]["glance"]}
[glance_store]
default_backend = ceph
[ceph]
rbd_store_ceph_conf = {facts["ceph"]["conf"]}
rbd_store_user = glance
rbd_store_pool = {POOL}
[local]
filesystem_store_datadir = {d}/images
[os_glance_staging_store]
filesystem_store_datadir = {d}/staging
[os_glance_tasks_store]
filesystem_store_datadir = {d}/tasks
[import_filtering_opts]
# For this stack only: web-download from the tests' server on 127.0.0.1 and nowhere else.
# Glance refuses loopback addresses unless allowed_hosts names them; a cloud must never do so
# (any user who may import could make Glance read the controller's own services).
allowed_schemes = [http]
allowed_hosts = [{HOST}]
allowed_ports = [{WEB_DOWNLOAD_PORT}]
[image_format]
# The stack lets mislabelled and unsafe images through so that the tests can prove that cacheraw
# defends itself whatever the image service in front of it checks.
require_image_format_match = false
[paste_deploy]
flavor = keystone
config_file = {paste}
{authtoken_text(glance)}[oslo_messaging_notifications]
driver = messagingv2
[oslo_concurrency]
lock_path = {d}/locks
"""


@timed
def glance_up(facts):
    d = STATE / "glance"
    for sub in ("staging", "tasks", "images"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    write(d / "glance-api.conf", glance_conf_text(facts), 0o600)
    shutil.copy(GLANCE_POLICY_DIR / "schema-image.json", d / "schema-image.json")
    # An older Glance (2024.1) reads its paste file from the configuration folder only.
    shutil.copy(SERVICES_BIN.parent / "etc" / "glance" / "glance-api-paste.ini", d)
    env = {"OS_GLANCE_CONFIG_DIR": str(d)}
    write(d / "gunicorn.conf.py",
          # Several API workers on one database, as in production.
          gunicorn_conf("glance", wsgi_app("glance", "glance.common.wsgi_app:init_app()"),
                        PORTS["glance"], env,
                        workers=2, threads=1))
    facts["glance"] = {"url": glance_url(), "web_download_port": WEB_DOWNLOAD_PORT}
    return glance_launch()


def with_settings(text, settings):
    """An ini file's ``text`` with each (section, option, value) of ``settings`` set: the
    option's line replaced, or added at the top of its section (the section at the end)."""
    lines = text.splitlines()
    for section, option, value in settings:
        header = "[%s]" % section
        if header not in lines:
            lines += [header]
        start = lines.index(header) + 1
        end = next((i for i in range(start, len(lines)) if lines[i].startswith("[")),
                   len(lines))
        line = "%s = %s" % (option, value)
        found = [i for i in range(start, end)
                 if lines[i].split("=", 1)[0].strip() == option]
        if found:
            lines[found[0]] = line
        else:
            lines.insert(start, line)
    return "\n".join(lines) + "\n"


def glance_variant(settings):
    """Glance restarted with its configuration as ``up`` wrote it plus ``settings``
    ("section.option=value" each); with none, the stack's own configuration again."""
    parsed = []
    for setting in settings:
        name, sep, value = setting.partition("=")
        section, dot, option = name.partition(".")
        if not (sep and dot and section and option):
            raise StackError("not section.option=value: %r" % setting)
        parsed.append((section, option, value))
    facts = json.loads((STATE / "stack.json").read_text())
    stop_service("glance")
    write(STATE / "glance" / "glance-api.conf",
          with_settings(glance_conf_text(facts), parsed), 0o600)
    start_service("glance")
    log("glance runs with %s" % (", ".join(settings) or "the stack's own configuration"))


def glance_start():
    glance_wait(glance_launch())


def glance_launch():
    d = STATE / "glance"
    return start("glance", [str(SERVICES_BIN / "gunicorn")], cwd=d,
                 env={**os.environ, "OS_GLANCE_CONFIG_DIR": str(d)})


@timed
def glance_wait(proc):
    wait_for("glance", lambda: http_ok(glance_url() + "/versions"), 60, proc)


# --- Cinder --------------------------------------------------------------------------------------

def cinder_url():
    return "http://%s:%d" % (HOST, PORTS["cinder"])


def cinder_backends():
    unknown = [b for b in CINDER_BACKENDS if b not in CINDER_DRIVERS]
    if unknown or not CINDER_BACKENDS:
        raise StackError("CACHERAW_STACK_CINDER_BACKENDS must list some of %s, not %r"
                         % (", ".join(CINDER_DRIVERS), ",".join(CINDER_BACKENDS)))
    return CINDER_BACKENDS


def cinder_backend_text(name, facts):
    return f"""[{name}]
volume_driver = {CINDER_DRIVERS[name]}
volume_backend_name = {name}
rbd_pool = {VOLUME_POOL}
rbd_user = cinder
rbd_ceph_conf = {facts["ceph"]["conf"]}
rbd_flatten_volume_from_snapshot = false
image_volume_cache_enabled = {name == "imagecache"}
""" + (REPLICATION_DEVICE % facts["ceph"]["conf"] if name == "cacheraw" else "")


# The cacheraw backend offers replication, so that a volume type with replication_enabled
# reaches it: its "secondary" is its own cluster (the stack has one), named only so that the
# RBD driver mirrors the volumes of such a type.
REPLICATION_DEVICE = "replication_device = backend_id:secondary, conf:%s, user:cinder\n"
REPLICATED_TYPE = "cacheraw-replicated"


def internal_tenant(users):
    if "id" not in users["cinder"]:
        return ""
    return ("cinder_internal_tenant_project_id = %s\ncinder_internal_tenant_user_id = %s\n"
            % (users["cinder"]["project_id"], users["cinder"]["id"]))


def cinder_conf_text(facts):
    d = STATE / "cinder"
    users = facts["keystone"]["users"]
    backends = cinder_backends()
    return f"""[DEFAULT]
transport_url = {facts["rabbitmq"]["transport_url"]}
auth_strategy = keystone
my_ip = {HOST}
host = cacheraw-stack
state_path = {d}
image_conversion_dir = {d}/conversion
osapi_volume_listen = {HOST}
osapi_volume_listen_port = {PORTS["cinder"]}
glance_api_servers = {glance_url()}
enabled_backends = {",".join(backends)}
default_volume_type = {backends[0]}
resource_query_filters_file = {SERVICES_BIN.parent}/etc/cinder/resource_filters.json
api_paste_config = {SERVICES_BIN.parent}/etc/cinder/api-paste.ini
use_default_quota_class = false
quota_volumes = 1000
quota_snapshots = 1000
quota_gigabytes = 100000
{internal_tenant(users)}[database]
connection = {facts["mariadb"]["databases"]["cinder"]}
{authtoken_text(users["cinder"])}[oslo_concurrency]
lock_path = {d}/locks
[coordination]
backend_url = file://{d}/coordination
[cinder_sys_admin]
helper_command = {SERVICES_BIN}/privsep-helper --config-file {d}/cinder.conf
[privsep_osbrick]
helper_command = {SERVICES_BIN}/privsep-helper --config-file {d}/cinder.conf
""" + "".join(cinder_backend_text(name, facts) for name in backends)


# cinder.wsgi parses the command line as oslo.config arguments, which under gunicorn are
# gunicorn's: the application is loaded with a command line of its own. An older Cinder has no
# cinder.wsgi.api: its cinder.wsgi.wsgi makes the application.
CINDER_WSGI = '''import sys
sys.argv = [sys.argv[0], "--config-file", %r]
try:
    from cinder.wsgi.api import application  # noqa: E402,F401
except ImportError:
    from cinder.wsgi.wsgi import initialize_application  # noqa: E402
    application = initialize_application()
'''


@timed
def cinder_up(facts):
    d = STATE / "cinder"
    for sub in ("conversion", "locks", "coordination"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    conf = d / "cinder.conf"
    write(conf, cinder_conf_text(facts), 0o600)
    write(d / "cinder_api_wsgi.py", CINDER_WSGI % str(conf))
    write(d / "gunicorn.conf.py",
          gunicorn_conf("cinder-api", "cinder_api_wsgi:application", PORTS["cinder"], {}))
    api = start("cinder-api", [str(SERVICES_BIN / "gunicorn")], cwd=d)
    daemons = {name: start(name, wrap + [str(SERVICES_BIN / name), "--config-file", str(conf),
                                         "--log-file", str(STATE / "log" / ("%s.log" % name))])
               for name, wrap in (("cinder-scheduler", []),
                                  ("cinder-volume", own_etc_ceph(facts)))}
    facts["cinder"] = {"url": cinder_url(), "backends": cinder_backends(),
                       "volume_pool": VOLUME_POOL}
    return [api] + list(daemons.values())


def own_etc_ceph(facts):
    """os-brick reads the keyring of Cinder's Ceph user from /etc/ceph/ceph.client.cinder.keyring
    only (upload to image): cinder-volume runs in a mount namespace of its own where /etc/ceph is
    a folder of the stack's, so that stacks side by side never share one."""
    etc = STATE / "cinder" / "etc-ceph"
    etc.mkdir(parents=True, exist_ok=True)
    shutil.copy(facts["ceph"]["conf"], etc / "ceph.conf")
    keyring = facts["ceph"]["users"]["cinder"]["keyring"]
    shutil.copy(keyring, etc / "ceph.client.cinder.keyring")
    if os.getuid() != 0 or not Path("/etc/ceph").is_dir() or not shutil.which("unshare"):
        log("cinder-volume sees the host's /etc/ceph: uploads of volumes to images need "
            "/etc/ceph/ceph.client.cinder.keyring")
        return []
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c",
            'mount --bind "$0" /etc/ceph && exec "$@"', str(etc)]


@timed
def cinder_ready(facts, procs):
    """Wait for the API and for every scheduler and volume backend to report up; make a volume
    type per backend."""
    sess = admin_session(facts)
    project = sess.get_project_id()
    base = "%s/v3/%s" % (cinder_url(), project)
    wait_for("cinder-api", lambda: sess.get(base + "/types", raise_exc=False).ok, 40, procs[0])
    wanted = {backend: {"volume_backend_name": backend} for backend in cinder_backends()}
    if "cacheraw" in wanted:
        wanted[REPLICATED_TYPE] = {"volume_backend_name": "cacheraw",
                                   "replication_enabled": "<is> True"}
    for name, extra_specs in wanted.items():
        types = sess.get(base + "/types").json()["volume_types"]
        if any(t["name"] == name for t in types):
            continue
        sess.post(base + "/types", json={"volume_type": {
            "name": name, "os-volume-type-access:is_public": True,
            "extra_specs": extra_specs}})
    want = {"cinder-scheduler"} | {"cinder-volume@%s" % b for b in cinder_backends()}

    def services_up():
        services = sess.get(base + "/os-services").json()["services"]
        up = {s["binary"] if s["binary"] == "cinder-scheduler" else
              "%s@%s" % (s["binary"], s["host"].split("@", 1)[-1])
              for s in services if s["state"] == "up" and s["status"] == "enabled"}
        return want <= up
    wait_for("cinder-scheduler and cinder-volume", services_up, 40)
    for proc in procs:
        if proc.poll() is not None:
            raise StackError("a Cinder service exited with %s; see %s" % (proc.returncode,
                                                                          STATE / "log"))


def admin_session(facts):
    from keystoneauth1 import session as ks_session
    from keystoneauth1.identity import v3

    admin = facts["keystone"]["users"]["admin"]
    auth = v3.Password(auth_url=keystone_url(), username="admin", password=admin["password"],
                       project_name="admin", user_domain_name="Default",
                       project_domain_name="Default")
    return ks_session.Session(auth=auth, timeout=20)


# --- files for people and for cacheraw -----------------------------------------------------------

def openrc_text(user):
    return "\n".join([
        "export OS_AUTH_URL=%s" % keystone_url(),
        "export OS_IDENTITY_API_VERSION=3",
        "export OS_AUTH_TYPE=password",
        "export OS_USERNAME=%s" % user["username"],
        "export OS_PASSWORD=%s" % user["password"],
        "export OS_PROJECT_NAME=%s" % user["project_name"],
        "export OS_USER_DOMAIN_NAME=Default",
        "export OS_PROJECT_DOMAIN_NAME=Default",
        "export OS_REGION_NAME=RegionOne",
        "export OS_INTERFACE=public",
        "export OS_IMAGE_API_VERSION=2",
        "export OS_VOLUME_API_VERSION=3",
        "export CEPH_CONF=%s" % (STATE / "ceph" / "ceph.conf"),
        "",
    ])


def cacheraw_conf_text(facts):
    user = facts["keystone"]["users"]["cacheraw"]
    ceph = facts["ceph"]
    return f"""# cacheraw against the local stack; written by tools/stack/stack.py.
[DEFAULT]
transport_url = {facts["rabbitmq"]["transport_url"]}

[notifications]
pool = cacheraw

[image_api]
auth_type = password
auth_url = {keystone_url()}
username = {user["username"]}
password = {user["password"]}
project_name = {user["project_name"]}
user_domain_name = Default
project_domain_name = Default
region_name = RegionOne
valid_interfaces = internal

[ceph]
conf = {ceph["conf"]}
user = cacheraw
keyring = {ceph["users"]["cacheraw"]["keyring"]}
pool = {ceph["pool"]}

[converter]
conversion_dir = {STATE}/cacheraw/conversions
# The tests and the bench upload the same files again and again and count their conversions;
# the tests of sharing (tests/functional/test_identical.py) and its bench case turn it on.
share_identical = off
"""


def write_client_files(facts):
    users = facts["keystone"]["users"]
    for name in ("demo", "cacheraw", "admin"):
        write(STATE / ("%s-openrc" % name), openrc_text(users[name]), 0o600)
    (STATE / "cacheraw" / "conversions").mkdir(parents=True, exist_ok=True)
    write(STATE / "cacheraw.conf", cacheraw_conf_text(facts), 0o600)
    facts["cacheraw_conf"] = str(STATE / "cacheraw.conf")
    write(STATE / "stack.json", json.dumps(facts, indent=2), 0o600)


# --- the commands --------------------------------------------------------------------------------

def running_services():
    return [s for s in SERVICES if alive(read_pid(s))]


def stack_memory_bytes():
    """Resident memory of every process in the stack's process groups."""
    groups = {read_pid(s) for s in running_services()}
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.getpgid(int(entry)) not in groups:
                continue
            with open("/proc/%s/statm" % entry) as f:
                total += int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError):
            continue
    return total


def up():
    if (STATE / "stack.json").exists() and set(running_services()) == set(expected_services()):
        log("already running (%s)" % STATE)
        return
    if running_services():
        log("partly running: stopping it first")
        down()
    busy = [name for name, port in all_ports() if port_open(port)]
    if busy:
        raise StackError("ports of the stack are taken by other processes: %s" % ", ".join(
            "%s %d" % (n, p) for n, p in all_ports() if n in busy))
    began = time.monotonic()
    if STATE.exists():
        shutil.rmtree(STATE)
    for sub in ("pids", "log"):
        (STATE / sub).mkdir(parents=True)
    facts = {"state_dir": str(STATE), "ports": PORTS}
    try:
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            jobs = [pool.submit(f, facts) for f in (ceph_up, rabbit_up, database_and_keystone)]
            for job in jobs:
                job.result()
        # Glance and Cinder start while Keystone does: most of each start is Python's imports.
        glance = glance_up(facts)
        cinder = None if "imagecache" in cinder_backends() else cinder_up(facts)
        keystone_up(facts)
        # Cinder's image-volume cache needs the ids of its internal project and user.
        cinder = cinder or cinder_up(facts)
        glance_wait(glance)
        cinder_ready(facts, cinder)
        write_client_files(facts)
    except Exception:
        log("start-up failed; stopping what was started")
        down()
        raise
    ready = time.monotonic() - began
    time.sleep(1)  # let the daemons settle before measuring them
    log("ready in %.1f s; idle memory %d MiB; state in %s"
        % (ready, stack_memory_bytes() // (1024 * 1024), STATE))


def expected_services():
    return [s for s in SERVICES if WITH_MGR or s != "ceph-mgr"]


def stop_group(service, pid, grace=15):
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not group_alive(pid):
            return
        time.sleep(0.1)
    log("%s did not stop in %ss: killing it" % (service, grace))
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def group_alive(pgid):
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getpgid(int(entry)) == pgid and alive(int(entry)):
                    return True
            except OSError:
                continue
    return False


def down():
    for service in SERVICES:
        pid = read_pid(service)
        if pid is not None and group_alive(pid):
            stop_group(service, pid)
        pid_file(service).unlink(missing_ok=True)
    busy = [name for name, port in all_ports() if port_open(port)]
    if busy:
        raise StackError("ports still listening after stop: %s" % ", ".join(busy))
    log("stopped")


def all_ports():
    ports = list(PORTS.items()) + [("ceph-mon-v1", PORTS["ceph-mon"] + 1)]
    return ports


# Services the tests may stop and start again, to prove that cacheraw survives their outage.
RESTARTABLE = {"glance": (glance_start, PORTS["glance"]),
               "rabbitmq": (rabbit_start, PORTS["rabbitmq"]),
               "ceph-osd": (osd_restart, None)}


def stop_service(name):
    if name == "ceph-osd":
        osd_stoppable()
    pid = read_pid(name)
    if pid is not None and group_alive(pid):
        stop_group(name, pid)
    pid_file(name).unlink(missing_ok=True)
    port = RESTARTABLE[name][1]
    if port is not None:
        wait_for("%s to free its port" % name, lambda: not port_open(port), 20)
    log("%s stopped" % name)


def start_service(name):
    if alive(read_pid(name)):
        log("%s already running" % name)
        return
    RESTARTABLE[name][0]()
    log("%s started" % name)


def status():
    ok = True
    for service in expected_services():
        pid = read_pid(service)
        state = "running" if alive(pid) else "stopped"
        ok = ok and state == "running"
        print("%-10s %-8s pid %s" % (service, state, pid or "-"))
    if ok:
        print("memory     %d MiB" % (stack_memory_bytes() // (1024 * 1024)))
    return 0 if ok else 3


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["up", "down", "status", "schemas", "stop-service",
                                            "start-service", "glance-variant"])
    parser.add_argument("service", nargs="?", choices=sorted(RESTARTABLE),
                        help="for stop-service and start-service")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.OPTION=VALUE",
                        help="for glance-variant: a setting of glance-api.conf")
    args = parser.parse_args()
    if args.command.endswith("-service") and not args.service:
        parser.error("%s needs a service: %s" % (args.command, ", ".join(sorted(RESTARTABLE))))
    try:
        if args.command == "glance-variant":
            glance_variant(args.set)
        elif args.command == "stop-service":
            stop_service(args.service)
        elif args.command == "start-service":
            start_service(args.service)
        elif args.command == "up":
            up()
        elif args.command == "schemas":
            schemas()
        elif args.command == "down":
            down()
        else:
            return status()
    except StackError as exc:
        print("stack: error: %s" % exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
