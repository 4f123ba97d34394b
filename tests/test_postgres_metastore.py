"""The Hive metastore on PostgreSQL: schema `hive` of the workspace's database, built from Hive's
own scripts; Delta tables written by one Spark driver process are read by another, and the
catalog's rows are in PostgreSQL."""
from __future__ import annotations

import time
import uuid

import pytest
from pg_support import postgres  # noqa: F401  (the fixture)
from test_spark_substrate import Driver, driver_conf

from brickyard.compute import runtime
from brickyard.compute.metastore import HIVE_SCHEMA_VERSION, Metastore, ensure_postgres_schema
from brickyard.compute.spark_conf import local_master
from brickyard.settings import Settings

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def database(postgres):  # noqa: F811
    return postgres.create_database(f"hms_{uuid.uuid4().hex[:8]}")


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    path = tmp_path_factory.mktemp("pghms")
    (path / "dbfs").mkdir()
    return path


@pytest.fixture(scope="module")
def settings(home, database):
    return Settings(home=home, database_url=database.replace("postgresql+psycopg://", "postgresql://"))


@pytest.fixture(scope="module")
def metastore(settings):
    ms = Metastore.from_settings(settings)
    t0 = time.monotonic()
    ms.start(timeout=180)
    print(f"\nmetastore on PostgreSQL ready in {time.monotonic() - t0:.1f} s")
    yield ms
    ms.stop()


def test_settings_put_the_metastore_in_schema_hive(settings, postgres):  # noqa: F811
    site = Metastore.from_settings(settings).hive_site()
    assert site["javax.jdo.option.ConnectionURL"] == \
        f"jdbc:postgresql://127.0.0.1:{postgres.port}/{settings.db_url.rsplit('/', 1)[1]}?currentSchema=hive"
    assert site["javax.jdo.option.ConnectionDriverName"] == "org.postgresql.Driver"
    assert site["javax.jdo.option.ConnectionUserName"] == "brickyard"
    assert site["datanucleus.schema.autoCreateAll"] == "false"
    assert site["hive.metastore.schema.verification"] == "true"
    # Without a PostgreSQL URL: the metastore's own Derby database.
    derby = Metastore.from_settings(Settings(home=settings.home / "other")).hive_site()
    assert derby["javax.jdo.option.ConnectionURL"].startswith("jdbc:derby:")


def test_delta_tables_across_two_processes_on_postgres(metastore, home, postgres, database):  # noqa: F811
    dbname = database.rsplit("/", 1)[1]
    # Hive's scripts built the schema before the service started; starting again changes nothing.
    assert postgres.query(dbname, 'SELECT "SCHEMA_VERSION" FROM hive."VERSION"') == [(HIVE_SCHEMA_VERSION,)]
    assert ensure_postgres_schema(metastore.jdbc_url, metastore.jdbc_user, metastore.jdbc_password) is False
    assert runtime.pid_alive(metastore.pid) and runtime.port_open(metastore.port)

    db = f"pg_{uuid.uuid4().hex[:8]}"
    a = Driver("a", driver_conf(home, metastore, [], "a", local_master(1)), home)
    b = Driver("b", driver_conf(home, metastore, [], "b", local_master(1)), home)
    try:
        assert a.run(f"""
            spark.sql("CREATE DATABASE {db}")
            df = spark.createDataFrame([(1, 7.0, 'red'), (2, 5.5, 'white'), (3, 6.1, 'red')],
                                       'id INT, alcohol DOUBLE, kind STRING')
            df.write.saveAsTable("{db}.wine")
            result = spark.sql("DESCRIBE DETAIL {db}.wine").select("format", "location").first().asDict()
        """) == {"format": "delta", "location": f"dbfs:/user/hive/warehouse/{db}.db/wine"}
        # The catalog's rows are in PostgreSQL.
        assert postgres.query(
            dbname, 'SELECT d."NAME", t."TBL_NAME", t."TBL_TYPE" FROM hive."TBLS" t '
                    'JOIN hive."DBS" d ON d."DB_ID" = t."DB_ID" WHERE d."NAME" = %s', (db,)) == \
            [(db, "wine", "MANAGED_TABLE")]
        # Another driver process reads the table through the same metastore.
        assert b.run(f"result = [r.tableName for r in spark.sql('SHOW TABLES IN {db}').collect()]") == ["wine"]
        assert b.run(f"result = spark.table('{db}.wine').where('kind = \"red\"').count()") == 2
        b.run(f"spark.sql('UPDATE {db}.wine SET alcohol = alcohol + 1 WHERE id = 1')")
        assert a.run(f"spark.sql('REFRESH TABLE {db}.wine'); "
                     f"result = spark.table('{db}.wine').where('id = 1').first().alcohol") == 8.0
        a.run(f"spark.sql('DROP TABLE {db}.wine'); spark.sql('DROP DATABASE {db}')")
        assert postgres.query(dbname, 'SELECT count(*) FROM hive."DBS" WHERE "NAME" = %s', (db,)) == [(0,)]
    finally:
        a.close()
        b.close()
