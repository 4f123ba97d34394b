"""Spark configuration of a cluster driver: Delta by default, the shared Hive catalog, `dbfs:` paths."""
from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

WAREHOUSE_DIR = "dbfs:/user/hive/warehouse"
VIEWFS_TABLE = "fs.viewfs.mounttable.default"
# Keys whose values are lists: ours and the user's are joined instead of the user's winning.
_JOINED = {
    "spark.jars": ",",
    "spark.driver.extraClassPath": ":",
    "spark.executor.extraClassPath": ":",
    "spark.driver.extraJavaOptions": " ",
    "spark.executor.extraJavaOptions": " ",
    "spark.executorEnv.PYTHONPATH": ":",
}


@dataclass(frozen=True)
class MountLink:
    """A DBFS mount: `/mnt/<name>` -> a Hadoop URI, plus Hadoop settings it needs (keys, endpoints)."""

    mount_point: str
    target: str
    hadoop_conf: Mapping[str, str] = field(default_factory=dict)


def as_mount(item: MountLink | Sequence) -> MountLink:
    """Accept a MountLink or a (mount_point, target[, hadoop_conf]) tuple."""
    if isinstance(item, MountLink):
        return item
    point, target, *rest = item
    return MountLink(point, target, dict(rest[0]) if rest else {})


def local_uri(path: Path | str) -> str:
    """file:///abs/path for a local folder (no trailing slash)."""
    return "file://" + str(Path(path).resolve()).rstrip("/")


def dbfs_hadoop_conf(dbfs_root: Path | str, mounts: Iterable[MountLink | Sequence] = ()) -> dict[str, str]:
    """Hadoop settings that make `dbfs:/…` (and, as default FS, bare `/…`) the DBFS root and its mounts."""
    conf = {
        # Hadoop's mount-table file system under the dbfs scheme: links for mounts, the root as fallback.
        "fs.dbfs.impl": "org.apache.hadoop.fs.viewfs.ViewFileSystemOverloadScheme",
        f"{VIEWFS_TABLE}.linkFallback": local_uri(dbfs_root),
        "fs.defaultFS": "dbfs:///",
    }
    for m in map(as_mount, mounts):
        point = "/" + m.mount_point.strip("/")
        if point == "/" or ".." in point.split("/"):
            raise ValueError(f"bad mount point: {m.mount_point!r}")
        conf[f"{VIEWFS_TABLE}.link.{point}"] = m.target
        conf.update({k: str(v) for k, v in m.hadoop_conf.items()})
    return conf


def needs_s3a(mounts: Iterable[MountLink | Sequence]) -> bool:
    """Whether any mount points at S3 (so the cluster needs runtime.s3a_jars() on its class path)."""
    return any(as_mount(m).target.startswith(("s3a:", "s3:")) for m in mounts)


def needs_azure(mounts: Iterable[MountLink | Sequence]) -> bool:
    """Whether any mount points at Azure storage (so the cluster needs runtime.azure_jars())."""
    return any(as_mount(m).target.startswith(("abfs:", "abfss:", "wasb:", "wasbs:")) for m in mounts)


def cluster_jvm_classpath(mounts: Iterable[MountLink | Sequence], always: Sequence[str] = ("azure",)) -> list[Path]:
    """The cloud connector jars for a cluster's class path.

    Those its mounts need (FileNotFoundError when not fetched), and the connectors named in `always`
    whenever the JVM cache holds them: a JVM's class path is fixed when it starts, so a mount made
    later (from a notebook, on a running cluster) is read by Spark without a restart only if its
    connector is already there. Azure's jars (1 MB) are always there; S3A's only for an s3a mount
    that exists at start: its AWS SDK bundle (650 MB, 400,000 entries) costs every driver start
    seconds and ~100 MB of memory (bench/connector_classpath.py).
    """
    from brickyard.compute import runtime

    mounts = list(mounts)
    jars: list[Path] = []
    for kind, needed, connector in (("s3a", needs_s3a(mounts), runtime.s3a_jars),
                                    ("azure", needs_azure(mounts), runtime.azure_jars)):
        if not needed and kind not in always:
            continue
        try:
            jars += connector()
        except FileNotFoundError:
            if needed:
                raise
    return jars


def cluster_spark_conf(
    *,
    app_name: str,
    master: str,
    dbfs_root: Path | str,
    metastore_uri: str,
    delta_jars: Sequence[Path | str],
    tmp_dir: Path | str,
    mounts: Iterable[MountLink | Sequence] = (),
    user_jars: Sequence[Path | str] = (),
    classpath_jars: Sequence[Path | str] = (),
    ui_port: int | None = None,
    local_dir: Path | str | None = None,
    library_dir: Path | str | None = None,
    env: Mapping[str, str] | None = None,
    python: str = sys.executable,
    bind_host: str = "127.0.0.1",
    user_conf: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Build the Spark configuration of one cluster's driver (and so of its executors).

    master: `local[N]` (Single Node) or `spark://host:port`. delta_jars/user_jars go to
    spark.jars (shipped to executors); classpath_jars (e.g. the 686 MB S3A bundle) are put
    on the driver and executor class path in place, so they must exist at the same path on
    every host. env (spark_env_vars) reaches executors and their Python workers;
    library_dir (the cluster's own site-packages) is put first on their PYTHONPATH.
    user_conf (the cluster's spark_conf) is merged last: it wins, except that list-valued
    keys (spark.jars, extra class paths and Java options) are joined to ours.
    """
    tmp = Path(tmp_dir)
    java_opts = f"-Djava.io.tmpdir={tmp}"
    conf: dict[str, str] = {
        "spark.master": master,
        "spark.app.name": app_name,
        "spark.driver.host": bind_host,
        "spark.driver.bindAddress": bind_host,
        # Delta Lake as the default table format.
        "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
        "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
        "spark.sql.sources.default": "delta",
        # spark.sql(text, args=...) with Delta's SQL extension on Spark 4.2 otherwise fails with
        # UNBOUND_SQL_PARAMETER: bind parameters the way Spark 3.5 did (in expressions).
        "spark.sql.legacy.parameterSubstitution.constantsOnly": "true",
        "spark.jars": ",".join(str(j) for j in [*delta_jars, *user_jars]),
        # Delta's default log store needs a FileContext (AbstractFileSystem), which the dbfs
        # mount table has not; this one commits by exists-check + rename through FileSystem
        # (atomic within a driver, a small race between two drivers committing at once).
        "spark.delta.logStore.dbfs.impl": "io.delta.storage.LocalLogStore",
        # Delta replays its log in 50 tasks by default: seconds of overhead per small table here.
        "spark.databricks.delta.snapshotPartitions": "8",
        "spark.ui.showConsoleProgress": "false",
        # The workspace's one catalog: the shared Hive metastore service, the warehouse in DBFS.
        "spark.sql.catalogImplementation": "hive",
        "spark.hadoop.hive.metastore.uris": metastore_uri,
        "spark.sql.warehouse.dir": WAREHOUSE_DIR,
        # Hive's scratch folders default to /tmp/hive on the default FS (now DBFS): keep them local.
        "spark.hadoop.hive.exec.scratchdir": local_uri(tmp / "hive-scratch"),
        "spark.hadoop.hive.exec.local.scratchdir": str(tmp / "hive-local"),
        "spark.hadoop.hive.downloaded.resources.dir": str(tmp / "hive-resources"),
        # Hive and Spark write /tmp/<uuid>_resources etc. whatever TMPDIR says.
        "spark.driver.extraJavaOptions": java_opts,
        "spark.executor.extraJavaOptions": java_opts,
        "spark.pyspark.python": python,
        "spark.pyspark.driver.python": python,
        "spark.ui.enabled": "true" if ui_port is not None else "false",
    }
    conf.update({f"spark.hadoop.{k}": v for k, v in dbfs_hadoop_conf(dbfs_root, mounts).items()})
    if ui_port is not None:
        conf["spark.ui.port"] = str(ui_port)
        conf["spark.ui.portMaxRetries"] = "0"  # a busy port must fail loudly, not move silently
    if local_dir is not None:
        conf["spark.local.dir"] = str(local_dir)
    if classpath_jars:
        cp = ":".join(str(j) for j in classpath_jars)
        conf["spark.driver.extraClassPath"] = cp
        conf["spark.executor.extraClassPath"] = cp
    env = dict(env or {})
    if library_dir is not None:
        env["PYTHONPATH"] = ":".join(p for p in (str(library_dir), env.get("PYTHONPATH", "")) if p)
    for key, value in env.items():
        conf[f"spark.executorEnv.{key}"] = str(value)
    for key, value in (user_conf or {}).items():
        value = str(value)
        sep = _JOINED.get(key)
        if sep and conf.get(key) and value:
            conf[key] = conf[key] + sep + value
        else:
            conf[key] = value
    return conf


def local_master(cores: int | str = "*") -> str:
    """The master URL of a Single Node cluster."""
    return f"local[{cores}]"
