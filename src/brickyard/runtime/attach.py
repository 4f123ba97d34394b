"""Attach this Python process to a running cluster driver's JVM over py4j.

The driver publishes its gateway port and secret; a notebook or context process sets
PYSPARK_GATEWAY_PORT / PYSPARK_GATEWAY_SECRET and calls ``attach()``. Each attached process
gets its own SparkSession (temp views, SQL conf and functions are private) over the shared
SparkContext and catalog. Calls that would hit every notebook on the cluster (stop,
cancelAllJobs) are confined to this process's own jobs.
"""
from __future__ import annotations

import logging
import os
import signal
import uuid

log = logging.getLogger(__name__)


class AttachedSpark:
    def __init__(self, spark, sc, job_group: str):  # noqa: ANN001
        self.spark = spark
        self.sc = sc
        self.job_group = job_group

    def cancel_own_jobs(self) -> int:
        """Cancel the Spark jobs this process started; returns how many were active."""
        tracker = self.sc.statusTracker()
        active = [j for j in tracker.getJobIdsForGroup(self.job_group)
                  if (info := tracker.getJobInfo(j)) is not None and info.status == "RUNNING"]
        self.sc.cancelJobGroup(self.job_group)
        return len(active)


def attach(job_group: str | None = None) -> AttachedSpark:
    from pyspark import SparkContext
    from pyspark.java_gateway import launch_gateway
    from pyspark.sql import SparkSession

    if "PYSPARK_GATEWAY_PORT" not in os.environ:
        raise RuntimeError("This process is not attached to a cluster (PYSPARK_GATEWAY_PORT is not set).")
    gateway = launch_gateway()
    jvm = gateway.jvm
    jsession_cls = jvm.org.apache.spark.sql.classic.SparkSession
    root = jsession_cls.getDefaultSession().get()
    jsc = jvm.org.apache.spark.api.java.JavaSparkContext(root.sparkContext())
    previous_handler = signal.getsignal(signal.SIGINT)
    sc = SparkContext(gateway=gateway, jsc=jsc)
    signal.signal(signal.SIGINT, previous_handler)  # pyspark's handler would cancel every notebook's jobs
    spark = SparkSession(sc, jsparkSession=root.newSession())
    # Keep the driver's own session as the JVM default for the next process that attaches.
    jsession_cls.setDefaultSession(root)
    group = job_group or f"brickyard-{uuid.uuid4().hex[:12]}"
    sc.setJobGroup(group, f"Brickyard {group}", interruptOnCancel=True)
    _confine(sc, spark, group)
    return AttachedSpark(spark, sc, group)


def _confine(sc, spark, group: str) -> None:  # noqa: ANN001
    """Make cluster-wide calls safe for a shared driver."""

    def _no_stop(*_a, **_k) -> None:
        log.warning("stop() is ignored: the SparkContext is shared by every notebook on the cluster; "
                    "terminate or restart the cluster instead.")

    def _cancel_all() -> None:
        sc.cancelJobGroup(group)

    sc.stop = _no_stop
    spark.stop = _no_stop
    sc.cancelAllJobs = _cancel_all
