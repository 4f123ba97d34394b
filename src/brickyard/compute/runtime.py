"""The Spark runtime this install provides: pyspark's own Spark, Java, and the cached jars."""
from __future__ import annotations

import functools
import os
import signal
import subprocess
import time
import shutil
import socket
from pathlib import Path

from brickyard.jvm import jar_path

# Jar-name prefixes in the JVM cache (jvm-artifacts.txt lists their coordinates).
DELTA_JARS = ("delta-spark_4.2_2.13", "delta-storage")
S3A_JARS = ("hadoop-aws", "bundle", "analyticsaccelerator-s3")
AZURE_JARS = ("hadoop-azure", "wildfly-openssl")
POSTGRES_JAR = "postgresql"


@functools.cache
def spark_home() -> Path:
    """SPARK_HOME: the pyspark package folder (it holds bin/ and jars/)."""
    import pyspark

    return Path(pyspark.__file__).resolve().parent


@functools.cache
def spark_version() -> str:
    """The Spark version of the installed pyspark, e.g. '4.2.0'."""
    import pyspark

    return pyspark.__version__


@functools.cache
def scala_version() -> str:
    """The Scala binary version of pyspark's jars, e.g. '2.13'."""
    for jar in (spark_home() / "jars").glob("spark-core_*.jar"):
        return jar.name.split("_", 1)[1].split("-", 1)[0]
    raise FileNotFoundError(f"no spark-core jar in {spark_home() / 'jars'}")


@functools.cache
def hadoop_version() -> str:
    """The Hadoop client version bundled with pyspark, e.g. '3.5.0'."""
    for jar in (spark_home() / "jars").glob("hadoop-client-api-*.jar"):
        return jar.stem[len("hadoop-client-api-"):]
    raise FileNotFoundError(f"no hadoop-client-api jar in {spark_home() / 'jars'}")


def java_bin() -> str:
    """The java executable: $JAVA_HOME/bin/java, else the one on PATH."""
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").exists():
        return str(Path(home) / "bin" / "java")
    found = shutil.which("java")
    if not found:
        raise FileNotFoundError("java not found: install a JDK 17+ or set JAVA_HOME")
    return found


def spark_class(main_class: str, *args: str) -> list[str]:
    """The command that runs a Spark JVM class the way Spark's own scripts do."""
    return [str(spark_home() / "bin" / "spark-class"), main_class, *args]


def delta_jars() -> list[Path]:
    """Delta Lake's jars (raises FileNotFoundError naming the fetch command when missing)."""
    return [jar_path(p) for p in DELTA_JARS]


def s3a_jars() -> list[Path]:
    """hadoop-aws and the AWS SDK it needs (only for clusters that touch s3a://)."""
    return [jar_path(p) for p in S3A_JARS]


def azure_jars() -> list[Path]:
    """hadoop-azure (ABFS; Hadoop 3.5 serves wasb(s):// through it too) and its TLS helper, for abfs(s)/wasb(s) mounts."""
    return [jar_path(p) for p in AZURE_JARS]


def postgres_jar() -> Path:
    """The PostgreSQL JDBC driver."""
    return jar_path(POSTGRES_JAR)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free right now on host (the caller binds it soon after)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def pid_alive(pid: int, marker: str = "") -> bool:
    """Whether pid runs (and, if marker is given, its command line contains marker)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    for attempt in range(5):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            zombie = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[-1].startswith("Z")
        except OSError:
            return not marker  # exited meanwhile, or no /proc: never adopt a pid we cannot check
        if cmdline.strip() or zombie:
            break
        time.sleep(0.02)  # an empty command line: the process is between fork and exec (spark-class execs java)
    return not zombie and marker in cmdline


def rss_mib(pid: int) -> float:
    """Resident memory of pid in MiB (0 when unknown)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def terminate(pid: int, proc: subprocess.Popen | None = None, marker: str = "", timeout: float = 15.0,
              group: bool = False) -> None:
    """SIGTERM pid (its whole process group if group and it leads one), SIGKILL after timeout; reap our child."""
    ours = proc is not None and proc.pid == pid
    if not (proc.poll() is None if ours else pid_alive(pid, marker)):
        return

    try:
        leader = group and os.getpgid(pid) == pid
    except ProcessLookupError:
        return

    def send(sig: int) -> None:
        try:
            if leader:
                os.killpg(pid, sig)  # executors and launcher children go with their daemon
            else:
                os.kill(pid, sig)
        except ProcessLookupError:
            pass

    send(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (proc.poll() is not None) if ours else not pid_alive(pid, marker):
            break
        time.sleep(0.1)
    else:
        send(signal.SIGKILL)
    if leader:
        send(signal.SIGKILL)  # whatever of the group outlived its leader (an executor JVM)
    if ours:
        proc.wait(10)
