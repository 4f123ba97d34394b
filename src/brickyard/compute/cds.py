"""A JVM class-data-sharing archive of Spark's classes, so a driver JVM starts faster.

Loading and verifying Spark's ~10,000 classes is most of a driver's start on a small host.
The first driver dumps the classes it loaded into an archive when it exits
(-XX:ArchiveClassesAtExit); later drivers map it (-XX:SharedArchiveFile). The archive sits in
the JVM cache, keyed by the java binary and pyspark's jars. A missing, stale or mismatched
archive only costs the speed-up: the JVM runs without it (-Xshare:auto).
"""
from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

from brickyard.compute import runtime
from brickyard.jvm import jvm_cache_dir

SETTLE_SECONDS = 30  # a dump untouched this long is complete (its JVM exited)


def archive_path() -> Path:
    java = Path(os.path.realpath(runtime.java_bin()))
    jars = sorted(p.name for p in (runtime.spark_home() / "jars").glob("*.jar"))
    key = hashlib.sha256("\n".join([str(java), str(java.stat().st_mtime_ns), *jars]).encode()).hexdigest()[:16]
    return jvm_cache_dir() / f"spark-{runtime.spark_version()}-cds-{key}.jsa"


def java_options() -> str:
    """Driver JVM options: use the archive, or dump one if none exists and no other driver is dumping."""
    try:
        archive = archive_path()
    except (OSError, FileNotFoundError):
        return ""
    if archive.exists():
        return f"-XX:SharedArchiveFile={archive} -Xshare:auto"
    archive.parent.mkdir(parents=True, exist_ok=True)
    busy = False
    for dump in archive.parent.glob(archive.name + ".*.dump"):
        try:
            st = dump.stat()
            if time.time() - st.st_mtime <= SETTLE_SECONDS * (1 if st.st_size else 60):
                busy = True  # a driver dumps when it exits (the empty file waits for that)
            elif st.st_size:
                os.replace(dump, archive)
                return f"-XX:SharedArchiveFile={archive} -Xshare:auto"
            else:
                dump.unlink()  # its driver was killed before it could dump
        except OSError:
            pass
    if busy:
        return ""
    dump = archive.with_name(f"{archive.name}.{os.getpid()}-{time.time_ns()}.dump")
    dump.touch()
    return f"-XX:ArchiveClassesAtExit={dump}"
