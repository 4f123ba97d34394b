"""`brickyard serving export`: an endpoint as a container build context plus Kubernetes manifests.

The export reads the endpoint and its model files over the workspace's REST API with the user's
token (as any client would), so it works against a running workspace, local or remote.
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import re
import secrets
import shutil
import sys
from importlib.metadata import version as dist_version
from pathlib import Path

import requests
import yaml

from brickyard.jupyter.client import Api, ApiError, resolve
from brickyard.serving.config import WORKLOAD_CONCURRENCY

PORT = 8080
# Per pod: CPU/memory requests and the most pods the autoscaler may run, by workload size.
POD_RESOURCES = {"Small": ("1", "2Gi", 2), "Medium": ("2", "4Gi", 4), "Large": ("4", "8Gi", 8)}
SIZES = list(WORKLOAD_CONCURRENCY)


def k8s_name(name: str) -> str:
    """A DNS-1123 label for Kubernetes object names."""
    out = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")
    return (out or "endpoint")[:50]


def _download_version(api: Api, model: str, version: str, dest: Path) -> int:
    """Copy a registered model version's files (list-artifacts + signed URLs); returns the file count."""
    count, stack = 0, [""]
    while stack:
        folder = stack.pop()
        listing = api.call("GET", "/api/2.0/mlflow/model-versions/list-artifacts", name=model, version=version,
                           path=folder)
        for f in listing.get("files", []):
            if f["is_dir"]:
                stack.append(f["path"])
                continue
            signed = api.call("GET", "/api/2.0/mlflow/model-versions/get-signed-download-uri", name=model,
                              version=version, path=f["path"])
            headers = {h["name"]: h["value"] for h in signed.get("headers", [])}
            target = dest / f["path"]
            if not target.resolve().is_relative_to(dest.resolve()):
                raise ValueError(f"refusing a model file outside the model folder: {f['path']!r}")
            target.parent.mkdir(parents=True, exist_ok=True)
            with requests.get(signed["signed_uri"], headers=headers, stream=True, timeout=api.timeout) as resp:
                resp.raise_for_status()
                with open(target, "wb") as fh:
                    for chunk in resp.iter_content(1 << 20):
                        fh.write(chunk)
            count += 1
    return count


def _requirements(model_dirs: list[Path]) -> list[str]:
    """MLflow as this workspace runs it, then each model's own pins (the first pin of a package wins)."""
    lines, seen = [f"mlflow=={dist_version('mlflow')}"], {"mlflow"}
    for d in model_dirs:
        req = d / "requirements.txt"
        if not req.exists():
            continue
        for raw in req.read_text().splitlines():
            line = raw.strip()
            if not line or line.startswith(("#", "-")):
                continue
            pkg = re.split(r"[<>=!~\[; ]", line, maxsplit=1)[0].lower().replace("_", "-")
            if pkg in seen or pkg.startswith("mlflow"):
                continue
            seen.add(pkg)
            lines.append(line)
    return lines


def manifests(endpoint: str, image: str, key: str, entities: list[dict]) -> dict[str, dict]:
    """Secret, Deployment (probes), Service and HorizontalPodAutoscaler of an exported endpoint."""
    name = k8s_name(endpoint)
    labels = {"app.kubernetes.io/name": "brickyard-serving", "app.kubernetes.io/instance": name}
    size = max((e.get("workload_size", "Small") for e in entities), key=SIZES.index)
    cpu, memory, max_pods = POD_RESOURCES[size]
    secret_name = f"{name}-key"
    container = {
        "name": "scoring",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"}],
        "env": [{"name": "SERVING_KEY", "valueFrom": {"secretKeyRef": {"name": secret_name, "key": "key"}}}],
        "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}, "initialDelaySeconds": 5,
                           "periodSeconds": 5, "failureThreshold": 3},
        "livenessProbe": {"httpGet": {"path": "/health", "port": "http"}, "initialDelaySeconds": 60,
                          "periodSeconds": 10, "failureThreshold": 3},
        "resources": {"requests": {"cpu": cpu, "memory": memory}, "limits": {"memory": memory}},
        "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "allowPrivilegeEscalation": False},
    }
    return {
        "secret.yaml": {
            "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": secret_name, "labels": labels},
            "data": {"key": base64.b64encode(key.encode()).decode()},
        },
        "deployment.yaml": {
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "labels": labels},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
                "template": {"metadata": {"labels": labels},
                             "spec": {"containers": [container], "terminationGracePeriodSeconds": 30}},
            },
        },
        "service.yaml": {
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "labels": labels},
            "spec": {"type": "LoadBalancer", "selector": labels,
                     "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]},
        },
        "hpa.yaml": {
            "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": name, "labels": labels},
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                "minReplicas": 1, "maxReplicas": max_pods,
                "metrics": [{"type": "Resource", "resource": {
                    "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}}],
            },
        },
    }


def dockerfile(cmd: list[str]) -> str:
    return "\n".join([
        "# Build context exported by `brickyard serving export`.",
        "FROM python:3.11-slim",
        "ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 "
        "MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=true",
        "WORKDIR /app",
        "COPY requirements.txt .",
        "RUN pip install -r requirements.txt",
        "COPY model/ model/",
        "COPY server.py endpoint.json ./",
        "RUN useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin serving",
        "USER 10001",
        f"EXPOSE {PORT}",
        "CMD " + json.dumps(cmd),
        "",
    ])


def export(api: Api, endpoint: str, out: Path, image: str | None = None) -> dict:
    """Write the build context and manifests of `endpoint` into `out`; returns what was written."""
    ep = api.call("GET", f"/api/2.0/serving-endpoints/{endpoint}")
    config = ep.get("config")
    if not config:
        raise ValueError(f"Serving endpoint {endpoint!r} has no active config to export (state: {ep.get('state')}).")
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"{out} is not empty; choose a new folder.")
    out.mkdir(parents=True, exist_ok=True)
    entities = config["served_entities"]
    weights = {r["served_model_name"]: r["traffic_percentage"] for r in config["traffic_config"]["routes"]}
    model_dirs, served = [], []
    for e in entities:
        if weights.get(e["name"], 0) <= 0:
            continue  # no traffic goes there: not worth shipping
        dest = out / "model" / e["name"]
        files = _download_version(api, e["entity_name"], e["entity_version"], dest)
        model_dirs.append(dest)
        served.append({"name": e["name"], "entity_name": e["entity_name"], "entity_version": e["entity_version"],
                       "traffic_percentage": weights[e["name"]], "files": files})
    shutil.copyfile(Path(__file__).with_name("worker.py"), out / "server.py")
    threads = max(WORKLOAD_CONCURRENCY[e.get("workload_size", "Small")] for e in entities)
    cmd = ["python", "server.py", "--host", "0.0.0.0", "--port", str(PORT), "--threads", str(threads),
           "--key-env", "SERVING_KEY"]
    for s in served:
        cmd += ["--model", f"{s['name']}=model/{s['name']}:{s['traffic_percentage']}"]
    (out / "Dockerfile").write_text(dockerfile(cmd))
    (out / ".dockerignore").write_text("k8s/\n")
    (out / "requirements.txt").write_text("\n".join(_requirements(model_dirs)) + "\n")
    (out / "endpoint.json").write_text(json.dumps({"name": endpoint, "served_models": served}, indent=2) + "\n")
    image = image or f"{k8s_name(endpoint)}:v{config.get('config_version', 1)}"
    key = secrets.token_urlsafe(32)
    k8s = out / "k8s"
    k8s.mkdir()
    for filename, obj in manifests(endpoint, image, key, entities).items():
        path = k8s / filename
        # The Secret holds the endpoint key: readable by the user only.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if filename == "secret.yaml" else 0o644)
        with os.fdopen(fd, "w") as fh:
            yaml.safe_dump(obj, fh, sort_keys=False)
    return {"out": str(out), "image": image, "served_models": served, "k8s": sorted(p.name for p in k8s.iterdir())}


def cmd_export(args: argparse.Namespace) -> int:
    api = Api(resolve(args.host, args.token, profile=args.profile), timeout=300)
    try:
        result = export(api, args.endpoint, Path(args.out).expanduser(), args.image)
    except ApiError as exc:
        print(f"error: {exc.error_code}: {exc.message}", file=sys.stderr)
        return 1
    name = k8s_name(args.endpoint)
    print(f"Exported serving endpoint {args.endpoint} to {result['out']}:")
    for s in result["served_models"]:
        print(f"  model/{s['name']}: {s['entity_name']} version {s['entity_version']} "
              f"({s['traffic_percentage']}% of traffic, {s['files']} files)")
    print("  Dockerfile, server.py, requirements.txt, endpoint.json")
    print(f"  k8s/: {', '.join(result['k8s'])} (k8s/secret.yaml holds the endpoint key)")
    print("Next (AKS): az acr build --registry <acr> --image " + result["image"] + " " + result["out"])
    print(f"  then set the image in k8s/deployment.yaml to <acr>.azurecr.io/{result['image']} and "
          f"kubectl apply -f {result['out']}/k8s/ ; kubectl get service {name}")
    return 0


def add_parser(sub) -> None:  # noqa: ANN001
    p = sub.add_parser("serving", help="model serving commands")
    serving_sub = p.add_subparsers(dest="serving_command", required=True)
    ex = serving_sub.add_parser("export", help="export an endpoint as a container build context + K8s manifests")
    ex.add_argument("endpoint")
    ex.add_argument("--out", required=True, help="a new (or empty) folder for the build context")
    ex.add_argument("--image", help="image reference for the Deployment (default <endpoint>:v<config version>)")
    ex.add_argument("--host", help="workspace URL (DATABRICKS_HOST, or a ~/.databrickscfg profile)")
    ex.add_argument("--token", help="personal access token (prefer DATABRICKS_TOKEN: arguments are visible to ps)")
    ex.add_argument("--profile", help="~/.databrickscfg profile (default: brickyard, then DEFAULT)")
    ex.set_defaults(func=cmd_export)
