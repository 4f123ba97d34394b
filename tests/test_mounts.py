"""DBFS mounts: the internal mounts API, DBFS through mounts, dbutils.fs.mount and Spark on mounts.

Local folders (file:) and an S3 bucket on moto's S3 server (s3a://, with hadoop-aws from the
JVM cache) are mounted through the real server; notebooks on a real cluster read and write them.
"""
from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
from databricks.sdk.service import compute
from mount_support import (  # noqa: F401 - moto, bucket, azurite are fixtures
    AZURITE_ACCOUNT, AZURITE_FNS, AZURITE_KEY, MOUNTS, SECRET, T, azure_blobs, azurite, azurite_server, bucket, free_port,
    missing, moto, mount, run, s3, s3_configs, text, unmount)

from brickyard.compute import runtime

# -- the API and DBFS through a local folder --------------------------------------------------
def test_local_folder_mount_through_the_dbfs_api(server, w, unique, tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "in.csv").write_text("a,b\n1,2\n")
    point = f"/mnt/{unique('loc')}"
    r = mount(server, f"file:{folder}", point)
    assert r.status_code == 200, r.text
    assert r.json()["mount"]["source"] == f"file:{folder}"
    listed = server.api("GET", f"{MOUNTS}/list").json()["mounts"]
    assert point in [m["mount_point"] for m in listed]

    # DBFS API (databricks-sdk) sees the folder, and writes land in it.
    names = sorted(f.path for f in w.dbfs.list(point))
    assert names == [f"{point}/in.csv"]
    w.dbfs.put(f"{point}/sub/new.txt", contents=base64.b64encode(b"hello mount").decode(), overwrite=True)
    assert (folder / "sub" / "new.txt").read_text() == "hello mount"
    with w.dbfs.open(f"{point}/in.csv", read=True) as fh:
        assert fh.read() == b"a,b\n1,2\n"
    src = f"/FileStore/{unique('mv')}.txt"
    w.dbfs.put(src, contents=base64.b64encode(b"moved").decode())
    w.dbfs.move(src, f"{point}/moved.txt")
    assert (folder / "moved.txt").read_text() == "moved"
    assert point.rsplit("/", 1)[1] in [f.path.rsplit("/", 1)[1] for f in w.dbfs.list("/mnt")]
    w.dbfs.delete(f"{point}/sub", recursive=True)
    assert not (folder / "sub").exists()
    # The mount point itself cannot be deleted through DBFS.
    r = server.api("POST", "/api/2.0/dbfs/delete", json={"path": point, "recursive": True})
    assert r.status_code == 400 and "unmount" in r.json()["message"]
    assert (folder / "in.csv").exists()

    # Double mount, nesting, bad points and sources.
    r = mount(server, f"file:{folder}", point)
    assert r.status_code == 409 and r.json() == {"error_code": "RESOURCE_ALREADY_EXISTS",
                                                 "message": f"Directory already mounted: {point}"}
    assert mount(server, f"file:{folder}", f"{point}/inner").status_code == 409
    for bad_point in ("/FileStore/x", "/mnt", "/mnt/../etc"):
        r = mount(server, f"file:{folder}", bad_point)
        assert r.status_code == 400, (bad_point, r.text)
    for bad_source in ("ftp://x/y", "", f"file:{tmp_path}/missing", f"file:{server.settings.home}"):
        r = mount(server, bad_source, f"/mnt/{unique('bad')}")
        assert r.status_code == 400 and r.json()["error_code"] == "INVALID_PARAMETER_VALUE", (bad_source, r.text)
    assert server.api("POST", f"{MOUNTS}/create", token="dapi-wrong", json={}).status_code == 401

    # Unmount: the files stay in the folder, DBFS no longer shows them.
    assert unmount(server, point).status_code == 200
    assert (folder / "in.csv").exists() and (folder / "moved.txt").exists()
    r = server.api("GET", "/api/2.0/dbfs/get-status", params={"path": f"{point}/in.csv"})
    assert r.status_code == 404
    r = unmount(server, point)
    assert r.status_code == 404 and r.json()["message"] == f"Directory not mounted: {point}"


def test_only_admins_mount_local_folders_and_only_owners_unmount(server, unique, tmp_path, moto, bucket):
    _, alice = server.new_user(f"{unique('alice')}@example.com")
    _, bob = server.new_user(f"{unique('bob')}@example.com")
    r = mount(server, f"file:{tmp_path}", f"/mnt/{unique('l')}", token=alice)
    assert r.status_code == 403 and r.json()["error_code"] == "PERMISSION_DENIED"

    point = f"/mnt/{unique('s3')}"
    assert mount(server, f"s3a://{bucket}", point, s3_configs(moto), token=alice).status_code == 200
    # Every user sees the table; only the creator and admins change it.
    assert point in [m["mount_point"] for m in server.api("GET", f"{MOUNTS}/list", bob).json()["mounts"]]
    r = unmount(server, point, token=bob)
    assert r.status_code == 403 and r.json()["error_code"] == "PERMISSION_DENIED"
    r = server.api("POST", f"{MOUNTS}/update", bob, json={"source": f"s3a://{bucket}", "mount_point": point,
                                                          "extra_configs": s3_configs(moto)})
    assert r.status_code == 403
    r = server.api("POST", f"{MOUNTS}/update", alice, json={"source": f"s3a://{bucket}/sub", "mount_point": point,
                                                            "extra_configs": s3_configs(moto)})
    assert r.status_code == 200 and r.json()["mount"]["source"] == f"s3a://{bucket}/sub"
    assert unmount(server, point, token=alice).status_code == 200
    # An admin may remove anyone's mount.
    assert mount(server, f"s3a://{bucket}", point, s3_configs(moto), token=bob).status_code == 200
    assert unmount(server, point).status_code == 200
    r = server.api("POST", f"{MOUNTS}/update", json={"source": f"s3a://{bucket}", "mount_point": point})
    assert r.status_code == 404


def test_s3_mount_credentials_are_sealed_and_checked(server, unique, moto, bucket):
    point = f"/mnt/{unique('cred')}"
    bad = {**s3_configs(moto), "fs.s3a.endpoint": "http://127.0.0.1:9"}  # nothing listens there
    r = mount(server, f"s3a://{bucket}", point, bad)
    assert r.status_code == 400 and r.json()["error_code"] == "IO_ERROR"
    assert SECRET not in r.text
    r = mount(server, f"s3a://{bucket}", point, {"fs.dbfs.impl": "x"})
    assert r.status_code == 400
    r = mount(server, f"s3a://{bucket}", point, s3_configs(moto))
    assert r.status_code == 200, r.text
    info = server.api("GET", f"{MOUNTS}/get", params={"mount_point": point}).json()["mount"]
    assert sorted(info["extra_config_keys"]) == sorted(s3_configs(moto)) and SECRET not in json.dumps(info)
    assert SECRET not in server.api("GET", f"{MOUNTS}/list").text
    # Not in the database file (nor its WAL) in clear.
    db = server.settings.db_url.split("///", 1)[1]
    raw = b"".join(open(p, "rb").read() for p in (db, db + "-wal") if __import__("os").path.exists(p))
    assert SECRET.encode() not in raw and b"AKIDMOTO" not in raw
    unmount(server, point)


def test_s3_mount_through_the_dbfs_api(server, w, unique, moto, bucket):
    point = f"/mnt/{unique('s3')}"
    assert mount(server, f"s3a://{bucket}/base", point, s3_configs(moto)).status_code == 200
    try:
        w.dbfs.put(f"{point}/dir/a.txt", contents=base64.b64encode(b"on s3").decode(), overwrite=True)
        body = s3(moto).get_object(Bucket=bucket, Key="base/dir/a.txt")["Body"].read()
        assert body == b"on s3"
        s3(moto).put_object(Bucket=bucket, Key="base/b.csv", Body=b"x,y\n")
        listed = {f.path: (f.is_dir, f.file_size) for f in w.dbfs.list(point)}
        assert listed == {f"{point}/dir": (True, 0), f"{point}/b.csv": (False, 4)}
        with w.dbfs.open(f"{point}/dir/a.txt", read=True) as fh:
            assert fh.read() == b"on s3"
        r = server.api("POST", "/api/2.0/dbfs/put", json={"path": f"{point}/b.csv", "contents": ""})
        assert r.status_code == 409
        w.dbfs.mkdirs(f"{point}/empty")
        assert w.dbfs.get_status(f"{point}/empty").is_dir
        w.dbfs.delete(f"{point}/dir", recursive=True)
        assert "Contents" not in s3(moto).list_objects_v2(Bucket=bucket, Prefix="base/dir/")
        assert server.api("GET", "/api/2.0/dbfs/get-status",
                          params={"path": f"{point}/nope"}).status_code == 404
    finally:
        unmount(server, point)


# -- notebooks and Spark on mounts -------------------------------------------------------------
@pytest.fixture(scope="module")
def ctx(w, cluster_id):
    created = w.command_execution.create_and_wait(cluster_id=cluster_id, language=compute.Language.PYTHON, timeout=T)
    yield created.id
    w.command_execution.destroy(cluster_id, created.id)


@pytest.mark.slow
def test_notebook_mounts_a_local_folder_for_spark_dbutils_and_pandas(server, w, cluster_id, ctx, unique, tmp_path):
    folder = tmp_path / "lake"
    folder.mkdir()
    (folder / "wine.csv").write_text("quality,alcohol\n7,12.5\n5,9.8\n6,10.1\n")
    point = f"/mnt/{unique('nb')}"
    code = f"""
import json
dbutils.fs.mount(source="file:{folder}", mount_point="{point}", extra_configs={{}})
out = {{}}
out["mounts"] = [m.mountPoint for m in dbutils.fs.mounts()]
out["ls"] = sorted(f.name for f in dbutils.fs.ls("dbfs:{point}"))
df = spark.read.csv("dbfs:{point}/wine.csv", header=True, inferSchema=True)
out["spark_rows"] = df.count()
df.where("quality >= 6").write.mode("overwrite").csv("{point}/good", header=True)
out["bare_path_rows"] = spark.read.csv("{point}/good", header=True).count()
df.write.format("delta").mode("overwrite").save("dbfs:{point}/wine_delta")
out["delta_rows"] = spark.read.format("delta").load("{point}/wine_delta").count()
import pandas as pd
out["pandas_rows"] = len(pd.read_csv("/dbfs{point}/wine.csv"))
pd.DataFrame({{"x": [1, 2]}}).to_csv("/dbfs{point}/from_pandas.csv", index=False)
out["spark_sees_pandas"] = spark.read.csv("{point}/from_pandas.csv", header=True).count()
dbutils.fs.put("{point}/note.txt", "written by dbutils", overwrite=True)
out["head"] = dbutils.fs.head("dbfs:{point}/note.txt")
try:
    dbutils.fs.mount("file:{folder}", "{point}")
except Exception as e:
    out["double"] = str(e)
out["refresh"] = dbutils.fs.refreshMounts()
out["update"] = dbutils.fs.updateMount(source="file:{folder}", mountPoint="{point}", extraConfigs={{}})
try:
    dbutils.fs.updateMount("file:{folder}", "{point}", bogus=1)
except TypeError as e:
    out["bad_keyword"] = str(e)
print(json.dumps(out))
"""
    out = json.loads(text(w, cluster_id, ctx, code).splitlines()[-1])
    assert point in out["mounts"] and "/" in out["mounts"]
    assert out["ls"] == ["wine.csv"]
    assert out["spark_rows"] == 3 and out["bare_path_rows"] == 2 and out["delta_rows"] == 3
    assert out["pandas_rows"] == 3 and out["spark_sees_pandas"] == 2
    assert out["head"] == "written by dbutils"
    assert f"Directory already mounted: {point}" in out["double"] and "java.rmi.RemoteException" in out["double"]
    assert out["refresh"] is True
    assert out["update"] is True and "updateMount() got unexpected keyword arguments: bogus" in out["bad_keyword"]
    # What Spark, pandas and dbutils wrote is in the mounted folder itself.
    assert list((folder / "good").glob("part-*.csv")) and (folder / "wine_delta" / "_delta_log").is_dir()
    assert (folder / "from_pandas.csv").read_text() == "x\n1\n2\n"
    assert (folder / "note.txt").read_text() == "written by dbutils"

    out = text(w, cluster_id, ctx, f"""
dbutils.fs.unmount("{point}")
try:
    spark.read.csv("dbfs:{point}/wine.csv").count()
    print("still readable")
except Exception as e:
    print("gone:", type(e).__name__)
try:
    dbutils.fs.unmount("{point}")
except Exception as e:
    print(str(e).splitlines()[-1])
""")
    assert f"{point} has been unmounted." in out
    assert "gone:" in out and f"Directory not mounted: {point}" in out
    assert (folder / "wine.csv").exists()


@pytest.mark.slow
def test_running_cluster_sees_a_mount_made_elsewhere(server, w, cluster_id, ctx, unique, tmp_path):
    """A mount made through the API (another user, another cluster) reaches a running cluster's Spark."""
    (tmp_path / "t.csv").write_text("k\n1\n2\n3\n4\n")
    point = f"/mnt/{unique('live')}"
    assert mount(server, f"file:{tmp_path}", point).status_code == 200
    try:
        assert text(w, cluster_id, ctx, f"print(spark.read.csv('{point}/t.csv', header=True).count())") == "4"
    finally:
        unmount(server, point)


@pytest.mark.slow
def test_spark_reads_and_writes_an_s3_bucket_through_a_mount(server, w, unique, moto, bucket):
    """s3a:// on moto with hadoop-aws: a cluster started with the mount in its table writes CSV and Delta."""
    try:
        runtime.s3a_jars()
    except FileNotFoundError as exc:
        missing(f"S3A jars not in the JVM cache: {exc}")
    point = f"/mnt/{unique('s3spark')}"
    s3(moto).put_object(Bucket=bucket, Key="lake/in.csv", Body=b"id,name\n1,a\n2,b\n3,c\n")
    assert mount(server, f"s3a://{bucket}/lake", point, s3_configs(moto)).status_code == 200
    cluster = w.clusters.create_and_wait(
        cluster_name=unique("s3c"), spark_version="17.3.x-cpu-ml-scala2.13", node_type_id="local.medium",
        num_workers=0, spark_conf={"spark.databricks.cluster.profile": "singleNode", "spark.master": "local[1]"},
        timeout=timedelta(minutes=5)).cluster_id
    try:
        c = w.command_execution.create_and_wait(cluster_id=cluster, language=compute.Language.PYTHON, timeout=T)
        code = f"""
import json
out = {{}}
df = spark.read.csv("dbfs:{point}/in.csv", header=True)
out["read"] = df.count()
df.write.mode("overwrite").csv("{point}/out_csv", header=True)
out["csv"] = spark.read.csv("dbfs:{point}/out_csv", header=True).count()
df.write.format("delta").mode("overwrite").save("{point}/people")
spark.sql("CREATE TABLE IF NOT EXISTS default.{point.rsplit('/', 1)[1]} USING DELTA LOCATION 'dbfs:{point}/people'")
out["delta"] = spark.table("default.{point.rsplit('/', 1)[1]}").count()
out["ls"] = sorted(f.name for f in dbutils.fs.ls("{point}"))
out["secret_in_conf_listing"] = any("{SECRET}" in str(m) for m in dbutils.fs.mounts())
print(json.dumps(out))
"""
        out = json.loads(text(w, cluster, c.id, code).splitlines()[-1])
        assert out["read"] == 3 and out["csv"] == 3 and out["delta"] == 3
        assert out["ls"] == ["in.csv", "out_csv/", "people/"]
        assert out["secret_in_conf_listing"] is False
        keys = [o["Key"] for o in s3(moto).list_objects_v2(Bucket=bucket, Prefix="lake/")["Contents"]]
        assert any(k.startswith("lake/people/_delta_log/") for k in keys)
        assert any(k.startswith("lake/out_csv/part-") for k in keys)
        w.command_execution.destroy(cluster, c.id)
    finally:
        w.clusters.permanent_delete(cluster)
        unmount(server, point)


def test_master_key_rotation_reseals_mount_configs(tmp_path):
    from conftest import make_settings

    from brickyard.context import open_workspace
    from brickyard.services.keys import rotate_master_key
    from brickyard.services.users import Principal

    settings = make_settings(tmp_path / "home")
    folder = tmp_path / "folder"
    folder.mkdir()
    ws = open_workspace(settings)
    try:
        admin = Principal(1, "admin@example.com", True)
        ws.services["mounts"].create(admin, f"file:{folder}", "/mnt/rot", {"fs.azure.account.key.x": "k3y-value"})
    finally:
        ws.close()
    old_key = settings.master_key_file.read_text()
    assert rotate_master_key(settings) >= 1
    assert settings.master_key_file.read_text() != old_key
    ws = open_workspace(settings)
    try:
        [link] = ws.services["mounts"].links()
        assert link.mount_point == "/mnt/rot" and link.hadoop_conf == {"fs.azure.account.key.x": "k3y-value"}
    finally:
        ws.close()


# -- Azure (abfss://, wasbs://) ---------------------------------------------------------------
AZ_SECRET = "az-client-secret-" + "s3cr3t" * 4


def test_azure_mounts_scope_their_settings_and_refuse_an_unreachable_account(server, unique):
    """abfss/wasbs: the Hadoop settings clusters get, and the mount-time reachability check.

    Hadoop 3.5 (Spark 4.2) has no WASB driver, so wasbs:// mounts are served by ABFS on the Blob
    endpoint; fs.azure.account.* settings given unscoped (as in Databricks' examples) are scoped
    to the mount's account.
    """
    oauth = {"fs.azure.account.auth.type": "OAuth",
             "fs.azure.account.oauth.provider.type": "org.apache.hadoop.fs.azurebfs.oauth2.ClientCredsTokenProvider",
             "fs.azure.account.oauth2.client.id": "app-id",
             "fs.azure.account.oauth2.client.secret": AZ_SECRET,
             "fs.azure.account.oauth2.client.endpoint": "https://login.microsoftonline.com/tenant/oauth2/token"}
    acct = "brickyardtestacct"
    dfs, blob = f"{acct}.dfs.core.windows.net", f"{acct}.blob.core.windows.net"
    closed = free_port()  # nothing listens there
    point = f"/mnt/{unique('abfs')}"
    r = mount(server, f"abfss://lake@{dfs}/raw", point, {**oauth, "fs.azure.abfs.endpoint": f"127.0.0.1:{closed}"})
    assert r.status_code == 400 and r.json()["error_code"] == "IO_ERROR", r.text
    assert f"127.0.0.1:{closed} cannot be reached" in r.json()["message"] and AZ_SECRET not in r.text
    with socket.socket() as listener:  # a reachable endpoint (the check is reachability only)
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        endpoint = f"127.0.0.1:{listener.getsockname()[1]}"
        r = mount(server, f"abfss://lake@{dfs}/raw/", point, {**oauth, "fs.azure.abfs.endpoint": endpoint})
        assert r.status_code == 200, r.text
        wpoint = f"/mnt/{unique('wasb')}"
        wkey = {f"fs.azure.account.key.{blob}": AZ_SECRET, "fs.azure.abfs.endpoint": endpoint}
        assert mount(server, f"wasbs://box@{blob}/in", wpoint, wkey).status_code == 200
    try:
        links = {m.mount_point: m for m in server.workspace.services["mounts"].links()}
        assert links[point].target == f"abfss://lake@{dfs}/raw"
        assert links[point].hadoop_conf == {**{f"{k}.{dfs}": v for k, v in oauth.items()},
                                            f"fs.azure.abfs.endpoint.{dfs}": endpoint}
        # ABFS is given the account's DFS host (it takes the account name from a DFS host only) and
        # the Blob-host key moves with it; the account is served over its Blob endpoint.
        assert links[wpoint].target == f"abfss://box@{dfs}/in"
        assert links[wpoint].hadoop_conf == {f"fs.azure.account.key.{dfs}": AZ_SECRET,
                                             f"fs.azure.abfs.endpoint.{dfs}": endpoint,
                                             f"fs.azure.fns.account.service.type.{dfs}": "BLOB"}
        listed = server.api("GET", f"{MOUNTS}/list").json()["mounts"]
        assert {m["mount_point"]: m["source"] for m in listed}[wpoint] == f"wasbs://box@{blob}/in"
        assert AZ_SECRET not in json.dumps(listed)
    finally:
        assert unmount(server, point).status_code == 200
        assert unmount(server, wpoint).status_code == 200


# Accounts of the TLS Azurite (AZURITE_ACCOUNTS): one for abfss://, one for wasbs://, each with its own key,
# so the wasbs mount works only if its Databricks-style Blob-host key reaches ABFS.
TLS_ACCOUNT, WASB_ACCOUNT = "brickyardtls", "brickyardwasb"
TLS_KEY = base64.b64encode(b"brickyard-abfss-key-" + b"k" * 44).decode()
WASB_KEY = base64.b64encode(b"brickyard-wasbs-key-" + b"w" * 44).decode()
TRUST_PASSWORD = "brickyard-trust"


@pytest.fixture(scope="module")
def azurite_tls(tmp_path_factory):
    """Azurite's Blob service over HTTPS with a self-signed certificate for 127.0.0.1, serving the accounts
    TLS_ACCOUNT and WASB_ACCOUNT; yields (endpoint, a Java truststore holding the certificate)."""
    folder = tmp_path_factory.mktemp("azurite-tls")
    cert, key, trust = folder / "cert.pem", folder / "key.pem", folder / "truststore.p12"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-keyout", str(key),
                    "-out", str(cert), "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    keytool = Path(os.environ.get("JAVA_HOME", "/usr")) / "bin/keytool"
    subprocess.run([str(keytool) if keytool.exists() else "keytool", "-importcert", "-noprompt", "-alias", "azurite",
                    "-file", str(cert), "-keystore", str(trust), "-storetype", "PKCS12", "-storepass", TRUST_PASSWORD],
                   check=True, capture_output=True)
    accounts = f"{TLS_ACCOUNT}:{TLS_KEY};{WASB_ACCOUNT}:{WASB_KEY}"
    for endpoint in azurite_server(folder, ["--cert", str(cert), "--key", str(key)], {"AZURITE_ACCOUNTS": accounts}):
        yield endpoint, trust


@pytest.mark.slow
def test_spark_reads_and_writes_azure_mounts_on_azurite(server, w, unique, azurite, azurite_tls):
    """abfs:// (HTTP), abfss:// (TLS) and wasbs:// (TLS, served by ABFS) mounts with Hadoop 3.5's ABFS driver
    against Azurite's Blob service, on one cluster: Spark writes and reads Delta through /mnt/... and directly.

    The TLS endpoint's self-signed certificate is trusted the way a user with a private CA does it: a Java
    truststore given to the cluster's JVMs in its spark_conf (extraJavaOptions). The wasbs:// mount uses
    the Databricks-style key fs.azure.account.key.<acct>.blob.core.windows.net, which must reach ABFS as
    the DFS host's key (ABFS takes the account name for a custom endpoint from a DFS host only).
    Azurite has no DFS endpoint, so HNS accounts are not exercised.
    """
    try:
        runtime.azure_jars()  # the launcher puts them on the cluster's class path because of the Azure mounts
    except FileNotFoundError as exc:
        missing(f"ABFS jars not in the JVM cache: {exc}")
    tls, trust = azurite_tls
    host = f"{AZURITE_ACCOUNT}.dfs.core.windows.net"
    tls_host, wasb_host = f"{TLS_ACCOUNT}.dfs.core.windows.net", f"{WASB_ACCOUNT}.blob.core.windows.net"
    mounts = {  # mount point -> (source, extra_configs, the URI Spark may read directly)
        unique("azlake"): (f"abfs://lake@{host}/data",
                           {**AZURITE_FNS, "fs.azure.account.auth.type": "SharedKey",
                            f"fs.azure.account.key.{host}": AZURITE_KEY, "fs.azure.abfs.endpoint": azurite,
                            "fs.azure.always.use.https": "false"},
                           f"abfs://lake@{host}/data"),
        unique("aztls"): (f"abfss://secure@{tls_host}/tables",
                          {**AZURITE_FNS, "fs.azure.account.key": TLS_KEY, "fs.azure.abfs.endpoint": tls},
                          f"abfss://secure@{tls_host}/tables"),
        unique("azwasb"): (f"wasbs://box@{wasb_host}/in",
                           {f"fs.azure.account.key.{wasb_host}": WASB_KEY, "fs.azure.abfs.endpoint": tls,
                            "fs.azure.account.hns.enabled": "false", "fs.azure.networking.library": "JDK_HTTP_URL_CONNECTION",
                            "fs.azure.createRemoteFileSystemDuringInitialization": "true"},
                           f"abfss://box@{WASB_ACCOUNT}.dfs.core.windows.net/in"),
    }
    points = {name: f"/mnt/{name}" for name in mounts}
    for name, (source, configs, _) in mounts.items():
        r = mount(server, source, points[name], configs)
        assert r.status_code == 200, r.text
    trust_opts = f"-Djavax.net.ssl.trustStore={trust} -Djavax.net.ssl.trustStorePassword={TRUST_PASSWORD}"
    try:
        cluster = w.clusters.create_and_wait(
            cluster_name=unique("azc"), spark_version="17.3.x-cpu-ml-scala2.13", node_type_id="local.medium",
            num_workers=0, timeout=timedelta(minutes=5),
            spark_conf={"spark.databricks.cluster.profile": "singleNode", "spark.master": "local[1]",
                        "spark.driver.extraJavaOptions": trust_opts, "spark.executor.extraJavaOptions": trust_opts}
        ).cluster_id
        try:
            c = w.command_execution.create_and_wait(cluster_id=cluster, language=compute.Language.PYTHON, timeout=T)
            targets = {name: (points[name], direct) for name, (_, _, direct) in mounts.items()}
            code = f"""
import json
out = {{}}
for i, (name, (point, direct)) in enumerate(sorted({targets!r}.items())):
    spark.range(4 + i).write.format("delta").mode("overwrite").save(point + "/people")
    out[name] = [spark.read.format("delta").load("dbfs:" + point + "/people").count(),
                 spark.read.format("delta").load(direct + "/people").count()]
keys = ("{AZURITE_KEY}", "{TLS_KEY}", "{WASB_KEY}")
out["secret_in_conf_listing"] = any(k in str(m) for m in dbutils.fs.mounts() for k in keys)
print(json.dumps(out))
"""
            r = run(w, cluster, c.id, code)
            assert r.result_type == compute.ResultType.TEXT, (r.summary, r.cause)
            out = json.loads(r.data.splitlines()[-1])
            want = {name: [4 + i, 4 + i] for i, name in enumerate(sorted(mounts))}
            assert out == {**want, "secret_in_conf_listing": False}
            w.command_execution.destroy(cluster, c.id)
        finally:
            w.clusters.permanent_delete(cluster)
    finally:
        for point in points.values():
            unmount(server, point)


def test_azure_mounts_through_the_dbfs_api_on_azurite(server, w, unique, azurite, azurite_tls, monkeypatch):
    """abfs:// (HTTP, account key scoped to the DFS host) and wasbs:// (HTTPS, Databricks-style Blob-host key)
    mounts served to the DBFS API by the workspace itself through azure-storage-blob: put, upload in blocks,
    list, read, download, mkdirs, delete; the blobs are really in Azurite's containers."""
    import io
    from datetime import datetime, timezone

    from azure.storage.blob import ContainerSasPermissions, generate_container_sas

    tls, trust = azurite_tls
    # The emulator's self-signed certificate, trusted as requests (under azure-core) reads a private CA.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(trust.parent / "cert.pem"))
    host = f"{AZURITE_ACCOUNT}.dfs.core.windows.net"
    wasb_host = f"{WASB_ACCOUNT}.blob.core.windows.net"
    lake = azure_blobs(azurite, AZURITE_ACCOUNT, AZURITE_KEY, unique("lake").lower())
    box = azure_blobs(tls, WASB_ACCOUNT, WASB_KEY, unique("box").lower(), tls=True)
    cases = [  # (source, extra_configs, container client, the blob prefix of the mount)
        (f"abfs://{lake.container_name}@{host}/data",
         {**AZURITE_FNS, f"fs.azure.account.key.{host}": AZURITE_KEY, "fs.azure.abfs.endpoint": azurite,
          "fs.azure.always.use.https": "false"}, lake, "data/"),
        (f"wasbs://{box.container_name}@{wasb_host}/in",
         {f"fs.azure.account.key.{wasb_host}": WASB_KEY, "fs.azure.abfs.endpoint": tls}, box, "in/"),
        # A fixed SAS token for the container instead of the account key (ABFS's auth type SAS).
        (f"abfs://{lake.container_name}@{host}/sas",
         {**AZURITE_FNS, "fs.azure.account.auth.type": "SAS", "fs.azure.abfs.endpoint": azurite,
          "fs.azure.always.use.https": "false", "fs.azure.sas.fixed.token": generate_container_sas(
              AZURITE_ACCOUNT, lake.container_name, account_key=AZURITE_KEY,
              permission=ContainerSasPermissions(read=True, write=True, delete=True, list=True, create=True),
              expiry=datetime.now(timezone.utc) + timedelta(hours=1))}, lake, "sas/"),
    ]
    big = os.urandom(3 << 20) + b"tail"
    for source, configs, cc, prefix in cases:
        point = f"/mnt/{unique('azdbfs')}"
        r = mount(server, source, point, configs)
        assert r.status_code == 200, r.text
        try:
            w.dbfs.put(f"{point}/dir/a.txt", contents=base64.b64encode(b"on azure").decode(), overwrite=True)
            assert cc.download_blob(prefix + "dir/a.txt").readall() == b"on azure"
            cc.upload_blob(prefix + "b.csv", b"x,y\n")  # written by someone else (Spark, say)
            listed = {f.path: (f.is_dir, f.file_size) for f in w.dbfs.list(point)}
            assert listed == {f"{point}/dir": (True, 0), f"{point}/b.csv": (False, 4)}, (source, listed)
            with w.dbfs.open(f"{point}/dir/a.txt", read=True) as fh:
                assert fh.read() == b"on azure"
            assert w.dbfs.read(f"{point}/b.csv", offset=2, length=10).data == base64.b64encode(b"y\n").decode()
            r = server.api("POST", "/api/2.0/dbfs/put", json={"path": f"{point}/b.csv", "contents": ""})
            assert r.status_code == 409
            # 3 MiB through the SDK's create/add-block/close; the workspace stores it with Put Block +
            # Put Block List (above 2 MiB), as Blob block lists show.
            w.dbfs.upload(f"{point}/dir/big.bin", io.BytesIO(big), overwrite=True)
            assert cc.download_blob(prefix + "dir/big.bin").readall() == big
            committed, _ = cc.get_blob_client(prefix + "dir/big.bin").get_block_list("committed")
            assert committed and sum(b.size for b in committed) == len(big)
            assert w.dbfs.get_status(f"{point}/dir/big.bin").file_size == len(big)
            with w.dbfs.download(f"{point}/dir/big.bin") as fh:
                assert fh.read() == big
            w.dbfs.mkdirs(f"{point}/empty")
            assert w.dbfs.get_status(f"{point}/empty").is_dir
            marker = cc.get_blob_client(prefix + "empty").get_blob_properties()  # ABFS's folder marker
            assert marker.size == 0 and marker.metadata == {"hdi_isfolder": "true"}
            assert f"{point}/empty" in [f.path for f in w.dbfs.list(point) if f.is_dir]
            r = server.api("POST", "/api/2.0/dbfs/delete", json={"path": f"{point}/dir", "recursive": False})
            assert r.status_code >= 400 and "non-empty" in r.json()["message"], r.text
            w.dbfs.delete(f"{point}/dir", recursive=True)
            # An empty directory (its marker only) goes without recursive (the SDK refuses that client-side).
            r = server.api("POST", "/api/2.0/dbfs/delete", json={"path": f"{point}/empty", "recursive": False})
            assert r.status_code == 200, r.text
            assert sorted(b.name for b in cc.list_blobs(name_starts_with=prefix)) == [prefix + "b.csv"]
            assert server.api("GET", "/api/2.0/dbfs/get-status",
                              params={"path": f"{point}/dir/a.txt"}).status_code == 404
        finally:
            assert unmount(server, point).status_code == 200
    # A wrong key: an error the DBFS API reports, not a hang and not the key.
    point = f"/mnt/{unique('azbad')}"
    bad = base64.b64encode(b"wrong-key-" + b"x" * 54).decode()
    assert mount(server, cases[0][0], point, {**cases[0][1], f"fs.azure.account.key.{host}": bad}).status_code == 200
    try:
        r = server.api("GET", "/api/2.0/dbfs/list", params={"path": point})
        assert r.status_code >= 400 and r.json()["error_code"] == "IO_ERROR", r.text
        assert bad not in r.text and AZURITE_KEY not in r.text
    finally:
        unmount(server, point)


# -- mounts made while a cluster runs ---------------------------------------------------------
@pytest.mark.slow
def test_notebook_mounts_azure_on_a_running_cluster(server, w, cluster_id, ctx, unique, azurite):
    """A cluster started before any Azure mount: a notebook mounts abfs:// on Azurite and Spark uses it at once.

    A JVM's class path is fixed at start, so this works only because clusters get the cached Azure
    connector whatever their mounts (before, it failed with ClassNotFoundException AzureBlobFileSystem).
    """
    try:
        runtime.azure_jars()
    except FileNotFoundError as exc:
        missing(f"ABFS jars not in the JVM cache: {exc}")
    assert text(w, cluster_id, ctx, "print('running')") == "running"  # the cluster runs before the mount
    host = f"{AZURITE_ACCOUNT}.dfs.core.windows.net"
    lake = azure_blobs(azurite, AZURITE_ACCOUNT, AZURITE_KEY, unique("live").lower())
    configs = {**AZURITE_FNS, f"fs.azure.account.key.{host}": AZURITE_KEY, "fs.azure.abfs.endpoint": azurite,
               "fs.azure.always.use.https": "false"}
    point = f"/mnt/{unique('azlive')}"
    out = text(w, cluster_id, ctx, f"""
dbutils.fs.mount(source="abfs://{lake.container_name}@{host}/data", mount_point="{point}",
                 extra_configs={configs!r})
spark.range(5).write.format("delta").mode("overwrite").save("{point}/t")
print("count", spark.read.format("delta").load("dbfs:{point}/t").count())
ok = dbutils.fs.refreshMounts()
ok = dbutils.fs.unmount("{point}")
""")
    assert out.splitlines() == ["count 5", f"{point} has been unmounted."]  # and no restart note
    assert any(b.name.startswith("data/t/_delta_log/") for b in lake.list_blobs(name_starts_with="data/"))


@pytest.mark.slow
def test_mount_on_a_cluster_without_its_connector_says_to_restart(server, w, cluster_id, ctx, unique, moto, bucket):
    """S3A (its 650 MB SDK bundle) is on a cluster's class path only when an s3a mount exists at its start:
    a later s3a mount tells the notebook to restart the cluster, at mount and at refreshMounts."""
    try:
        runtime.s3a_jars()
    except FileNotFoundError as exc:
        missing(f"S3A jars not in the JVM cache: {exc}")
    loadable = text(w, cluster_id, ctx, """
try:
    sc._jsc.hadoopConfiguration().getClassByName("org.apache.hadoop.fs.s3a.S3AFileSystem")
    print(True)
except Exception:
    print(False)
""") == "True"
    point = f"/mnt/{unique('s3live')}"
    out = text(w, cluster_id, ctx, f"""
dbutils.fs.mount(source="s3a://{bucket}/data", mount_point="{point}", extra_configs={s3_configs(moto)!r})
dbutils.fs.put("{point}/a.txt", "via dbutils", overwrite=True)
print(dbutils.fs.head("{point}/a.txt"))
ok = dbutils.fs.refreshMounts()
ok = dbutils.fs.unmount("{point}")
""")
    note = ("Note: this cluster was started without the S3A connector (s3a:// mounts); restart it to use those "
            "mounts from Spark (dbutils.fs reaches them already).")
    # The shared cluster has S3A only if an s3a mount existed when it started (another test's, in a full run).
    done = ["Wrote 11 bytes.", "via dbutils"]
    expected = [note, *done, note] if not loadable else done
    assert out.splitlines() == [*expected, f"{point} has been unmounted."]
