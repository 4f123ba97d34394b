"""Talk to a running driver's JVM over its py4j gateway: adopt a pool driver, add jars, read task counts."""
from __future__ import annotations

import json
import urllib.request
from contextlib import contextmanager

# Keys that describe the cluster rather than configure Spark: recorded, nothing to apply.
_INFORMATIONAL = ("spark.databricks.",)


class ControlError(RuntimeError):
    """The driver could not be reached or refused a change."""


@contextmanager
def _gateway(info: dict):  # noqa: ANN202
    from py4j.java_gateway import GatewayParameters, JavaGateway

    try:
        gw = JavaGateway(gateway_parameters=GatewayParameters(
            port=int(info["gateway_port"]), auth_token=info["gateway_secret"], auto_convert=True,
            auto_close=True))
    except Exception as exc:  # noqa: BLE001
        raise ControlError(f"cannot reach the driver's gateway: {exc}") from exc
    try:
        yield gw
    except ControlError:
        raise
    except Exception as exc:  # noqa: BLE001 - py4j raises several kinds
        raise ControlError(str(exc)) from exc
    finally:
        gw.close()  # only our connections: never shutdown(), which would stop the driver's gateway


def _root(gw):  # noqa: ANN001, ANN202
    return gw.jvm.org.apache.spark.sql.classic.SparkSession.getDefaultSession().get()


def adopt(info: dict, spark_conf: dict, env_vars: dict, jars: list[str]) -> tuple[list[str], list[str]]:
    """Apply a cluster's conf to a running driver; returns (applied keys, keys that need a JVM start).

    SQL settings go to the shared state new sessions are built from (every notebook attaches
    with a new session), Hadoop settings to the shared Hadoop configuration, environment
    variables to the system properties every attaching SparkContext reads its executor
    environment from (so Python workers see them), jars to sc.addJar.
    """
    applied, not_applied = [], []
    with _gateway(info) as gw:
        root = _root(gw)
        sc = root.sparkContext()
        live, shared = sc.conf(), root.sharedState().conf()
        system = gw.jvm.java.lang.System
        for key, value in spark_conf.items():
            value = str(value)
            if key.startswith("spark.hadoop."):
                sc.hadoopConfiguration().set(key[len("spark.hadoop."):], value)
            elif key.startswith("spark.executorEnv."):
                system.setProperty(key, value)
            elif key == "spark.master" and value.startswith("local") and sc.master().startswith("local"):
                pass  # a Single Node cluster on a local driver: the pool's node type sets the cores
            elif not (root.conf().isModifiable(key) or key.startswith(_INFORMATIONAL)
                      or (live.contains(key) and live.get(key) == value)):
                not_applied.append(key)
                continue
            live.set(key, value)
            shared.set(key, value)
            applied.append(key)
        for name, value in env_vars.items():
            system.setProperty(f"spark.executorEnv.{name}", str(value))
            live.set(f"spark.executorEnv.{name}", str(value))
        for jar in jars:
            sc.addJar(jar)
    return applied, not_applied


def add_jars(info: dict, jars: list[str]) -> None:
    """Ship jars to the executors of a running driver (the driver's own class path needs a restart)."""
    with _gateway(info) as gw:
        sc = _root(gw).sparkContext()
        for jar in jars:
            sc.addJar(jar)


def task_counts(info: dict, timeout: float = 3.0) -> dict:
    """Active stages' task counts from the driver's Spark UI REST API: {pending, running, stages}."""
    ui, app = info.get("spark_ui_url"), info.get("application_id")
    if not ui or not app:
        raise ControlError("the driver has no Spark UI")
    url = f"{ui.rstrip('/')}/api/v1/applications/{app}/stages?status=active"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            stages = json.load(resp)
    except (OSError, ValueError) as exc:
        raise ControlError(f"Spark UI not reachable: {exc}") from exc
    pending = running = 0
    for st in stages:
        total = st.get("numTasks", 0)
        active = st.get("numActiveTasks", 0)
        done = st.get("numCompleteTasks", 0) + st.get("numSkippedTasks", 0)
        running += active
        pending += max(total - active - done, 0)
    return {"pending": pending, "running": running, "stages": len(stages)}
