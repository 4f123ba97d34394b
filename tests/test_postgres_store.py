"""The workspace on PostgreSQL (BRICKYARD_DATABASE_URL): its own tables and MLflow's, through a
real `brickyard up` process and the real clients; the rows are checked in PostgreSQL itself."""
from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import timedelta

import pytest
import requests
from conftest import ADMIN_TOKEN, free_port
from pg_support import PG_PASSWORD, postgres  # noqa: F401  (the fixture)

from brickyard.compute.metastore import Metastore

pytestmark = pytest.mark.slow


class CliServer:
    """`brickyard up` on a PostgreSQL database, restartable on the same home and database.

    Its output goes to a file (a pipe nobody reads would fill up and block the server)."""

    def __init__(self, home, url: str):
        self.home, self.port = home, free_port()
        self.env = {**os.environ, "BRICKYARD_HOME": str(home), "BRICKYARD_PORT": str(self.port),
                    "BRICKYARD_HOST": "127.0.0.1", "BRICKYARD_DATABASE_URL": url,
                    "BRICKYARD_BOOTSTRAP_TOKEN": ADMIN_TOKEN}
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = home.parent / "server.log"
        self.proc: subprocess.Popen | None = None

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "brickyard.cli", "up", "--profile", "no"],
                                         env=self.env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"server exited: {self.output[-3000:]}"
            try:
                if requests.get(f"{self.url}/health", timeout=1).ok:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"server did not come up: {self.output[-3000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(90)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            assert self.proc.returncode == 0, self.output[-3000:]
        self.proc = None

    def client(self, token: str = ADMIN_TOKEN):
        from databricks.sdk import WorkspaceClient
        from databricks.sdk.core import Config

        return WorkspaceClient(config=Config(host=self.url, token=token, retry_timeout_seconds=20, auth_type="pat"))


@pytest.fixture(scope="module")
def database(postgres):  # noqa: F811
    return postgres.create_database(f"by_{uuid.uuid4().hex[:8]}")


@pytest.fixture(scope="module")
def workspace(postgres, database, tmp_path_factory):  # noqa: F811
    home = tmp_path_factory.mktemp("pgws") / "home"
    srv = CliServer(home, database)
    srv.start()
    try:
        yield srv
    finally:
        try:
            srv.stop()
        finally:
            Metastore(home, home / "dbfs").stop()  # started with the cluster; it outlives the workspace


def test_workspace_data_in_postgres_survives_restart(workspace, postgres, database):  # noqa: F811
    from databricks.sdk.service import compute
    from databricks.sdk.service.workspace import ExportFormat, ImportFormat, Language

    db = database.rsplit("/", 1)[1]
    w = workspace.client()
    user = w.users.create(user_name="pg-user@example.com")
    r = requests.post(f"{workspace.url}/api/2.0/token-management/on-behalf-of/tokens",
                      headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                      json={"application_id": user.id, "comment": "pg obo"}, timeout=30)
    assert r.status_code == 200, r.text
    user_token = r.json()["token_value"]
    w.tokens.create(comment="pg admin token", lifetime_seconds=3600)
    w.secrets.create_scope(scope="pgscope")
    w.secrets.put_secret(scope="pgscope", key="pw", string_value="pg-s3cret-value")
    notebook = b"# Databricks notebook source\nprint('stored in postgres')\n"
    w.workspace.mkdirs("/Shared/pg")
    w.workspace.import_("/Shared/pg/nb", content=base64.b64encode(notebook).decode(),
                        format=ImportFormat.SOURCE, language=Language.PYTHON)
    # A cluster: its catalog (the workspace's Hive metastore) is on the same PostgreSQL, schema hive.
    cluster = w.clusters.create_and_wait(
        cluster_name="pg-cluster", spark_version="17.3.x-cpu-ml-scala2.13", node_type_id="local.medium",
        num_workers=0, spark_conf={"spark.databricks.cluster.profile": "singleNode", "spark.master": "local[1]"},
        custom_tags={"ResourceClass": "SingleNode"}, timeout=timedelta(minutes=5))
    cluster_id = cluster.cluster_id
    ctx = w.command_execution.create_and_wait(cluster_id=cluster_id, language=compute.Language.SQL,
                                              timeout=timedelta(minutes=3))
    done = w.command_execution.execute_and_wait(
        cluster_id=cluster_id, context_id=ctx.id, language=compute.Language.SQL,
        command="CREATE TABLE default.pg_wine USING DELTA AS SELECT 1 AS id, 'red' AS kind",
        timeout=timedelta(minutes=3))
    assert done.status == compute.CommandStatus.FINISHED and done.results.result_type != compute.ResultType.ERROR, \
        done.results
    assert postgres.query(db, 'SELECT d."NAME", t."TBL_NAME" FROM hive."TBLS" t JOIN hive."DBS" d '
                              'ON d."DB_ID" = t."DB_ID" WHERE t."TBL_NAME" = \'pg_wine\'') == [("default", "pg_wine")]
    assert not (workspace.home / "metastore" / "metastore_db").exists()  # no Derby
    w.clusters.delete(cluster_id)
    w.clusters.wait_get_cluster_terminated(cluster_id, timeout=timedelta(minutes=3))

    # The rows are in PostgreSQL (the workspace's tables in the default schema), not in SQLite.
    assert not (workspace.home / "workspace.db").exists()
    assert postgres.query(db, "SELECT user_name, active FROM users WHERE id = %s", (int(user.id),)) == \
        [("pg-user@example.com", True)]
    comments = {c for (c,) in postgres.query(db, "SELECT comment FROM tokens")}
    assert {"pg obo", "pg admin token"} <= comments
    [(ciphertext,)] = postgres.query(
        db, "SELECT s.ciphertext FROM secrets s JOIN secret_scopes c ON c.id = s.scope_id "
            "WHERE c.name = 'pgscope' AND s.key = 'pw'")
    assert ciphertext and b"pg-s3cret-value" not in bytes(ciphertext)  # encrypted at rest
    [(content,)] = postgres.query(db, "SELECT content FROM workspace_objects WHERE path = '/Shared/pg/nb'")
    assert b"stored in postgres" in bytes(content)
    assert postgres.query(db, "SELECT cluster_name, state FROM clusters WHERE cluster_id = %s", (cluster_id,)) == \
        [("pg-cluster", "TERMINATED")]
    assert postgres.query(db, "SELECT count(*) FROM cluster_events WHERE cluster_id = %s", (cluster_id,))[0][0] > 0
    [(head,)] = postgres.query(db, "SELECT version_num FROM alembic_version")
    assert head  # every migration applied on PostgreSQL
    # The database password is in the metastore's private hive-site.xml only, never in a log.
    assert PG_PASSWORD not in (workspace.home / "metastore" / "metastore.log").read_text(errors="replace")

    workspace.stop()
    assert "Brickyard workspace stopped." in workspace.output
    assert PG_PASSWORD not in workspace.output and "s3cr%3At" not in workspace.output
    workspace.start()
    w = workspace.client()
    assert w.users.get(user.id).user_name == "pg-user@example.com"
    assert any(t.comment == "pg admin token" for t in w.tokens.list())
    assert workspace.client(user_token).current_user.me().user_name == "pg-user@example.com"
    assert w.dbutils.secrets.get("pgscope", "pw") == "pg-s3cret-value"
    exported = w.workspace.export("/Shared/pg/nb", format=ExportFormat.SOURCE)
    assert b"stored in postgres" in base64.b64decode(exported.content)
    got = w.clusters.get(cluster_id)
    assert (got.cluster_name, got.state.value) == ("pg-cluster", "TERMINATED")
    # A too-long value is a 400 on PostgreSQL too (it enforces column lengths; SQLite does not).
    r = requests.post(f"{workspace.url}/api/2.0/secrets/scopes/create",
                      headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, json={"scope": "s" * 300}, timeout=30)
    assert r.status_code == 400, r.text


def test_mlflow_tracking_and_registry_in_postgres(workspace, postgres, database, monkeypatch):  # noqa: F811
    from mlflow import MlflowClient

    db = database.rsplit("/", 1)[1]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", workspace.url)
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", ADMIN_TOKEN)
    client = MlflowClient(tracking_uri=workspace.url, registry_uri=workspace.url)
    name = f"pg-exp-{uuid.uuid4().hex[:6]}"
    experiment_id = client.create_experiment(f"/Shared/{name}")
    run = client.create_run(experiment_id, run_name="pg-run")
    run_id = run.info.run_id
    client.log_param(run_id, "alpha", "0.5")
    for step, value in enumerate((0.7, 0.8, 0.9)):
        client.log_metric(run_id, "auc", value, step=step)
    client.set_terminated(run_id)
    client.create_registered_model(name)
    version = client.create_model_version(name, f"runs:/{run_id}/model", run_id=run_id)
    client.transition_model_version_stage(name, version.version, "Production")
    assert client.get_run(run_id).data.metrics["auc"] == 0.9
    assert client.get_model_version(name, version.version).current_stage == "Production"

    # MLflow's tables are in schema `mlflow` of the workspace's database (its own migrations applied).
    assert postgres.query(db, "SELECT version_num FROM mlflow.alembic_version")[0][0]
    assert postgres.query(db, "SELECT name, status, user_id FROM mlflow.runs WHERE run_uuid = %s", (run_id,)) == \
        [("pg-run", "FINISHED", "admin")]
    assert postgres.query(db, "SELECT key, value FROM mlflow.params WHERE run_uuid = %s", (run_id,)) == \
        [("alpha", "0.5")]
    assert sorted(postgres.query(db, "SELECT step, value FROM mlflow.metrics WHERE run_uuid = %s AND key = 'auc'",
                                 (run_id,))) == [(0, 0.7), (1, 0.8), (2, 0.9)]
    assert postgres.query(db, "SELECT name FROM mlflow.experiments WHERE experiment_id = %s",
                          (int(experiment_id),)) == [(f"/Shared/{name}",)]
    assert postgres.query(db, "SELECT current_stage, run_id FROM mlflow.model_versions WHERE name = %s",
                          (name,)) == [("Production", run_id)]
    # The workspace's own history of the stage change sits with the workspace's tables.
    assert postgres.query(db, "SELECT kind, to_value, user_name FROM mlflow_registry_events WHERE model_name = %s",
                          (name,)) == [("STAGE", "Production", "admin")]
    # Nothing of MLflow in the workspace's schema, and no SQLite file.
    assert postgres.query(db, "SELECT count(*) FROM information_schema.tables "
                              "WHERE table_schema = 'public' AND table_name = 'runs'") == [(0,)]
    assert not (workspace.home / "mlflow.db").exists()



MIGRATE = "import sys; from brickyard.store.db import Store, migrate; s = Store(sys.argv[1]); migrate(s.engine); s.dispose()"


def test_concurrent_first_starts_migrate_once(postgres):  # noqa: F811
    """Workspace processes starting together on a new database: one migrates, the others wait and find it done."""
    url = postgres.create_database(f"mig_{uuid.uuid4().hex[:8]}")
    procs = [subprocess.Popen([sys.executable, "-c", MIGRATE, url], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for _ in range(3)]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outs
    db = url.rsplit("/", 1)[1]
    assert len(postgres.query(db, "SELECT version_num FROM alembic_version")) == 1
    assert postgres.query(db, "SELECT count(*) FROM information_schema.tables WHERE table_name = 'users'") == [(1,)]


OPEN = """import sys
from brickyard.bootstrap import bootstrap
from brickyard.context import open_workspace
from brickyard.settings import Settings
ws = open_workspace(Settings(home=sys.argv[1], database_url=sys.argv[2], master_key=sys.argv[3]))
try:
    bootstrap(ws)
    ws.services["mlflow"].tracking_store().search_experiments()
finally:
    ws.close()
"""


def test_concurrent_first_starts_share_one_database(postgres, tmp_path):  # noqa: F811
    """Workspaces starting together on a new database (one master key): one workspace id, one admin,
    MLflow's migrations run once, none fails."""
    url = postgres.create_database(f"mlm_{uuid.uuid4().hex[:8]}")
    key = base64.b64encode(os.urandom(32)).decode()  # workspaces sharing a database share its master key
    procs = [subprocess.Popen([sys.executable, "-c", OPEN, str(tmp_path / f"h{i}"), url, key], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for i in range(3)]
    outs = [p.communicate(timeout=240)[0] for p in procs]
    errors = ["\n".join(line for line in o.splitlines() if "Error" in line or 'File "/work/main' in line or
                        "DETAIL" in line) for o in outs]
    assert [p.returncode for p in procs] == [0, 0, 0], errors
    db = url.rsplit("/", 1)[1]
    assert len(postgres.query(db, "SELECT version_num FROM mlflow.alembic_version")) == 1
    assert postgres.query(db, "SELECT name FROM mlflow.experiments") == [("Default",)]
    assert postgres.query(db, "SELECT count(*) FROM meta WHERE key = 'workspace_id'") == [(1,)]
    assert postgres.query(db, "SELECT user_name FROM users") == [("admin",)]


def test_database_urls():
    """One URL, three forms: SQLAlchemy with psycopg 3, MLflow's with its schema, the metastore's JDBC."""
    from brickyard.settings import Settings
    from brickyard.store.urls import jdbc_postgres, sqlalchemy_url, with_search_path
    from brickyard.tracking.stores import mlflow_db_url

    url = "postgres://bob:p%40ss%3Aw%2Frd@db.example:6543/by%20team?sslmode=verify-full&sslrootcert=/etc/ca.pem"
    assert sqlalchemy_url(url).startswith("postgresql+psycopg://bob:p%40ss%3Aw%2Frd@db.example:6543/")
    assert sqlalchemy_url("sqlite:////x/workspace.db") == "sqlite:////x/workspace.db"
    assert with_search_path(url, "mlflow").endswith(
        "?options=-csearch_path%3Dmlflow&sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem")
    assert jdbc_postgres(url, "hive") == (
        "jdbc:postgresql://db.example:6543/by%20team?currentSchema=hive&sslmode=verify-full"
        "&sslrootcert=%2Fetc%2Fca.pem", "bob", "p@ss:w/rd")
    assert jdbc_postgres("postgresql://u@[::1]/d", "hive")[0] == "jdbc:postgresql://[::1]/d?currentSchema=hive"
    settings = Settings(home="/tmp/x", database_url=url)
    assert settings.uses_postgres and settings.db_url.startswith("postgresql+psycopg://")
    assert settings.metastore_jdbc[0].startswith("jdbc:postgresql://db.example:6543/")
    assert "search_path%3Dmlflow" in mlflow_db_url(settings)
    sqlite = Settings(home="/tmp/x")
    assert not sqlite.uses_postgres and sqlite.metastore_jdbc == ("", "", "")
    assert mlflow_db_url(sqlite) == "sqlite:////tmp/x/mlflow.db"


STAGE_CYCLE = ("Staging", "Production", "Archived", "None")


def test_registry_history_with_two_workspace_processes(postgres, tmp_path):  # noqa: F811
    """Two `brickyard up` processes on one database move versions of one model at the same time: the
    history has exactly one event per transition, with its caller (the lock is the database's)."""
    import threading

    url = postgres.create_database(f"hist_{uuid.uuid4().hex[:8]}")
    key = base64.b64encode(os.urandom(32)).decode()  # workspaces sharing a database share its master key
    servers = [CliServer(tmp_path / f"ws{i}" / "home", url) for i in range(2)]
    for srv in servers:
        srv.home.parent.mkdir(parents=True)
        srv.env["BRICKYARD_MASTER_KEY"] = key
    try:
        for srv in servers:
            srv.start()

        def call(srv, path: str, token: str = ADMIN_TOKEN, **body) -> dict:
            r = requests.post(f"{srv.url}/api/2.0/{path}", json=body, timeout=60,
                              headers={"Authorization": f"Bearer {token}"})
            assert r.ok, r.text
            return r.json()

        tokens = {}
        for user, srv in (("hist-alice@example.com", servers[0]), ("hist-bob@example.com", servers[1])):
            uid = call(srv, "preview/scim/v2/Users", userName=user)["id"]
            tokens[user] = call(srv, "token-management/on-behalf-of/tokens", application_id=uid)["token_value"]
        model = f"hist-{uuid.uuid4().hex[:6]}"
        exp = call(servers[0], "mlflow/experiments/create", name=f"/Shared/{model}")["experiment_id"]
        run_id = call(servers[0], "mlflow/runs/create", experiment_id=exp)["run"]["info"]["run_id"]
        call(servers[0], "mlflow/registered-models/create", name=model)
        versions = [call(servers[i % 2], "mlflow/model-versions/create", name=model, source=f"runs:/{run_id}/model",
                         run_id=run_id)["model_version"]["version"] for i in range(4)]

        # Each version is moved by one thread (two per process, one user per process), round its stages.
        rounds = 12
        plan = [(servers[i % 2], "hist-alice@example.com" if i % 2 == 0 else "hist-bob@example.com", v)
                for i, v in enumerate(versions)]
        expected, errors = [], []
        start = threading.Barrier(len(plan))

        def mover(srv, user: str, version: str) -> None:
            try:
                start.wait(60)
                stage = "None"
                for i in range(rounds):
                    new = STAGE_CYCLE[i % len(STAGE_CYCLE)]
                    call(srv, "mlflow/model-versions/transition-stage", token=tokens[user], name=model,
                         version=version, stage=new, archive_existing_versions=False)
                    expected.append((version, stage, new, user))
                    stage = new
            except BaseException as exc:  # noqa: BLE001 - reported by the main thread
                errors.append(exc)

        threads = [threading.Thread(target=mover, args=p) for p in plan]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        assert not errors, errors
        assert len(expected) == rounds * len(plan)

        events = requests.get(f"{servers[1].url}/api/2.0/mlflow/brickyard/registered-models/history",
                              params={"name": model}, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                              timeout=60).json()["events"]
        got = [(e["version"], e["from_stage"], e["to_stage"], e["user_name"]) for e in events]
        assert {e["kind"] for e in events} == {"STAGE"}
        assert sorted(got) == sorted(expected)
        # Per version, the events follow one another in the order of the transitions.
        for version in versions:
            mine = [(f, t) for v, f, t, _ in got if v == version]
            assert mine == [(f, t) for v, f, t, _ in expected if v == version]
        # A rename in one process moves the history (in the transaction holding the model's lock).
        call(servers[0], "mlflow/registered-models/rename", name=model, new_name=model + "-renamed")
        moved = requests.get(f"{servers[1].url}/api/2.0/mlflow/brickyard/registered-models/history",
                             params={"name": model + "-renamed"}, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                             timeout=60).json()["events"]
        assert [e["id"] for e in moved] == [e["id"] for e in events]
        db = url.rsplit("/", 1)[1]
        assert postgres.query(db, "SELECT count(*) FROM mlflow_registry_events WHERE model_name = %s",
                              (model,)) == [(0,)]
    finally:
        for srv in servers:
            srv.stop()
