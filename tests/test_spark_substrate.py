"""The Spark substrate of clusters, on real JVMs: one shared Hive metastore, Delta by default,
`dbfs:` paths and mounts, a standalone master with two worker processes."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from brickyard.compute import runtime
from brickyard.compute.metastore import DERBY_CLASS, DERBY_USER, MAIN_CLASS, Metastore, MetastoreError
from brickyard.compute.spark_conf import MountLink, cluster_spark_conf, dbfs_hadoop_conf, local_master
from brickyard.compute.standalone import StandaloneCluster, StandaloneError, stop_recorded

pytestmark = pytest.mark.slow

RESULT = "@@result@@ "

# A driver process: builds its SparkSession from the conf it is given, then runs code sent as
# JSON lines on stdin (state kept between them) and answers each with one result line.
BOOT = textwrap.dedent(f"""
    import json, sys, time, traceback
    t0 = time.time()
    from pyspark import SparkConf
    from pyspark.sql import SparkSession
    conf = json.loads(sys.argv[1])
    spark = SparkSession.builder.config(conf=SparkConf().setAll(conf.items())).getOrCreate()
    ns = {{"spark": spark, "sc": spark.sparkContext, "session_seconds": time.time() - t0}}
    for line in sys.stdin:
        try:
            exec(json.loads(line), ns)
            out = {{"ok": True, "result": ns.get("result")}}
        except Exception as exc:
            out = {{"ok": False, "error": "".join(traceback.format_exception_only(type(exc), exc))[-3000:]}}
        ns.pop("result", None)
        print({RESULT!r} + json.dumps(out, default=str), flush=True)
""")


class Driver:
    """A Python process with its own SparkSession (one driver JVM)."""

    def __init__(self, name: str, conf: dict, log_dir: Path):
        self.name = name
        self.log = log_dir / f"{name}.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-c", BOOT, json.dumps(conf)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=open(self.log, "wb"), text=True, cwd=log_dir,
        )

    def run(self, code: str):
        """Run code in the driver; returns its `result` variable (raises with the driver's error)."""
        _t0 = time.monotonic()
        try:
            return self._run(code)
        finally:
            if os.environ.get("SUBSTRATE_PROFILE"):
                print(f"\n[{self.name} {time.monotonic() - _t0:5.1f}s] {textwrap.dedent(code).strip()[:90]!r}")

    def _run(self, code: str):
        self.proc.stdin.write(json.dumps(textwrap.dedent(code)) + "\n")
        self.proc.stdin.flush()
        for line in self.proc.stdout:
            if line.startswith(RESULT):
                out = json.loads(line[len(RESULT):])
                if not out["ok"]:
                    raise AssertionError(f"{self.name}: {out['error']}")
                return out["result"]
        raise AssertionError(f"{self.name} exited: {self.log.read_text()[-3000:]}")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()  # the loop ends; the JVM goes with the Python process
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("substrate")
    (path / "dbfs" / "FileStore").mkdir(parents=True)
    (path / "mount-target").mkdir()
    return path


@pytest.fixture(scope="module")
def mounts(home) -> list:
    return [MountLink("/mnt/ext", f"file://{home / 'mount-target'}")]


@pytest.fixture(scope="module")
def metastore(home, mounts):
    ms = Metastore(home, home / "dbfs", mounts=mounts)
    t0 = time.monotonic()
    ms.start()
    print(f"\nmetastore ready in {time.monotonic() - t0:.1f} s, {runtime.rss_mib(ms.pid):.0f} MiB")
    yield ms
    ms.stop()
    assert not runtime.pid_alive(ms.pid)
    assert not processes_of(home / "metastore")  # neither the service nor its Derby network server


def processes_of(metastore_dir: Path) -> list[int]:
    """Pids of the JVMs (Hive service, Derby server) whose derby.system.home is metastore_dir."""
    marker = f"-Dderby.system.home={metastore_dir}".encode()
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and marker + b"\0" in (proc / "cmdline").read_bytes() \
                    and runtime.pid_alive(int(proc.name)):
                found.append(int(proc.name))
        except OSError:
            pass
    return found


def listen_addresses(port: int) -> set[str]:
    """The local addresses of the TCP sockets listening on port (from /proc/net/tcp and tcp6)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            addr, hexport = local.split(":")
            if state == "0A" and int(hexport, 16) == port:  # 0A: LISTEN
                raw = bytes.fromhex(addr)
                # /proc prints each 32-bit word in host (little-endian) order.
                raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
                found.add(socket.inet_ntop(socket.AF_INET if len(raw) == 4 else socket.AF_INET6, raw))
    return found


def ij_rows(result: subprocess.CompletedProcess) -> list[str]:
    """The data lines of an ij SELECT (stripped), failing on an ij error."""
    assert result.returncode == 0 and "ERROR" not in result.stdout, result.stdout[-2000:] + result.stderr[-2000:]
    lines = [ln.strip() for ln in result.stdout.splitlines()]
    rows, inside = [], False
    for ln in lines:
        if ln.startswith("---"):
            inside = True
        elif inside and (not ln or ln.startswith("ij>") or "row selected" in ln or "rows selected" in ln):
            inside = False
        elif inside:
            rows.append(ln)
    return rows


@pytest.fixture(scope="module")
def standalone(home):
    cluster = StandaloneCluster(home / "standalone")
    t0 = time.monotonic()
    cluster.start_master()
    names = [cluster.add_worker(cores=1, memory_mb=768) for _ in range(2)]
    cluster.wait_for_workers(names)
    print(f"\nstandalone master + 2 workers in {time.monotonic() - t0:.1f} s, RSS {cluster.rss_mib()}")
    yield cluster
    cluster.stop()


def driver_conf(home, metastore, mounts, name: str, master: str, **extra) -> dict:
    return cluster_spark_conf(
        app_name=name, master=master, dbfs_root=home / "dbfs", metastore_uri=metastore.url,
        delta_jars=runtime.delta_jars(), tmp_dir=home / name / "tmp", local_dir=home / name / "local",
        mounts=mounts, library_dir=home / name / "libs", env={"LAB_ENV": "wine"}, **extra,
    )


@pytest.fixture(scope="module")
def drivers(home, metastore, standalone, mounts):
    """Driver A on local[2], driver B on the standalone cluster: two processes, one catalog."""
    (home / "b" / "libs").mkdir(parents=True)
    (home / "b" / "libs" / "labhelper.py").write_text("def tag():\n    return 'from-cluster-libs'\n")
    t0 = time.monotonic()
    a = Driver("a", driver_conf(home, metastore, mounts, "a", local_master(2)), home)
    b = Driver("b", driver_conf(home, metastore, mounts, "b", standalone.master_url,
                                user_conf={"spark.executor.memory": "512m", "spark.executor.cores": "1"}), home)
    try:
        a.run("result = spark.range(1).count()")
        b.run("result = spark.range(1).count()")
        print(f"\ntwo cold drivers (Delta + Hive) to first count in {time.monotonic() - t0:.1f} s; "
              f"session only: A {a.run('result = session_seconds'):.1f} s, B {b.run('result = session_seconds'):.1f} s")
        yield a, b
    finally:
        a.close()
        b.close()


def test_one_catalog_delta_tables_across_two_processes(drivers, home):
    a, b = drivers
    db = f"lab_{uuid.uuid4().hex[:8]}"
    assert a.run(f"""
        spark.sql("CREATE DATABASE {db}")
        df = spark.createDataFrame([(1, 7.0, 'red'), (2, 5.5, 'white'), (3, 6.1, 'red')], 'id INT, alcohol DOUBLE, kind STRING')
        df.write.saveAsTable("{db}.wine")   # no format given: Delta is the default
        df.write.format("delta").save("dbfs:/data/{db}/ext")
        spark.sql("CREATE TABLE {db}.ext USING DELTA LOCATION 'dbfs:/data/{db}/ext'")
        result = spark.sql("DESCRIBE DETAIL {db}.wine").select("format", "location").first().asDict()
    """) == {"format": "delta", "location": f"dbfs:/user/hive/warehouse/{db}.db/wine"}
    assert (home / "dbfs" / "user" / "hive" / "warehouse" / f"{db}.db" / "wine" / "_delta_log").is_dir()
    assert (home / "dbfs" / "data" / db / "ext" / "_delta_log").is_dir()

    # B, another process on another master, sees the same catalog.
    assert b.run(f"result = sorted(r.tableName for r in spark.sql('SHOW TABLES IN {db}').collect())") == ["ext", "wine"]
    assert b.run(f"result = [spark.table('{db}.wine').count(), spark.table('{db}.ext').count()]") == [3, 3]
    assert b.run(f"result = spark.sql('DESCRIBE EXTENDED {db}.ext').where(\"col_name = 'Provider'\").first().data_type") \
        == "delta"

    a.run(f"spark.createDataFrame([(4, 9.9, 'white'), (5, 8.0, 'red')], 'id INT, alcohol DOUBLE, kind STRING')"
          f".write.mode('append').saveAsTable('{db}.wine')")
    assert b.run(f"spark.sql('REFRESH TABLE {db}.wine'); result = spark.table('{db}.wine').count()") == 5

    # DML from B (its tasks run in the worker processes' executors, writing through dbfs:).
    b.run(f"""
        spark.sql("DELETE FROM {db}.wine WHERE id = 2")
        spark.sql("UPDATE {db}.wine SET alcohol = alcohol + 1 WHERE kind = 'red'")
        spark.sql('''MERGE INTO {db}.wine t USING (SELECT 5 AS id, 0.5 AS alcohol, 'rose' AS kind
                     UNION ALL SELECT 6, 12.0, 'white') s ON t.id = s.id
                     WHEN MATCHED THEN UPDATE SET * WHEN NOT MATCHED THEN INSERT *''')
    """)
    history = b.run(f"result = [r.operation for r in spark.sql('DESCRIBE HISTORY {db}.wine').collect()]")
    assert history[:4] == ["MERGE", "UPDATE", "DELETE", "WRITE"] and history[-1].startswith("CREATE")
    rows = a.run(f"spark.sql('REFRESH TABLE {db}.wine'); "
                 f"result = [(r.id, round(r.alcohol, 3), r.kind) for r in spark.table('{db}.wine').orderBy('id').collect()]")
    assert rows == [[1, 8.0, "red"], [3, 7.1, "red"], [4, 9.9, "white"], [5, 0.5, "rose"], [6, 12.0, "white"]]
    assert a.run("from delta.tables import DeltaTable; "
                 f"result = DeltaTable.forName(spark, '{db}.wine').history().count()") == len(history)

    a.run(f"spark.sql('DROP TABLE {db}.ext'); spark.sql('DROP TABLE {db}.wine')")
    assert b.run(f"result = spark.sql('SHOW TABLES IN {db}').count()") == 0
    assert not (home / "dbfs" / "user" / "hive" / "warehouse" / f"{db}.db" / "wine").exists()  # managed: gone
    assert (home / "dbfs" / "data" / db / "ext" / "_delta_log").is_dir()  # external: kept


def test_dbfs_paths_and_mounts(drivers, home):
    a, b = drivers
    (home / "dbfs" / "FileStore" / "x.csv").write_text("quality,alcohol\n7,12.5\n5,9.1\n6,10.0\n")
    for driver in (a, b):
        assert driver.run("result = spark.read.csv('dbfs:/FileStore/x.csv', header=True).count()") == 3
        assert driver.run("result = spark.read.csv('/FileStore/x.csv', header=True, inferSchema=True)"
                          ".agg({'quality': 'max'}).first()[0]") == 7
    with pytest.raises(AssertionError, match="PATH_NOT_FOUND|does not exist"):
        a.run("spark.read.csv('dbfs:/FileStore/missing.csv').count()")

    # A mount is a link to its target: writes land there (from B's executors too), reads see them.
    a.run("spark.range(10).write.mode('overwrite').parquet('dbfs:/mnt/ext/from_a')")
    b.run("spark.range(20).repartition(2).write.mode('overwrite').parquet('dbfs:/mnt/ext/from_b')")
    target = home / "mount-target"
    assert any(p.suffix == ".parquet" for p in (target / "from_a").iterdir())
    assert len([p for p in (target / "from_b").iterdir() if p.suffix == ".parquet"]) == 2
    assert not (home / "dbfs" / "mnt" / "ext" / "from_a").exists()
    assert b.run("result = spark.read.parquet('dbfs:/mnt/ext/from_a').count()") == 10
    (target / "notes.csv").write_text("a,b\n1,2\n")
    assert a.run("result = spark.read.csv('/mnt/ext/notes.csv', header=True).first().asDict()") == {"a": "1", "b": "2"}


def test_standalone_job_runs_on_two_executors(drivers, standalone, home):
    _, b = drivers
    state = standalone.master_state()
    assert state["aliveworkers"] == 2 and len(state["activeapps"]) == 1
    # Each executor runs in its own folder work/<worker>/<app-id>/<executor-id>: the tasks' cwd says where.
    where = b.run("""
        import os
        from pyspark import TaskContext
        def probe(_):
            import labhelper  # from the cluster's library folder, on the executors' PYTHONPATH
            yield (TaskContext.get().partitionId(), os.getcwd(), os.environ.get('LAB_ENV'), labhelper.tag())
        result = sc.parallelize(range(4), 4).mapPartitions(probe).collect()
    """)
    assert sorted(p for p, *_ in where) == [0, 1, 2, 3]
    dirs = {Path(cwd) for _, cwd, _, _ in where}
    assert len(dirs) == 2, where
    assert {d.parent.parent.name for d in dirs} == {"worker-1", "worker-2"}
    assert all(d.is_relative_to(home / "standalone" / "work") for d in dirs)
    assert {(env, tag) for _, _, env, tag in where} == {("wine", "from-cluster-libs")}
    executors = b.run("""
        it, result = sc._jsc.sc().statusStore().executorList(True).iterator(), []
        while it.hasNext():
            result.append(it.next().id())
    """)
    assert sorted(executors) == sorted({"driver", *(d.name for d in dirs)})


def test_metastore_is_adopted_and_checks_its_port(home, metastore, mounts, tmp_path):
    again = Metastore(home, home / "dbfs", mounts=mounts)
    t0 = time.monotonic()
    assert again.start() == metastore.url
    assert again.pid == metastore.pid and time.monotonic() - t0 < 2
    assert (again.derby_pid, again.derby_port) == (metastore.derby_pid, metastore.derby_port)  # adopted too
    assert again.alive()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        other = Metastore(tmp_path, tmp_path / "dbfs", port=busy.getsockname()[1])
        with pytest.raises(MetastoreError, match="taken"):
            other.start()
    with pytest.raises(ValueError, match="JDBC"):
        Metastore(tmp_path, tmp_path / "dbfs", jdbc_url="jdbc:mysql://db/x").hive_site()


def test_metastore_database_is_a_derby_network_server(home, metastore, drivers):
    """By default the catalog lives in a Derby network server of its own: loopback only, with a password,
    reached by the service through Derby's client driver, and open to a second JDBC client (ij)."""
    a, _ = drivers
    db = f"derby_{uuid.uuid4().hex[:8]}"
    a.run(f"spark.sql('CREATE DATABASE {db}'); spark.range(3).write.saveAsTable('{db}.seen_by_ij')")

    assert runtime.pid_alive(metastore.derby_pid, DERBY_CLASS)
    assert metastore.derby_pid != metastore.pid and metastore.derby_pid in processes_of(home / "metastore")
    assert listen_addresses(metastore.derby_port) in ({"127.0.0.1"}, {"::ffff:127.0.0.1"})
    site = (home / "metastore" / "conf" / "hive-site.xml").read_text()
    assert f"<value>jdbc:derby://127.0.0.1:{metastore.derby_port}/metastore_db;create=true</value>" in site
    assert "<value>org.apache.derby.jdbc.ClientDriver</value>" in site
    assert "EmbeddedDriver" not in site and f"<value>{DERBY_USER}</value>" in site
    props = home / "metastore" / "derby.properties"
    assert "derby.connection.requireAuthentication=true" in props.read_text()
    for private in (props, home / "metastore" / "conf" / "hive-site.xml"):
        assert private.stat().st_mode & 0o077 == 0, private

    # A second JDBC client sees the catalog the Spark driver wrote through the service.
    rows = ij_rows(metastore.derby_ij(
        'SELECT t."TBL_NAME" FROM APP.TBLS t JOIN APP.DBS d ON t."DB_ID" = d."DB_ID" '
        f"WHERE d.\"NAME\" = '{db}';\n"))
    assert rows == ["seen_by_ij"]
    # Without the password, no way in.
    url = f"jdbc:derby://127.0.0.1:{metastore.derby_port}/metastore_db"
    for attempt in (f"connect '{url}';", f"connect '{url};user={DERBY_USER};password=wrong';"):
        out = subprocess.run([runtime.java_bin(), "-cp", ":".join(map(str, Metastore.derby_classpath(client=True))),
                              "org.apache.derby.tools.ij"], input=attempt + "\n", capture_output=True, text=True,
                             timeout=60).stdout
        assert "08004" in out and "authentication" in out.lower(), out


def test_metastore_restart_keeps_the_catalog_and_leaves_no_process(home, metastore, mounts, drivers):
    a, _ = drivers
    db = f"kept_{uuid.uuid4().hex[:8]}"
    a.run(f"spark.sql('CREATE DATABASE {db}'); spark.range(4).write.saveAsTable('{db}.kept')")
    old = (metastore.pid, metastore.derby_pid)
    metastore.stop()
    assert not any(runtime.pid_alive(p) for p in old)
    assert processes_of(home / "metastore") == []
    assert not (home / "metastore" / "derby.json").exists() and not (home / "metastore" / "metastore.json").exists()
    assert "Database 'metastore_db' shutdown" in (home / "metastore" / "derby.log").read_text()  # a clean stop

    metastore.start()
    assert metastore.alive() and metastore.derby_pid not in old
    c = Driver("c", driver_conf(home, metastore, mounts, "c", local_master(1)), home)
    try:
        assert c.run(f"result = [r.tableName for r in spark.sql('SHOW TABLES IN {db}').collect()]") == ["kept"]
        assert c.run(f"result = spark.table('{db}.kept').count()") == 4
    finally:
        c.close()


def test_a_home_made_with_embedded_derby_keeps_its_catalog(tmp_path):
    """Homes whose service ran Derby embedded: the network server opens the same metastore_db, and the
    service, started anew because its configuration changed, finds the tables in schema APP."""
    mdir = tmp_path / "metastore"
    mdir.mkdir()
    embedded = f"jdbc:derby:;databaseName={mdir / 'metastore_db'};create=true"
    cp = ":".join(map(str, Metastore.derby_classpath()))
    made = subprocess.run([runtime.java_bin(), f"-Dderby.system.home={tmp_path / 'ij'}", "-cp", cp,
                           "org.apache.derby.tools.ij"], capture_output=True, text=True, timeout=60,
                          input=f"connect '{embedded}';\nCREATE TABLE APP.LAB_MARK (NOTE VARCHAR(40));\n"
                                "INSERT INTO APP.LAB_MARK VALUES ('made embedded');\n")
    assert made.returncode == 0 and "ERROR" not in made.stdout, made.stdout
    old = Metastore(tmp_path, tmp_path / "dbfs", jdbc_url=embedded)
    old.start()  # the service as it was: Derby inside it
    assert old.hive_site()["javax.jdo.option.ConnectionDriverName"] == "org.apache.derby.jdbc.EmbeddedDriver"
    assert old.derby_pid == 0 and not (mdir / "derby.json").exists()
    new = Metastore(tmp_path, tmp_path / "dbfs", port=old.port)
    try:
        assert new.start() == old.url
        assert not runtime.pid_alive(old.pid, MAIN_CLASS) and new.pid != old.pid and new.alive()
        assert ij_rows(new.derby_ij("SELECT NOTE FROM APP.LAB_MARK;\n")) == ["made embedded"]
        assert ij_rows(new.derby_ij('SELECT "NAME" FROM APP.DBS;\n')) == ["default"]
        # No second copy of the catalog under another user's schema.
        assert ij_rows(new.derby_ij(
            "SELECT DISTINCT s.SCHEMANAME FROM SYS.SYSTABLES t JOIN SYS.SYSSCHEMAS s ON t.SCHEMAID = s.SCHEMAID "
            "WHERE t.TABLETYPE = 'T' AND s.SCHEMANAME NOT LIKE 'SYS%';\n")) == ["APP"]

        # A Derby server that died (kill -9) is started again by the next workspace, and the service with it.
        crashed = (new.pid, new.derby_pid)
        new._derby_proc.kill()
        new._derby_proc.wait(30)
        again = Metastore(tmp_path, tmp_path / "dbfs")
        assert again.start() == new.url
        assert again.alive() and again.pid != crashed[0] and again.derby_pid != crashed[1]
        assert not runtime.pid_alive(crashed[0], MAIN_CLASS)
        assert ij_rows(again.derby_ij("SELECT NOTE FROM APP.LAB_MARK;\n")) == ["made embedded"]
    finally:
        new.stop()
    assert processes_of(mdir) == []


def test_metastore_failure_quotes_its_log(tmp_path):
    bad = Metastore(tmp_path, tmp_path / "dbfs", heap="1k")  # the JVM refuses this heap at once
    with pytest.raises(MetastoreError, match="exited during start") as err:
        bad.start(timeout=60)
    assert "heap" in str(err.value).lower()
    assert processes_of(tmp_path / "metastore") == []  # its Derby network server went too


def test_standalone_errors_and_cleanup(tmp_path):
    cluster = StandaloneCluster(tmp_path / "sa")
    with pytest.raises(StandaloneError, match="not started"):
        cluster.add_worker(1, 512)
    cluster.start_master()
    try:
        with pytest.raises(ValueError):
            cluster.add_worker(0, 512)
        cluster.add_worker(1, 512, name="w")
        with pytest.raises(ValueError, match="duplicate"):
            cluster.add_worker(1, 512, name="w")
        cluster.wait_for_workers(["w"])  # a worker that died at start says why here, not as a count below
        pids = [d.pid for d in cluster.daemons.values()]
    finally:
        # What a restarted workspace does with a cluster it no longer holds: stop what was recorded.
        assert stop_recorded(tmp_path / "sa") == 2
    deadline = time.monotonic() + 10
    while any(runtime.pid_alive(p) for p in pids) and time.monotonic() < deadline:
        for proc in cluster._procs.values():
            proc.poll()  # reap our children
        time.sleep(0.1)
    assert not any(runtime.pid_alive(p) for p in pids)


def test_spark_conf_merges_user_conf_last(tmp_path):
    conf = cluster_spark_conf(
        app_name="c1", master="local[*]", dbfs_root=tmp_path / "dbfs", metastore_uri="thrift://127.0.0.1:9083",
        delta_jars=["/j/delta.jar"], user_jars=["/j/user.jar"], tmp_dir=tmp_path / "tmp", ui_port=4050,
        mounts=[("/mnt/s3data/", "s3a://bucket/prefix", {"fs.s3a.bucket.bucket.endpoint": "http://127.0.0.1:9000"})],
        library_dir="/libs", env={"PYTHONPATH": "/extra", "A": "1"},
        user_conf={"spark.jars": "/j/more.jar", "spark.sql.shuffle.partitions": "8",
                   "spark.driver.extraJavaOptions": "-Dx=1", "spark.sql.sources.default": "parquet"},
    )
    assert conf["spark.jars"] == "/j/delta.jar,/j/user.jar,/j/more.jar"
    assert conf["spark.driver.extraJavaOptions"] == f"-Djava.io.tmpdir={tmp_path / 'tmp'} -Dx=1"
    assert conf["spark.sql.sources.default"] == "parquet" and conf["spark.sql.shuffle.partitions"] == "8"
    assert conf["spark.executorEnv.PYTHONPATH"] == "/libs:/extra" and conf["spark.executorEnv.A"] == "1"
    assert conf["spark.hadoop.fs.viewfs.mounttable.default.link./mnt/s3data"] == "s3a://bucket/prefix"
    assert conf["spark.hadoop.fs.s3a.bucket.bucket.endpoint"] == "http://127.0.0.1:9000"
    assert conf["spark.hadoop.fs.viewfs.mounttable.default.linkFallback"] == f"file://{tmp_path / 'dbfs'}"
    assert conf["spark.ui.port"] == "4050" and conf["spark.sql.warehouse.dir"] == "dbfs:/user/hive/warehouse"
    with pytest.raises(ValueError, match="mount point"):
        dbfs_hadoop_conf(tmp_path, [("/mnt/../etc", "file:///etc")])
