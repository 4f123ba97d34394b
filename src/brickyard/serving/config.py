"""Serving settings and the validation of endpoint configs (served entities and traffic)."""
from __future__ import annotations

import os
import re

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from brickyard.errors import invalid

NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,63}$")
# Provisioned concurrency of each workload size (Databricks' lower bounds).
WORKLOAD_CONCURRENCY = {"Small": 4, "Medium": 8, "Large": 16}
MAX_ENTITIES = 10


class ServingSettings(BaseSettings):
    """BRICKYARD_SERVING_* variables."""

    model_config = SettingsConfigDict(env_prefix="BRICKYARD_SERVING_", extra="ignore")

    # A served entity with scale_to_zero_enabled stops its workers after this many idle seconds.
    idle_seconds: float = 1800.0
    start_timeout: float = 300.0
    request_timeout: float = 120.0
    max_payload_bytes: int = 16 << 20
    # Worker processes per served version never exceed this (the machine's cores by default).
    max_processes: int = Field(default_factory=lambda: os.cpu_count() or 2)
    retry_after_seconds: int = 2


def sizing(workload_size: str, max_processes: int) -> tuple[int, int]:
    """(processes, threads per process) for a workload size.

    Each process predicts one request at a time (pyfunc models are CPU-bound under the GIL), so
    the concurrency of a size is its number of processes, capped by the cores of this machine.
    """
    return max(1, min(WORKLOAD_CONCURRENCY[workload_size], max_processes)), 1


def _entity(item: object, legacy: bool) -> dict:
    if not isinstance(item, dict):
        raise invalid("Each served entity must be an object.")
    for unsupported in ("external_model", "foundation_model", "instance_profile_arn", "provisioned_model_units"):
        if item.get(unsupported):
            raise invalid(f"served entity field {unsupported!r} is not supported here: serve a registered MLflow model.")
    name_key, version_key = ("model_name", "model_version") if legacy else ("entity_name", "entity_version")
    entity = item.get(name_key)
    version = item.get(version_key)
    if not isinstance(entity, str) or not entity:
        raise invalid(f"Served entity is missing {name_key}.")
    if isinstance(version, int) and not isinstance(version, bool):
        version = str(version)
    if not isinstance(version, str) or not version.isdigit():
        raise invalid(f"Served entity {entity!r}: {version_key} must be a model version number.")
    size = item.get("workload_size") or "Small"
    if size not in WORKLOAD_CONCURRENCY:
        raise invalid(f"workload_size must be one of {', '.join(WORKLOAD_CONCURRENCY)}; got {size!r}.")
    kind = item.get("workload_type") or "CPU"
    if kind != "CPU":
        raise invalid(f"workload_type {kind!r} is not available: this workspace serves on CPU.")
    stz = item.get("scale_to_zero_enabled", False)
    if not isinstance(stz, bool):
        raise invalid("scale_to_zero_enabled must be a boolean.")
    name = item.get("name") or f"{entity}-{version}"
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise invalid(f"Served entity name {name!r} may only hold letters, digits, '-' and '_' (63 at most).")
    env = item.get("environment_vars") or {}
    if not isinstance(env, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
        raise invalid("environment_vars must map names to strings.")
    if any("{{secrets/" in v for v in env.values()):
        raise invalid("Secret references in environment_vars are not supported here.")
    return {"name": name, "entity_name": entity, "entity_version": version, "workload_size": size,
            "scale_to_zero_enabled": stz, "environment_vars": env}


def normalize(body: dict) -> dict:
    """The stored form of an endpoint config: {served_entities: [...], traffic_config: {routes: [...]}}."""
    if not isinstance(body, dict):
        raise invalid("config must be an object.")
    items, legacy = body.get("served_entities"), False
    if not items and body.get("served_models"):
        items, legacy = body["served_models"], True
    if not isinstance(items, list) or not items:
        raise invalid("The config must have at least one served entity (served_entities).")
    if len(items) > MAX_ENTITIES:
        raise invalid(f"An endpoint serves at most {MAX_ENTITIES} entities.")
    entities = [_entity(i, legacy) for i in items]
    names = [e["name"] for e in entities]
    if len(set(names)) != len(names):
        raise invalid("Served entity names must be unique within an endpoint.")
    return {"served_entities": entities, "traffic_config": {"routes": _routes(body.get("traffic_config"), names)}}


def _routes(traffic: object, names: list[str]) -> list[dict]:
    if traffic is None or (isinstance(traffic, dict) and not traffic.get("routes")):
        share, extra = divmod(100, len(names))
        return [{"served_model_name": n, "traffic_percentage": share + (1 if i < extra else 0)}
                for i, n in enumerate(names)]
    if not isinstance(traffic, dict) or not isinstance(traffic.get("routes"), list):
        raise invalid("traffic_config must be an object with a list of routes.")
    routes, seen = [], set()
    for r in traffic["routes"]:
        if not isinstance(r, dict):
            raise invalid("Each traffic route must be an object.")
        target = r.get("served_entity_name") or r.get("served_model_name")
        pct = r.get("traffic_percentage")
        if target not in names:
            raise invalid(f"Traffic route names {target!r}, which is not a served entity of this config.")
        if target in seen:
            raise invalid(f"Served entity {target!r} appears twice in traffic_config.")
        if not isinstance(pct, int) or isinstance(pct, bool) or not 0 <= pct <= 100:
            raise invalid("traffic_percentage must be an integer between 0 and 100.")
        seen.add(target)
        routes.append({"served_model_name": target, "traffic_percentage": pct})
    if sum(r["traffic_percentage"] for r in routes) != 100:
        raise invalid("The traffic percentages of the routes must add up to 100.")
    return routes
