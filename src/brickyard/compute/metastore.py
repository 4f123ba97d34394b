"""The workspace's one Hive metastore: a supervised Thrift service that every cluster shares.

It runs from the jars pyspark ships (Hive 2.3, Derby, DataNucleus), its Thrift socket bound to
127.0.0.1: Hive 2.3's HiveMetaStore.main binds every interface and has no setting against it, so
the service runs brickyard.LoopbackMetaStore (LoopbackMetaStore.java next to this file: main and
startMetaStore as Hive 2.3.10 does them, the bind address passed on), compiled once with the JDK's
javac against pyspark's jars into <JVM cache>/launchers/LoopbackMetaStore-<hash of source, jar
names, javac>. By default its database is
<home>/metastore/metastore_db, served by a Derby network server that the workspace starts as a
process of its own (loopback only, Derby's BUILTIN authentication with a generated password kept
0600 in <home>/metastore/derby.properties; user APP, Derby's default, so the tables of homes made
when Derby was embedded in the service are found in their schema APP), and the service connects
with Derby's client driver. For teams, with a PostgreSQL BRICKYARD_DATABASE_URL the service keeps
its tables in schema `hive` of the workspace's database (jdbc:postgresql://host/db?currentSchema=hive,
the driver from the JVM cache). The pids and ports are recorded in <home>/metastore/metastore.json
and derby.json, so a restarted workspace adopts the running processes (or restarts them when their
configuration changed). So that they do not outlive a workspace that is killed and never restarted,
each process that starts or adopts them, or opens the home (Launcher: claim), registers in owners.json
(pid and its start time), and a
watchdog process (metastore_watchdog.py, pid in watchdog.json) stops the service and Derby once
every owner has been gone for `orphan_grace` seconds (60 by default) without a new one registering.

On PostgreSQL the schema is created before the service starts, from Hive's own SQL scripts
(hive-schema-1.2.0 and the upgrades to 2.3.0, read from the standalone metastore archive in
the JVM cache), in one transaction under an advisory lock; the service then runs with
DataNucleus' auto-creation off and schema verification on. (Leaving the creation to DataNucleus
hangs: it creates tables lazily, inside the transactions of the first requests.)
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import subprocess
import tarfile
import tempfile
import threading
import time
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit
from xml.sax.saxutils import escape

from brickyard.compute import metastore_watchdog as watchdog
from brickyard.compute import runtime
from brickyard.jvm import jar_path, jvm_cache_dir
from brickyard.compute.spark_conf import WAREHOUSE_DIR, MountLink, cluster_jvm_classpath, dbfs_hadoop_conf, local_uri

log = logging.getLogger(__name__)

# The service: HiveMetaStore.main as LoopbackMetaStore.java runs it, its Thrift socket bound to BIND_HOST.
MAIN_CLASS = "brickyard.LoopbackMetaStore"
LAUNCHER_SOURCE = Path(__file__).with_name("LoopbackMetaStore.java")
HIVE_MAIN_CLASS = "org.apache.hadoop.hive.metastore.HiveMetaStore"  # how services were started before it
BIND_HOST = "127.0.0.1"
ORPHAN_GRACE = 60.0  # seconds the service outlives the last workspace process using it (metastore_watchdog)
DERBY_CLASS = "org.apache.derby.drda.NetworkServerControl"
DERBY_USER = "APP"  # Derby's default user: schema APP holds the tables of homes made with embedded Derby
# The Derby network server's jars: the engine and tools pyspark ships, the server from the JVM cache.
DERBY_SPARK_JARS = ("derby", "derbyshared", "derbytools")
DERBY_CACHE_JARS = ("derbynet",)
DERBY_CLIENT_JAR = "derbyclient"  # on the service's class path (derbyshared comes with pyspark)

LOG4J2 = """\
status = error
appender.console.type = Console
appender.console.name = console
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{yy/MM/dd HH:mm:ss} %p %c{2}: %m%n
rootLogger.level = warn
rootLogger.appenderRef.console.ref = console
logger.hms.name = org.apache.hadoop.hive.metastore.HiveMetaStore
logger.hms.level = info
"""


# Hive's PostgreSQL scripts that build the schema of the Hive 2.3 metastore pyspark ships.
HIVE_SCHEMA_VERSION = "2.3.0"
HIVE_SCHEMA_ARCHIVE = "hive-standalone-metastore-*-bin.tar.gz"  # jvm-artifacts.txt
POSTGRES_SCRIPTS = (
    "hive-schema-1.2.0.postgres.sql",
    "upgrade-1.2.0-to-2.0.0.postgres.sql",
    "upgrade-2.0.0-to-2.1.0.postgres.sql",
    "upgrade-2.1.0-to-2.2.0.postgres.sql",
    "upgrade-2.2.0-to-2.3.0.postgres.sql",
)
SCHEMA_LOCK_KEY = 0x42726B48  # pg_advisory_xact_lock: one schema creation at a time


class MetastoreError(RuntimeError):
    """The metastore service could not be started (the message quotes its log)."""


class Metastore:
    """One Hive metastore Thrift service per workspace home."""

    def __init__(
        self,
        home: Path | str,
        dbfs_root: Path | str,
        *,
        port: int = 0,
        jdbc_url: str = "",
        jdbc_user: str = "",
        jdbc_password: str = "",
        mounts: Iterable[MountLink | Sequence] = (),
        heap: str = "512m",
        orphan_grace: float = ORPHAN_GRACE,
    ):
        self.dir = Path(home) / "metastore"
        self.dbfs_root = Path(dbfs_root)
        self.jdbc_url = jdbc_url
        self.jdbc_user = jdbc_user
        self.jdbc_password = jdbc_password
        self.mounts = list(mounts)
        self.heap = heap
        self.orphan_grace = orphan_grace
        self.port = port
        self._explicit_port = bool(port)
        self.pid = 0
        self._proc: subprocess.Popen | None = None
        self.derby_port = 0
        self.derby_pid = 0
        self._derby_proc: subprocess.Popen | None = None
        self._watchdog_proc: subprocess.Popen | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings, **kwargs) -> "Metastore":  # noqa: ANN001
        """The workspace's metastore: on its PostgreSQL (schema `hive`) when it has one, else Derby."""
        jdbc_url, user, password = settings.metastore_jdbc
        return cls(settings.home, settings.dbfs_root, jdbc_url=jdbc_url, jdbc_user=user, jdbc_password=password,
                   **kwargs)

    # ---- public ---------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """thrift://127.0.0.1:<port> (valid once started)."""
        return f"thrift://127.0.0.1:{self.port}"

    @property
    def log_file(self) -> Path:
        return self.dir / "metastore.log"

    @property
    def derby_server(self) -> bool:
        """Whether the service's database is the workspace's Derby network server (the default)."""
        return not self.jdbc_url

    @property
    def derby_log_file(self) -> Path:
        return self.dir / "derby-server.log"

    def start(self, timeout: float = 120.0) -> str:
        """Start the service, or adopt the one already running with this configuration; wait until it answers.

        This process becomes one of its owners: the watchdog stops it once every owner is gone."""
        with self._lock, self._home_lock():
            self.dir.mkdir(parents=True, exist_ok=True)
            watchdog.register_owner(self.dir)
            self._ensure_watchdog()
            try:
                return self._start_locked(timeout)
            except Exception:
                if not (self._service_marker(self.pid) or runtime.pid_alive(self.derby_pid, DERBY_CLASS)):
                    self._stop_watchdog()  # nothing left to watch
                raise

    def claim(self) -> bool:
        """Become one of the owners of the home's service if one runs (a workspace starting on this home), so
        the watchdog does not stop it before this process starts its first cluster; whether one was recorded."""
        if not self._state_file.exists():
            return False  # (and a fresh home gets no metastore folder yet)
        with self._lock, self._home_lock():
            if not self._state_file.exists():
                return False
            watchdog.register_owner(self.dir)
            return True

    def _start_locked(self, timeout: float) -> str:
        state = self._read_state()
        if not self.port:
            self.port = int(state.get("port") or 0) or runtime.free_port()
        pid = int(state.get("pid") or 0)
        alive = bool(self._service_marker(pid))
        if not alive and runtime.port_open(self.port):
            if self._explicit_port:
                raise MetastoreError(f"port {self.port} is taken by another process")
            self.port = runtime.free_port()  # the recorded port went to someone else meanwhile
        fresh_db = False
        if self.derby_server:
            try:
                fresh_db = self._ensure_derby(timeout)
            except MetastoreError:
                # Nothing half-started: a service that may still hold connections goes with it.
                self._terminate_service(pid)
                self._state_file.unlink(missing_ok=True)
                raise
        digest = self._write_conf()
        if alive:
            if state.get("conf") == digest and int(state.get("port", 0)) == self.port and not fresh_db:
                self.pid = pid
                self._wait_ready(timeout)
                log.info("adopted the running Hive metastore (pid %s) at %s", pid, self.url)
                return self.url
            log.info("Hive metastore configuration changed: restarting it")
            self._terminate_service(pid)
        if self.jdbc_url.startswith("jdbc:postgresql:"):
            ensure_postgres_schema(self.jdbc_url, self.jdbc_user, self.jdbc_password)
        self._spawn(digest)
        try:
            self._wait_ready(timeout)
        except MetastoreError:
            self._terminate_service(self.pid)  # no half-started service left behind
            self._state_file.unlink(missing_ok=True)
            self._stop_derby()
            raise
        return self.url

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the service (whether this object started it or adopted it), its Derby server and watchdog."""
        with self._lock, self._home_lock():
            self.stop_unlocked(timeout)

    def release(self, timeout: float = 15.0) -> bool:
        """This process is done with the service (its workspace closes): stop it, its Derby server and the
        watchdog, unless another live workspace process on the home still owns it (a short CLI command
        closing while `brickyard up` runs must not take the catalog from its clusters); the watchdog then
        stops it after the last of those. Whether it was stopped."""
        with self._lock, self._home_lock():
            others = watchdog.unregister_owner(self.dir)
            if others:
                log.info("the Hive metastore stays up for %d other workspace process(es) on this home",
                         len(others))
                self.pid, self._proc = 0, None
                return False
            self.stop_unlocked(timeout)
            return True

    def stop_unlocked(self, timeout: float = 15.0) -> None:
        """stop() for a caller that holds the home's lock already (the watchdog)."""
        # Ours, and whatever the home records (another object of this home may have replaced ours).
        for pid in dict.fromkeys((self.pid, int(self._read_state().get("pid") or 0))):
            self._terminate_service(pid, timeout)
        self._state_file.unlink(missing_ok=True)
        self.pid, self._proc = 0, None
        self._stop_derby(timeout)  # after the service, whose connections it served
        self._stop_watchdog()
        (self.dir / watchdog.OWNERS_FILE).unlink(missing_ok=True)

    def update_mounts(self, mounts: Iterable[MountLink | Sequence], timeout: float = 120.0) -> str:
        """Point the service at a new mount table (restarts it only if that changes its configuration)."""
        self.mounts = list(mounts)
        return self.start(timeout)

    def alive(self) -> bool:
        """Whether the service process (and its Derby network server) runs and its port answers."""
        derby_ok = not self.derby_server or (runtime.pid_alive(self.derby_pid, DERBY_CLASS)
                                             and runtime.port_open(self.derby_port))
        return derby_ok and bool(self._service_marker(self.pid)) and runtime.port_open(self.port)

    # ---- internals ------------------------------------------------------------------------
    @property
    def _state_file(self) -> Path:
        return self.dir / "metastore.json"

    @contextmanager
    def _home_lock(self):
        # Two workspace processes on one home must not start two services on one Derby folder.
        self.dir.mkdir(parents=True, exist_ok=True)
        with watchdog.home_lock(self.dir):
            yield

    @staticmethod
    def _service_marker(pid: int) -> str:
        """MAIN_CLASS (or HIVE_MAIN_CLASS: a service started before the launcher) if pid is the service; ''."""
        for marker in (MAIN_CLASS, HIVE_MAIN_CLASS):
            if runtime.pid_alive(pid, marker):
                return marker
        return ""

    def _terminate_service(self, pid: int, timeout: float = 15.0) -> None:
        ours = self._proc is not None and self._proc.pid == pid and self._proc.poll() is None
        marker = self._service_marker(pid)
        if ours or marker:
            runtime.terminate(pid, self._proc, marker or MAIN_CLASS, timeout)

    # ---- the watchdog (metastore_watchdog.py) -------------------------------------------------
    @property
    def _watchdog_file(self) -> Path:
        return self.dir / watchdog.WATCHDOG_FILE

    def watchdog_pid(self) -> int:
        """The pid of the home's running watchdog (0 if none)."""
        pid = int(self._read_state(self._watchdog_file).get("pid") or 0)
        return pid if runtime.pid_alive(pid, watchdog.watchdog_marker(self.dir)) else 0

    def _ensure_watchdog(self) -> None:
        if self.watchdog_pid():
            return
        with open(self.dir / "watchdog.log", "ab") as out:
            # Its own session: it must outlive the workspace process to end what that process left.
            self._watchdog_proc = subprocess.Popen(
                watchdog.watchdog_command(self.dir, self.orphan_grace), stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, cwd=self.dir, start_new_session=True)
        # Written under the home's lock, which the watchdog takes before it first reads this file.
        self._write_state(self._watchdog_file, {"pid": self._watchdog_proc.pid, "grace": self.orphan_grace,
                                                "started": time.time()})

    def _stop_watchdog(self) -> None:
        pid = int(self._read_state(self._watchdog_file).get("pid") or 0)
        self._watchdog_file.unlink(missing_ok=True)  # a watchdog no longer named there ends by itself
        if pid and pid != os.getpid():
            runtime.terminate(pid, self._watchdog_proc, watchdog.watchdog_marker(self.dir), timeout=5)
        if self._watchdog_proc is not None and self._watchdog_proc.pid == pid:
            self._watchdog_proc = None

    def _read_state(self, path: Path | None = None) -> dict:
        try:
            return json.loads((path or self._state_file).read_text())
        except (OSError, ValueError):
            return {}

    @staticmethod
    def _write_state(path: Path, state: dict) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        os.replace(tmp, path)

    # ---- the Derby network server -----------------------------------------------------------
    @property
    def _derby_state_file(self) -> Path:
        return self.dir / "derby.json"

    def derby_password(self) -> str:
        """The password of Derby user APP, generated once into derby.properties (0600): the server's
        system properties, read when it boots."""
        props = self.dir / "derby.properties"
        try:
            found = re.search(rf"^derby\.user\.{DERBY_USER}=(\S+)$", props.read_text(), re.MULTILINE)
            if found:
                return found.group(1)
        except OSError:
            pass
        password = secrets.token_hex(24)
        self.dir.mkdir(parents=True, exist_ok=True)
        _write_private(props, (
            "# The Hive metastore's Derby network server (written by Brickyard; private)\n"
            "derby.connection.requireAuthentication=true\n"
            "derby.authentication.provider=BUILTIN\n"
            "derby.infolog.append=true\n"
            f"derby.user.{DERBY_USER}={password}\n"
        ))
        return password

    def derby_jdbc_url(self) -> str:
        """The client URL of the metastore database on the workspace's Derby network server."""
        return f"jdbc:derby://127.0.0.1:{self.derby_port}/metastore_db;create=true"

    @staticmethod
    def derby_classpath(client: bool = False) -> list[Path]:
        """The jars of the Derby network server (and its client driver and ij with client=True)."""
        jars = []
        for name in DERBY_SPARK_JARS:
            found = sorted((runtime.spark_home() / "jars").glob(f"{name}-[0-9]*.jar"))
            if not found:
                raise FileNotFoundError(f"no {name}-<version>.jar in {runtime.spark_home() / 'jars'} (pyspark's jars)")
            jars.append(found[-1])
        jars += [jar_path(name) for name in DERBY_CACHE_JARS]
        if client:
            jars.append(jar_path(DERBY_CLIENT_JAR))
        return jars

    def _derby_command(self, *args: str) -> list[str]:
        return [
            runtime.java_bin(), "-Xmx256m", f"-Djava.io.tmpdir={self.dir / 'tmp'}",
            f"-Dderby.system.home={self.dir}", f"-Dderby.stream.error.file={self.dir / 'derby.log'}",
            "-cp", ":".join(str(j) for j in self.derby_classpath()), DERBY_CLASS, *args,
        ]

    def _derby_server_command(self) -> list[str]:
        return self._derby_command("start", "-h", "127.0.0.1", "-p", str(self.derby_port), "-noSecurityManager")

    def _ensure_derby(self, timeout: float) -> bool:
        """Adopt the recorded Derby network server, or start one; True when started now."""
        state = self._read_state(self._derby_state_file)
        pid = int(state.get("pid") or 0)
        self.derby_port = int(state.get("port") or 0)
        self.derby_password()  # the server reads its users at boot
        alive = runtime.pid_alive(pid, DERBY_CLASS)
        if alive:
            digest = hashlib.sha256("\0".join(self._derby_server_command()).encode()).hexdigest()
            if state.get("conf") == digest and runtime.port_open(self.derby_port):
                self.derby_pid = pid
                return False
            log.info("Derby network server configuration changed: restarting it")
            runtime.terminate(pid, self._derby_proc, DERBY_CLASS)
        if not self.derby_port or runtime.port_open(self.derby_port):
            self.derby_port = runtime.free_port()
        (self.dir / "tmp").mkdir(parents=True, exist_ok=True)
        cmd = self._derby_server_command()
        with open(self.derby_log_file, "ab") as out:
            out.write(f"\n==> {time.strftime('%Y-%m-%d %H:%M:%S')} starting on port {self.derby_port}\n".encode())
            out.flush()
            # Its own session, like the service: it outlives a workspace restart and is adopted.
            self._derby_proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                                cwd=self.dir, start_new_session=True)
        self.derby_pid = self._derby_proc.pid
        self._write_state(self._derby_state_file, {
            "pid": self.derby_pid, "port": self.derby_port, "started": time.time(),
            "conf": hashlib.sha256("\0".join(cmd).encode()).hexdigest()})
        try:
            self._wait_derby(timeout)
        except MetastoreError:
            self._stop_derby()
            raise
        log.info("started the Derby network server (pid %s) on 127.0.0.1:%s", self.derby_pid, self.derby_port)
        return True

    def _wait_derby(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._derby_proc.poll() is not None:
                raise MetastoreError(f"the Derby network server exited during start: {self._log_tail(self.derby_log_file)}")
            if runtime.port_open(self.derby_port):
                # The port is ours only if the server answers its own protocol.
                ping = subprocess.run(self._derby_command("ping", "-h", "127.0.0.1", "-p", str(self.derby_port)),
                                      capture_output=True, text=True, timeout=max(5.0, deadline - time.monotonic()))
                if ping.returncode == 0:
                    return
            time.sleep(0.2)
        raise MetastoreError(f"the Derby network server did not answer on port {self.derby_port} within "
                             f"{timeout:.0f} s: {self._log_tail(self.derby_log_file)}")

    def derby_ij(self, sql: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
        """Run SQL with Derby's ij, connected as APP to the metastore database on the network server.

        The credentials go through a private properties file, never a command line."""
        props = self.dir / "tmp" / f"ij-{os.getpid()}-{threading.get_ident()}.properties"
        props.parent.mkdir(parents=True, exist_ok=True)
        url = f"jdbc:derby://127.0.0.1:{self.derby_port}/metastore_db;user={DERBY_USER};password={self.derby_password()}"
        _write_private(props, f"ij.connection.metastore={url}\n")
        cmd = [runtime.java_bin(), "-Xmx128m", "-cp", ":".join(str(j) for j in self.derby_classpath(client=True)),
               "org.apache.derby.tools.ij", "-p", str(props)]
        try:
            return subprocess.run(cmd, input=sql, capture_output=True, text=True, timeout=timeout, cwd=props.parent)
        finally:
            props.unlink(missing_ok=True)

    def _stop_derby(self, timeout: float = 15.0) -> None:
        state = self._read_state(self._derby_state_file)
        recorded = (int(state.get("pid") or 0), int(state.get("port") or 0))
        for pid, port in dict.fromkeys(((self.derby_pid, self.derby_port), recorded)):
            ours = self._derby_proc is not None and self._derby_proc.pid == pid and self._derby_proc.poll() is None
            if not (ours or runtime.pid_alive(pid, DERBY_CLASS)):
                continue
            self.derby_port = port
            if port and runtime.port_open(port):
                # Shut the database down first (a checkpoint, no recovery at the next boot); then the server.
                try:
                    self.derby_ij(f"connect 'jdbc:derby://127.0.0.1:{port}/metastore_db;shutdown=true;"
                                  f"user={DERBY_USER};password={self.derby_password()}';\n", timeout=timeout)
                except (subprocess.SubprocessError, OSError) as exc:
                    log.warning("Derby database shutdown failed (%s); stopping the server anyway", exc)
            runtime.terminate(pid, self._derby_proc, DERBY_CLASS, timeout)
        self._derby_state_file.unlink(missing_ok=True)
        self.derby_pid, self._derby_proc = 0, None

    def hive_site(self) -> dict[str, str]:
        """The hive-site.xml properties of the service."""
        tmp = self.dir / "tmp"
        postgres = self.jdbc_url.startswith("jdbc:postgresql:")
        url = self.jdbc_url or self.derby_jdbc_url()
        props = {
            "javax.jdo.option.ConnectionURL": url,
            "javax.jdo.option.ConnectionDriverName": _driver_class(url),
            # Derby: DataNucleus creates the schema. PostgreSQL: Hive's scripts did (ensure_postgres_schema).
            "datanucleus.schema.autoCreateAll": "false" if postgres else "true",
            "hive.metastore.schema.verification": "true" if postgres else "false",
            # Hive 2.3's default pool (BoneCP) is not in pyspark: DataNucleus falls back, but the
            # transaction handler does not (DROP DATABASE: NoClassDefFoundError com/jolbox/bonecp).
            "datanucleus.connectionPoolingType": "HikariCP",
            # Without this the service dies: NoClassDefFoundError com/lmax/disruptor (not in pyspark).
            "hive.async.log.enabled": "false",
            "hive.metastore.warehouse.dir": WAREHOUSE_DIR,
            "hive.exec.scratchdir": local_uri(tmp / "hive-scratch"),
            "hive.exec.local.scratchdir": str(tmp / "hive-local"),
            "hive.downloaded.resources.dir": str(tmp / "hive-resources"),
        }
        user, password = (DERBY_USER, self.derby_password()) if self.derby_server else (self.jdbc_user, self.jdbc_password)
        if user:
            props["javax.jdo.option.ConnectionUserName"] = user
        if password:
            props["javax.jdo.option.ConnectionPassword"] = password
        # The service creates database and table folders itself, so it must resolve dbfs: too.
        props.update(dbfs_hadoop_conf(self.dbfs_root, self.mounts))
        return props

    def _write_conf(self) -> str:
        conf = self.dir / "conf"
        conf.mkdir(parents=True, exist_ok=True)
        body = "".join(
            f"  <property><name>{escape(k)}</name><value>{escape(v)}</value></property>\n"
            for k, v in sorted(self.hive_site().items())
        )
        text = f'<?xml version="1.0"?>\n<configuration>\n{body}</configuration>\n'
        _write_private(conf / "hive-site.xml", text)  # may hold the database password
        _write_private(conf / "hive-log4j2.properties", LOG4J2)
        digest = hashlib.sha256((text + "\0".join(self._command())).encode()).hexdigest()
        return digest

    def _classpath(self) -> str:
        parts = [str(self.dir / "conf"), str(runtime.spark_home() / "jars" / "*")]
        if self.jdbc_url.startswith("jdbc:postgresql:"):
            parts.append(str(runtime.postgres_jar()))
        if self.derby_server or self.jdbc_url.startswith("jdbc:derby://"):
            parts.append(str(jar_path(DERBY_CLIENT_JAR)))
        parts += [str(j) for j in cluster_jvm_classpath(self.mounts)]
        return ":".join(parts)

    def _command(self) -> list[str]:
        tmp = self.dir / "tmp"
        return [
            runtime.java_bin(), f"-Xmx{self.heap}", f"-Djava.io.tmpdir={tmp}",
            f"-Dderby.system.home={self.dir}", f"-Dderby.stream.error.file={self.dir / 'derby.log'}",
            "-cp", f"{self._classpath()}:{launcher_classes()}", MAIN_CLASS, "-p", str(self.port), "-h", BIND_HOST,
        ]

    def _spawn(self, digest: str) -> None:
        (self.dir / "tmp").mkdir(parents=True, exist_ok=True)
        cmd = self._command()
        env = {**os.environ, "SPARK_HOME": str(runtime.spark_home())}
        env.pop("HADOOP_CONF_DIR", None)  # a stray Hadoop config would override ours
        with open(self.log_file, "ab") as out:
            out.write(f"\n==> {time.strftime('%Y-%m-%d %H:%M:%S')} starting on port {self.port}\n".encode())
            out.flush()
            # A session of its own: it outlives a workspace restart and is adopted by the next one.
            self._proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          cwd=self.dir, env=env, start_new_session=True)
        self.pid = self._proc.pid
        self._write_state(self._state_file, {"pid": self.pid, "port": self.port, "conf": digest, "started": time.time()})
        log.info("started the Hive metastore (pid %s) at %s", self.pid, self.url)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if runtime.port_open(self.port):
                return
            ours = self._proc is not None and self._proc.pid == self.pid
            # Our own child is checked by poll(): just after fork its command line is still Python's.
            if (self._proc.poll() is not None) if ours else not self._service_marker(self.pid):
                raise MetastoreError(f"the Hive metastore exited during start: {self._log_tail()}")
            time.sleep(0.2)
        raise MetastoreError(f"the Hive metastore did not answer on port {self.port} within {timeout:.0f} s: "
                             f"{self._log_tail()}")

    def _log_tail(self, path: Path | None = None, lines: int = 15) -> str:
        path = path or self.log_file
        try:
            text = path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(text[-lines:]) + f"\n(log: {path})"


def javac_bin() -> str:
    """The javac of the JDK whose java runs the service (else the one on PATH)."""
    java = Path(runtime.java_bin()).resolve()
    sibling = java.with_name("javac")
    if sibling.exists():
        return str(sibling)
    found = shutil.which("javac")
    if not found:
        raise MetastoreError(f"javac not found next to {java} nor on PATH: the Hive metastore's launcher is compiled "
                             "at its first start; install a JDK 17+ (Debian: openjdk-17-jdk-headless)")
    return found


def launcher_classes() -> Path:
    """The class folder of brickyard.LoopbackMetaStore, compiled once into the JVM cache.

    Keyed by a hash of the source, the names of pyspark's jars (the class path it is compiled
    against) and the javac, so a new pyspark or JDK compiles it again.
    """
    jars = sorted(p.name for p in (runtime.spark_home() / "jars").glob("*.jar"))
    source = LAUNCHER_SOURCE.read_bytes()
    javac = javac_bin()
    key = hashlib.sha256(b"\0".join([source, *(j.encode() for j in jars), javac.encode()])).hexdigest()[:16]
    root = jvm_cache_dir() / "launchers"
    target = root / f"LoopbackMetaStore-{key}"
    if (target / "brickyard" / "LoopbackMetaStore.class").is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one compiler at a time; the others find its classes
        if (target / "brickyard" / "LoopbackMetaStore.class").is_file():
            return target
        tmp = Path(tempfile.mkdtemp(prefix=".compile-", dir=root))
        try:
            out = subprocess.run([javac, "-nowarn", "-encoding", "UTF-8", "-d", str(tmp),
                                  "-cp", str(runtime.spark_home() / "jars" / "*"), str(LAUNCHER_SOURCE)],
                                 capture_output=True, text=True, timeout=300)
            if out.returncode != 0:
                raise MetastoreError(f"javac could not compile {LAUNCHER_SOURCE.name} against pyspark's jars:\n"
                                     f"{(out.stdout + out.stderr)[-3000:]}")
            os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    log.info("compiled the Hive metastore launcher into %s", target)
    return target


def hive_schema_archive() -> Path:
    """The cached archive holding Hive's SQL scripts (FileNotFoundError naming the fetch command)."""
    cache = jvm_cache_dir()
    found = sorted(cache.glob(HIVE_SCHEMA_ARCHIVE)) if cache.is_dir() else []
    if not found:
        raise FileNotFoundError(f"no {HIVE_SCHEMA_ARCHIVE} in {cache}; run scripts/fetch-jvm-artifacts "
                                "(./dev setup does) for the Hive metastore's PostgreSQL schema")
    return found[-1]


def postgres_schema_scripts() -> list[tuple[str, str]]:
    """(name, SQL) of Hive's scripts that build schema 2.3.0 on PostgreSQL, in order.

    Their `SET search_path = public, ...` is dropped: the tables go to the connection's schema.
    """
    wanted = {f"scripts/metastore/upgrade/postgres/{name}": name for name in POSTGRES_SCRIPTS}
    texts: dict[str, str] = {}
    with tarfile.open(hive_schema_archive(), "r:gz") as tar:
        for member in tar:
            rel = member.name.split("/", 1)[-1]
            if rel in wanted and member.isfile():
                texts[wanted[rel]] = tar.extractfile(member).read().decode("utf-8")
    missing = [n for n in POSTGRES_SCRIPTS if n not in texts]
    if missing:
        raise MetastoreError(f"{hive_schema_archive()} lacks {', '.join(missing)}")
    strip = re.compile(r"^\s*SET\s+search_path\b.*$", re.IGNORECASE | re.MULTILINE)
    return [(name, strip.sub("", texts[name])) for name in POSTGRES_SCRIPTS]


def _libpq_params(jdbc_url: str, user: str, password: str) -> tuple[dict, str]:
    """psycopg connection keywords and the schema (currentSchema) of a jdbc:postgresql: URL."""
    parts = urlsplit(jdbc_url.removeprefix("jdbc:"))
    query = dict(parse_qsl(parts.query))
    params = {"host": parts.hostname or "localhost", "port": parts.port or 5432,
              "dbname": unquote(parts.path.lstrip("/")), "user": user or None, "password": password or None,
              "connect_timeout": 30}
    for key in ("sslmode", "sslrootcert", "sslcert", "sslkey"):
        if key in query:
            params[key] = query[key]
    return {k: v for k, v in params.items() if v is not None}, query.get("currentSchema", "public")


def ensure_postgres_schema(jdbc_url: str, user: str = "", password: str = "") -> bool:
    """Create the metastore's schema and tables on PostgreSQL unless they exist; True if created.

    One transaction under an advisory lock, so two workspaces starting at once do not race,
    and a failure leaves nothing half-built.
    """
    import psycopg

    params, schema = _libpq_params(jdbc_url, user, password)
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", schema):
        raise MetastoreError(f"unsupported metastore schema name: {schema!r}")
    try:
        with psycopg.connect(**params) as conn:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK_KEY,))
            conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
            conn.execute(f'SET LOCAL search_path TO "{schema}"')
            if conn.execute("SELECT to_regclass(%s)", (f'"{schema}"."VERSION"',)).fetchone()[0]:
                row = conn.execute('SELECT "SCHEMA_VERSION" FROM "VERSION"').fetchone()
                if not row or row[0] != HIVE_SCHEMA_VERSION:
                    raise MetastoreError(f"schema {schema!r} holds Hive metastore schema {row[0] if row else None}, "
                                         f"not {HIVE_SCHEMA_VERSION} (the version of pyspark's Hive jars)")
                return False
            for name, sql in postgres_schema_scripts():
                try:
                    conn.execute(sql)
                except psycopg.Error as exc:
                    raise MetastoreError(f"Hive's {name} failed on PostgreSQL: {exc}") from exc
            log.info("created the Hive metastore schema %s (Hive %s) on PostgreSQL", schema, HIVE_SCHEMA_VERSION)
            return True
    except psycopg.OperationalError as exc:
        raise MetastoreError(f"cannot reach the metastore's PostgreSQL at {params['host']}:{params['port']}: "
                             f"{exc}") from exc


def _driver_class(jdbc_url: str) -> str:
    if jdbc_url.startswith("jdbc:derby://"):
        return "org.apache.derby.jdbc.ClientDriver"
    if jdbc_url.startswith("jdbc:derby:"):
        return "org.apache.derby.jdbc.EmbeddedDriver"
    if jdbc_url.startswith("jdbc:postgresql:"):
        return "org.postgresql.Driver"
    raise ValueError(f"unsupported metastore JDBC URL (use jdbc:derby: or jdbc:postgresql:): {jdbc_url.split('?')[0]}")


def _write_private(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)

