"""Validate and normalise a cluster spec (the body of clusters/create and clusters/edit)."""
from __future__ import annotations

import copy
import re

from brickyard.compute import catalog
from brickyard.errors import invalid

SPEC_FIELDS = (
    "cluster_name", "spark_version", "node_type_id", "driver_node_type_id", "num_workers", "autoscale",
    "autotermination_minutes", "spark_conf", "spark_env_vars", "custom_tags", "init_scripts",
    "instance_pool_id", "driver_instance_pool_id", "data_security_mode", "single_user_name",
    "runtime_engine", "is_single_node", "kind", "use_ml_runtime", "enable_elastic_disk",
    "azure_attributes", "aws_attributes", "gcp_attributes", "cluster_log_conf", "ssh_public_keys",
    "docker_image", "policy_id", "apply_policy_default_values", "enable_local_disk_encryption",
    "workload_type", "cluster_source",
)
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
SECURITY_MODES = {
    "NONE", "SINGLE_USER", "USER_ISOLATION", "LEGACY_TABLE_ACL", "LEGACY_PASSTHROUGH", "LEGACY_SINGLE_USER",
    "LEGACY_SINGLE_USER_STANDARD", "DATA_SECURITY_MODE_AUTO", "DATA_SECURITY_MODE_STANDARD",
    "DATA_SECURITY_MODE_DEDICATED",
}
SINGLE_USER_MODES = {"SINGLE_USER", "LEGACY_SINGLE_USER", "LEGACY_SINGLE_USER_STANDARD"}
MAX_WORKERS = 64

SINGLE_NODE = "SINGLE_NODE"
HIGH_CONCURRENCY = "HIGH_CONCURRENCY"
STANDARD = "STANDARD"


def _str_map(spec: dict, name: str, *, env: bool = False) -> dict[str, str]:
    value = spec.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise invalid(f"{name} must be an object of string keys and values.")
    out = {}
    for k, v in value.items():
        if not isinstance(k, str) or not k:
            raise invalid(f"{name} has an empty or non-string key.")
        if env and not ENV_NAME_RE.match(k):
            raise invalid(f"{name}: {k!r} is not a valid environment variable name.")
        if isinstance(v, bool):
            v = str(v).lower()
        elif isinstance(v, (int, float)):
            v = str(v)
        if not isinstance(v, str):
            raise invalid(f"{name}.{k} must be a string.")
        out[k] = v
    return out


def _int(spec: dict, name: str, lo: int, hi: int) -> int | None:
    value = spec.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid(f"{name} must be an integer.")
    if not lo <= value <= hi:
        raise invalid(f"{name} must be between {lo} and {hi}; got {value}.")
    return value


def _init_scripts(spec: dict) -> list[dict]:
    scripts = spec.get("init_scripts") or []
    if not isinstance(scripts, list):
        raise invalid("init_scripts must be a list.")
    out = []
    for i, item in enumerate(scripts):
        if not isinstance(item, dict) or len(item) != 1:
            raise invalid(f"init_scripts[{i}] must name exactly one of workspace, dbfs, file, volumes.")
        (kind, where), = item.items()
        if kind not in ("workspace", "dbfs", "file", "volumes") or not isinstance(where, dict) \
                or not isinstance(where.get("destination"), str) or not where["destination"]:
            raise invalid(f"init_scripts[{i}].{kind}.destination is required.")
        out.append({kind: {"destination": where["destination"]}})
    return out


def normalize(body: dict, *, pools: set[str] | None = None) -> tuple[dict, list[str]]:
    """A clean spec and notes (events to record) from a create/edit body."""
    spec = {k: copy.deepcopy(v) for k, v in body.items() if k in SPEC_FIELDS and v is not None}
    notes: list[str] = []
    name = spec.get("cluster_name")
    if not isinstance(name, str) or not name.strip():
        raise invalid("cluster_name is required.")
    if len(name) > 100:
        raise invalid("cluster_name must be at most 100 characters.")
    try:
        runtime, note = catalog.resolve_runtime(spec.get("spark_version"))
    except ValueError as exc:
        raise invalid(str(exc)) from None
    if note:
        notes.append(note)
    spec["runtime_key"] = runtime.key
    for field in ("instance_pool_id", "driver_instance_pool_id"):
        pool = spec.get(field)
        if pool is not None and (not isinstance(pool, str) or (pools is not None and pool not in pools)):
            raise invalid(f"{field} {pool!r} is not an instance pool of this workspace.")
    for field in ("node_type_id", "driver_node_type_id"):
        if field in spec:
            try:
                catalog.node_type(spec[field])
            except ValueError as exc:
                raise invalid(f"{field}: {exc}") from None
    if "node_type_id" not in spec and "instance_pool_id" not in spec:
        raise invalid("node_type_id is required (or instance_pool_id); see clusters/list-node-types.")
    spec.setdefault("driver_node_type_id", spec.get("node_type_id"))
    spec["spark_conf"] = _str_map(spec, "spark_conf")
    spec["spark_env_vars"] = _str_map(spec, "spark_env_vars", env=True)
    spec["custom_tags"] = _str_map(spec, "custom_tags")
    spec["init_scripts"] = _init_scripts(spec)
    auto = spec.get("autoscale")
    if auto is not None:
        if not isinstance(auto, dict):
            raise invalid("autoscale must be an object with min_workers and max_workers.")
        lo = _int(auto, "min_workers", 0, MAX_WORKERS)
        hi = _int(auto, "max_workers", 1, MAX_WORKERS)
        if lo is None or hi is None:
            raise invalid("autoscale needs both min_workers and max_workers.")
        if lo > hi:
            raise invalid("autoscale.min_workers must not exceed autoscale.max_workers.")
        spec["autoscale"] = {"min_workers": lo, "max_workers": hi}
        spec.pop("num_workers", None)
    else:
        workers = _int(spec, "num_workers", 0, MAX_WORKERS)
        spec["num_workers"] = 0 if workers is None else workers
    minutes = _int(spec, "autotermination_minutes", 0, 43200)
    spec["autotermination_minutes"] = minutes or 0
    mode = spec.get("data_security_mode")
    if mode is not None and mode not in SECURITY_MODES:
        raise invalid(f"data_security_mode {mode!r} is not one of {sorted(SECURITY_MODES)}.")
    if mode in SINGLE_USER_MODES and not (isinstance(spec.get("single_user_name"), str)
                                          and spec["single_user_name"].strip()):
        raise invalid(f"single_user_name is required when data_security_mode is {mode}.")
    if spec.get("is_single_node") is True:
        spec["num_workers"] = 0
        spec.pop("autoscale", None)
        spec["spark_conf"].setdefault("spark.databricks.cluster.profile", "singleNode")
        spec["spark_conf"].setdefault("spark.master", "local[*, 4]")
        spec["custom_tags"].setdefault("ResourceClass", "SingleNode")
    profile = spec["spark_conf"].get("spark.databricks.cluster.profile")
    if profile == "singleNode" and (spec.get("num_workers") or spec.get("autoscale")):
        raise invalid("num_workers must be 0 for a Single Node cluster (spark.databricks.cluster.profile=singleNode).")
    master = spec["spark_conf"].get("spark.master")
    if profile == "singleNode" and master is not None and not master.startswith("local"):
        raise invalid(f"spark_conf spark.master must be local[*] for a Single Node cluster; got {master!r}.")
    return spec, notes


def mode_of(spec: dict) -> str:
    conf = spec.get("spark_conf") or {}
    profile = conf.get("spark.databricks.cluster.profile")
    if profile == "singleNode" or spec.get("is_single_node"):
        return SINGLE_NODE
    if profile == "serverless" or spec.get("data_security_mode") in ("USER_ISOLATION", "LEGACY_TABLE_ACL"):
        return HIGH_CONCURRENCY
    return STANDARD


def target_workers(spec: dict) -> int:
    if spec.get("autoscale"):
        return spec["autoscale"]["min_workers"]
    return spec.get("num_workers") or 0
