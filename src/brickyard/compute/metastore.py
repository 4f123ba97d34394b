"""The workspace's one Hive metastore: a supervised Thrift service that every cluster shares.

It runs from the jars pyspark ships (Hive 2.3, Derby, DataNucleus), with Derby embedded in
the service under <home>/metastore/metastore_db, or any JDBC database (PostgreSQL for teams:
jdbc_url="jdbc:postgresql://host/db", whose driver comes from the JVM cache). Its pid and
port are recorded in <home>/metastore/metastore.json, so a restarted workspace adopts the
running service (or restarts it when its configuration changed).

PostgreSQL is wired (URL, user, password, driver jar) but not yet proven: in a manual try
with a local PostgreSQL 15 the service started and created databases, then hung in
create_table while DataNucleus auto-created the schema; load Hive's own
hive-schema-2.3.0.postgres.sql first and set autoCreateAll off before relying on it.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import subprocess
import threading
import time
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from pathlib import Path
from xml.sax.saxutils import escape

from brickyard.compute import runtime
from brickyard.compute.spark_conf import WAREHOUSE_DIR, MountLink, dbfs_hadoop_conf, local_uri, needs_s3a

log = logging.getLogger(__name__)

MAIN_CLASS = "org.apache.hadoop.hive.metastore.HiveMetaStore"

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
    ):
        self.dir = Path(home) / "metastore"
        self.dbfs_root = Path(dbfs_root)
        self.jdbc_url = jdbc_url
        self.jdbc_user = jdbc_user
        self.jdbc_password = jdbc_password
        self.mounts = list(mounts)
        self.heap = heap
        self.port = port
        self._explicit_port = bool(port)
        self.pid = 0
        self._proc: subprocess.Popen | None = None
        self._lock = threading.Lock()

    # ---- public ---------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """thrift://127.0.0.1:<port> (valid once started)."""
        return f"thrift://127.0.0.1:{self.port}"

    @property
    def log_file(self) -> Path:
        return self.dir / "metastore.log"

    def start(self, timeout: float = 120.0) -> str:
        """Start the service, or adopt the one already running with this configuration; wait until it answers."""
        with self._lock, self._home_lock():
            self.dir.mkdir(parents=True, exist_ok=True)
            state = self._read_state()
            if not self.port:
                self.port = int(state.get("port") or 0) or runtime.free_port()
            pid = int(state.get("pid") or 0)
            alive = runtime.pid_alive(pid, MAIN_CLASS)
            if not alive and runtime.port_open(self.port):
                if self._explicit_port:
                    raise MetastoreError(f"port {self.port} is taken by another process")
                self.port = runtime.free_port()  # the recorded port went to someone else meanwhile
            digest = self._write_conf()
            if alive:
                if state.get("conf") == digest and int(state.get("port", 0)) == self.port:
                    self.pid = pid
                    self._wait_ready(timeout)
                    log.info("adopted the running Hive metastore (pid %s) at %s", pid, self.url)
                    return self.url
                log.info("Hive metastore configuration changed: restarting it")
                runtime.terminate(pid, self._proc, MAIN_CLASS)
            self._spawn(digest)
            try:
                self._wait_ready(timeout)
            except MetastoreError:
                runtime.terminate(self.pid, self._proc, MAIN_CLASS)  # no half-started service left behind
                self._state_file.unlink(missing_ok=True)
                raise
            return self.url

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the service (whether this object started it or adopted it)."""
        with self._lock, self._home_lock():
            pid = self.pid or int(self._read_state().get("pid") or 0)
            if runtime.pid_alive(pid, MAIN_CLASS):
                runtime.terminate(pid, self._proc, MAIN_CLASS, timeout)
            self._state_file.unlink(missing_ok=True)
            self.pid, self._proc = 0, None

    def update_mounts(self, mounts: Iterable[MountLink | Sequence], timeout: float = 120.0) -> str:
        """Point the service at a new mount table (restarts it only if that changes its configuration)."""
        self.mounts = list(mounts)
        return self.start(timeout)

    def alive(self) -> bool:
        """Whether the service process runs and its port answers."""
        return runtime.pid_alive(self.pid, MAIN_CLASS) and runtime.port_open(self.port)

    # ---- internals ------------------------------------------------------------------------
    @property
    def _state_file(self) -> Path:
        return self.dir / "metastore.json"

    @contextmanager
    def _home_lock(self):
        # Two workspace processes on one home must not start two services on one Derby folder.
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / ".lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            yield

    def _read_state(self) -> dict:
        try:
            return json.loads(self._state_file.read_text())
        except (OSError, ValueError):
            return {}

    def hive_site(self) -> dict[str, str]:
        """The hive-site.xml properties of the service."""
        tmp = self.dir / "tmp"
        props = {
            "javax.jdo.option.ConnectionURL": self.jdbc_url
            or f"jdbc:derby:;databaseName={self.dir / 'metastore_db'};create=true",
            "javax.jdo.option.ConnectionDriverName": _driver_class(self.jdbc_url),
            "datanucleus.schema.autoCreateAll": "true",
            "hive.metastore.schema.verification": "false",
            # Without this the service dies: NoClassDefFoundError com/lmax/disruptor (not in pyspark).
            "hive.async.log.enabled": "false",
            "hive.metastore.warehouse.dir": WAREHOUSE_DIR,
            "hive.exec.scratchdir": local_uri(tmp / "hive-scratch"),
            "hive.exec.local.scratchdir": str(tmp / "hive-local"),
            "hive.downloaded.resources.dir": str(tmp / "hive-resources"),
        }
        if self.jdbc_user:
            props["javax.jdo.option.ConnectionUserName"] = self.jdbc_user
        if self.jdbc_password:
            props["javax.jdo.option.ConnectionPassword"] = self.jdbc_password
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
        if needs_s3a(self.mounts):
            parts += [str(j) for j in runtime.s3a_jars()]
        return ":".join(parts)

    def _command(self) -> list[str]:
        tmp = self.dir / "tmp"
        return [
            runtime.java_bin(), f"-Xmx{self.heap}", f"-Djava.io.tmpdir={tmp}",
            f"-Dderby.system.home={self.dir}", f"-Dderby.stream.error.file={self.dir / 'derby.log'}",
            "-cp", self._classpath(), MAIN_CLASS, "-p", str(self.port),
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
        state = {"pid": self.pid, "port": self.port, "conf": digest, "started": time.time()}
        tmp = self._state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        os.replace(tmp, self._state_file)
        log.info("started the Hive metastore (pid %s) at %s", self.pid, self.url)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if runtime.port_open(self.port):
                return
            ours = self._proc is not None and self._proc.pid == self.pid
            # Our own child is checked by poll(): just after fork its command line is still Python's.
            if (self._proc.poll() is not None) if ours else not runtime.pid_alive(self.pid, MAIN_CLASS):
                raise MetastoreError(f"the Hive metastore exited during start: {self._log_tail()}")
            time.sleep(0.2)
        raise MetastoreError(f"the Hive metastore did not answer on port {self.port} within {timeout:.0f} s: "
                             f"{self._log_tail()}")

    def _log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_file.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(text[-lines:]) + f"\n(log: {self.log_file})"


def _driver_class(jdbc_url: str) -> str:
    if not jdbc_url or (jdbc_url.startswith("jdbc:derby:") and "//" not in jdbc_url):
        return "org.apache.derby.jdbc.EmbeddedDriver"
    if jdbc_url.startswith("jdbc:postgresql:"):
        return "org.postgresql.Driver"
    raise ValueError(f"unsupported metastore JDBC URL (use embedded jdbc:derby: or jdbc:postgresql:): {jdbc_url.split('?')[0]}")


def _write_private(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)

