"""`brickyard jupyter`: kernelspecs for the workspace's clusters, and JupyterLab wired to the workspace."""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

from brickyard.jupyter.client import Api, ApiError, Credentials, resolve, write_credentials

SPEC_PREFIX = "brickyard"
CONTENTS_MANAGER = "brickyard.jupyter.contents.WorkspaceContentsManager"
SESSION_MANAGER = "brickyard.jupyter.contents.WorkspaceSessionManager"


def default_data_dir() -> Path:
    home = os.environ.get("BRICKYARD_HOME")
    return (Path(home).expanduser() if home else Path.home() / ".brickyard") / "jupyter"


def kernelspec(cluster: str, display_name: str, creds_file: Path, host: str) -> dict:
    return {
        "argv": [sys.executable, "-m", "brickyard.jupyter.proxy", "-f", "{connection_file}",
                 "--cluster", cluster, "--credentials", str(creds_file)],
        "display_name": display_name,
        "language": "python",
        # Interrupts travel as messages: the process Jupyter started is not the one running the code.
        "interrupt_mode": "message",
        "metadata": {"brickyard": {"cluster_id": cluster, "host": host}},
    }


def write_kernelspecs(api: Api, data_dir: Path, creds_file: Path, cluster: str | None = None) -> list[str]:
    """One kernelspec per running cluster (or the one asked for) plus `brickyard`; returns their names."""
    clusters = api.call("GET", "/api/2.0/clusters/list").get("clusters", [])
    if cluster:
        chosen = [api.call("GET", "/api/2.0/clusters/get", cluster_id=cluster)]
    else:
        chosen = [c for c in clusters if c.get("state") == "RUNNING"]
    specs = {f"{SPEC_PREFIX}-{c['cluster_id']}": kernelspec(
        c["cluster_id"], f"Brickyard: {c.get('cluster_name') or c['cluster_id']}", creds_file, api.creds.host)
        for c in chosen}
    # The generic kernel: the cluster given here, else whichever single cluster is running when it starts.
    specs[SPEC_PREFIX] = kernelspec(cluster or "auto", "Brickyard" + (f" ({chosen[0].get('cluster_name')})"
                                                                       if cluster else " (running cluster)"),
                                    creds_file, api.creds.host)
    kernels_dir = data_dir / "kernels"
    kernels_dir.mkdir(parents=True, exist_ok=True)
    for old in kernels_dir.glob(f"{SPEC_PREFIX}*"):
        if old.name not in specs and (old / "kernel.json").exists():
            shutil.rmtree(old)  # a cluster that is no longer running
    for name, spec in specs.items():
        (kernels_dir / name).mkdir(exist_ok=True)
        (kernels_dir / name / "kernel.json").write_text(json.dumps(spec, indent=1) + "\n")
    return sorted(specs)


def prepare(creds: Credentials, data_dir: Path, cluster: str | None = None) -> tuple[Api, dict, list[str]]:
    """Check the credentials, store them for kernels and contents, write the kernelspecs."""
    api = Api(creds)
    me = api.call("GET", "/api/2.0/preview/scim/v2/Me")
    creds_file = data_dir / "credentials.json"
    write_credentials(creds_file, creds)
    return api, me, write_kernelspecs(api, data_dir, creds_file, cluster)


def lab_argv(data_dir: Path, port: int | None, no_browser: bool, user_name: str | None,
             allow_root: bool = False) -> list[str]:
    argv = [sys.executable, "-m", "jupyterlab",
            f"--ServerApp.contents_manager_class={CONTENTS_MANAGER}",
            f"--ServerApp.session_manager_class={SESSION_MANAGER}",
            f"--WorkspaceContentsManager.credentials_file={data_dir / 'credentials.json'}"]
    if user_name:
        argv.append(f"--ServerApp.default_url=/lab/tree/Users/{user_name}")
    if port:
        argv += [f"--ServerApp.port={port}", "--ServerApp.port_retries=0"]
    if no_browser:
        argv.append("--no-browser")
    if allow_root:
        argv.append("--allow-root")
    return argv


def lab_env(data_dir: Path) -> dict:
    env = dict(os.environ)
    env["JUPYTER_PATH"] = os.pathsep.join(p for p in (str(data_dir), env.get("JUPYTER_PATH", "")) if p)
    return env


def cmd_jupyter(args: argparse.Namespace) -> int:
    creds = resolve(args.host, args.token, profile=args.profile)
    data_dir = Path(args.data_dir).expanduser() if args.data_dir else default_data_dir()
    try:
        _, me, names = prepare(creds, data_dir, args.cluster)
    except ApiError as exc:
        print(f"error: the workspace at {creds.host} answered {exc}", file=sys.stderr)
        return 1
    print(f"Workspace {creds.host} as {me.get('userName')}; kernelspecs in {data_dir / 'kernels'}: "
          f"{', '.join(names)}", flush=True)
    print(f"VS Code and other Jupyter clients see them with JUPYTER_PATH={data_dir}", flush=True)
    if args.kernelspecs_only:
        return 0
    argv = lab_argv(data_dir, args.port, args.no_browser, me.get("userName"), args.allow_root)
    os.execve(argv[0], argv, lab_env(data_dir))  # JupyterLab takes over this process (and its signals)
    return 0  # pragma: no cover


def add_parser(sub) -> None:  # noqa: ANN001
    p = sub.add_parser("jupyter", help="open JupyterLab on workspace notebooks, running on a cluster")
    p.add_argument("--host", help="workspace URL (DATABRICKS_HOST, or a ~/.databrickscfg profile)")
    p.add_argument("--token", help="personal access token (prefer DATABRICKS_TOKEN: arguments are visible to ps)")
    p.add_argument("--profile", help="~/.databrickscfg profile (default: brickyard, then DEFAULT)")
    p.add_argument("--cluster", help="cluster id: one kernelspec for it (default: one per running cluster)")
    p.add_argument("--port", type=int, help="JupyterLab port (default: Jupyter's, 8888 or the next free one)")
    p.add_argument("--no-browser", action="store_true", help="do not open a browser")
    p.add_argument("--allow-root", action="store_true", help="let JupyterLab run as root (containers, CI)")
    p.add_argument("--data-dir", help="Jupyter data dir for the kernelspecs (default: <BRICKYARD_HOME>/jupyter)")
    p.add_argument("--kernelspecs-only", action="store_true",
                   help="write the kernelspecs and credentials, then exit (for VS Code)")
    p.set_defaults(func=cmd_jupyter)
