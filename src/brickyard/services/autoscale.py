"""Autoscaling: add workers while tasks wait, remove idle ones after a cool-down.

The driver's Spark UI REST API says how many tasks of active stages wait. Waiting tasks for
UPSCALE_AFTER seconds add enough workers for them (up to max_workers); no active stage for the
cool-down (spark_conf `spark.databricks.aggressiveWindowDownS`, default DEFAULT_COOLDOWN)
removes one worker (down to min_workers) and starts the cool-down again.
"""
from __future__ import annotations

import logging
import math
import time

from brickyard.compute import catalog, driver_control

log = logging.getLogger(__name__)
UPSCALE_AFTER = 3.0
DEFAULT_COOLDOWN = 120.0
COOLDOWN_CONF = "spark.databricks.aggressiveWindowDownS"


class Autoscaler:
    def __init__(self, clusters):  # noqa: ANN001
        self.clusters = clusters
        self.busy_since: dict[str, float] = {}
        self.idle_since: dict[str, float] = {}

    def tick(self) -> None:
        for cluster_id, procs in list(self.clusters.procs.items()):
            try:
                self._check(cluster_id, procs)
            except Exception:  # noqa: BLE001 - one cluster's UI must not stop the others
                log.exception("autoscale check of cluster %s", cluster_id)

    def _check(self, cluster_id: str, procs) -> None:  # noqa: ANN001
        spec = self.clusters.spec_of(cluster_id)
        auto = spec.get("autoscale")
        if not auto or procs.standalone is None:
            return
        info = self.clusters.get(cluster_id)
        if info["state"] != "RUNNING":
            return
        try:
            counts = driver_control.task_counts(procs.info)
        except driver_control.ControlError:
            return
        now = time.monotonic()
        current = len(procs.standalone.workers())
        if counts["pending"] > 0:
            self.idle_since.pop(cluster_id, None)
            since = self.busy_since.setdefault(cluster_id, now)
            if now - since >= UPSCALE_AFTER and current < auto["max_workers"]:
                nt = catalog.NODE_TYPES_BY_ID.get(spec.get("node_type_id") or "", catalog.SMALLEST_LOCAL)
                cores = catalog.capped(nt)[0]
                target = min(auto["max_workers"], current + max(1, math.ceil(counts["pending"] / cores)))
                self.busy_since.pop(cluster_id, None)
                self.clusters.autoscale_to(
                    cluster_id, target, f"Autoscaling up: {counts['pending']} task(s) waiting.",
                    pending_tasks=counts["pending"], running_tasks=counts["running"], current_num_workers=current,
                    target_num_workers=target)
            return
        self.busy_since.pop(cluster_id, None)
        if counts["stages"]:
            self.idle_since.pop(cluster_id, None)
            return
        since = self.idle_since.setdefault(cluster_id, now)
        cooldown = _cooldown(spec)
        if now - since >= cooldown and current > auto["min_workers"]:
            self.idle_since.pop(cluster_id, None)
            self.clusters.autoscale_to(
                cluster_id, current - 1, f"Autoscaling down: no task for {cooldown:.0f} s.",
                pending_tasks=0, running_tasks=0, current_num_workers=current, target_num_workers=current - 1)


def _cooldown(spec: dict) -> float:
    value = (spec.get("spark_conf") or {}).get(COOLDOWN_CONF)
    try:
        return max(float(value), 1.0) if value is not None else DEFAULT_COOLDOWN
    except ValueError:
        return DEFAULT_COOLDOWN
