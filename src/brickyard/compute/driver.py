"""A cluster's driver process: one SparkSession whose JVM notebooks and contexts attach to.

Run as ``python -m brickyard.compute.driver <cluster_dir>``. Reads ``driver-conf.json``, starts
Spark, publishes ``driver.json`` (gateway port and secret, 0600) and waits. SIGTERM stops Spark
and exits 0. The driver exits on its own when the workspace process that started it is gone,
so no orphan JVM outlives its workspace.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

from brickyard.secrets.crypto import write_private_file


def _write_private_json(path: Path, data: dict) -> None:
    write_private_file(path, json.dumps(data))


def _warm_up(spark) -> None:  # noqa: ANN001
    """Run a first job and reach the catalog, so the first notebook command does not pay for it."""
    try:
        spark.range(1).count()
        spark.sql("SHOW DATABASES").collect()
    except Exception as exc:  # noqa: BLE001 - a cold path is slower, not broken
        print(f"warm-up failed: {exc}", flush=True)


def main(cluster_dir: str) -> int:
    root = Path(cluster_dir)
    conf = json.loads((root / "driver-conf.json").read_text())
    parent = os.getppid()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    from pyspark.sql import SparkSession

    started = time.time()
    builder = SparkSession.builder.appName(conf.get("app_name", "brickyard"))
    for key, value in conf.get("spark_conf", {}).items():
        builder = builder.config(key, value)
    if conf.get("hive"):
        builder = builder.enableHiveSupport()
    spark = builder.getOrCreate()
    sc = spark.sparkContext
    params = sc._gateway.gateway_parameters
    info = {
        "pid": os.getpid(),
        "gateway_port": params.port,
        "gateway_secret": params.auth_token,
        "spark_ui_url": sc.uiWebUrl,
        "application_id": sc.applicationId,
        "master": sc.master,
        "default_parallelism": sc.defaultParallelism,
        "start_seconds": round(time.time() - started, 3),
    }
    if conf.get("warm_up") == "before":  # a pool instance: idle only once its JVM is warm
        _warm_up(spark)
        info["warm_seconds"] = round(time.time() - started, 3)
    _write_private_json(root / "driver.json", info)
    print(f"driver ready: {sc.applicationId} master={sc.master} in {info['start_seconds']} s", flush=True)
    if conf.get("warm_up") == "after":
        _warm_up(spark)
    while not stop.wait(1.0):
        if os.getppid() != parent:
            print("workspace process is gone; stopping the driver", flush=True)
            break
    try:
        spark.stop()
    finally:
        (root / "driver.json").unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
