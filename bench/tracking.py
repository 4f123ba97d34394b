"""MLflow logging throughput through the workspace vs a stock `mlflow server`, as a ratio.

Both servers run on this machine with SQLite (WAL for both unless --stock-journal default),
one serving process each (`--workers 1` for the stock server), and are driven by the same sequential MlflowClient workload: per run,
runs/create, one log_batch (metrics + params + tags) and runs/update. Small rounds alternate
between the servers so that machine noise hits both; throughput is taken from the median run
time. Target: ratio >= 0.95.

    python bench/tracking.py [--rounds 40] [--runs 5] [--metrics 100]
"""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import socket
import statistics
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

TOKEN = "dapi" + "b3" * 16


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen, what: str, timeout: float = 90) -> float:
    start = time.time()
    while time.time() - start < timeout:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited: {proc.stdout.read() if proc.stdout else ''}")
        try:
            if requests.get(url, timeout=1).ok:
                return time.time() - start
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{what} did not become healthy in {timeout:.0f} s")


def start_workspace(tmp: Path) -> tuple[str, subprocess.Popen]:
    port = free_port()
    env = dict(os.environ, BRICKYARD_HOME=str(tmp / "brickyard"), BRICKYARD_PORT=str(port),
               BRICKYARD_HOST="127.0.0.1", BRICKYARD_BOOTSTRAP_TOKEN=TOKEN, BRICKYARD_LOG_LEVEL="warning")
    proc = subprocess.Popen([sys.executable, "-m", "brickyard.cli", "up", "--profile", "no"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    wait_healthy(url + "/health", proc, "brickyard up")
    return url, proc


def start_stock(tmp: Path, wal: bool) -> tuple[str, subprocess.Popen]:
    port = free_port()
    if wal:  # the workspace keeps MLflow's SQLite file in WAL mode; give stock the same
        conn = sqlite3.connect(tmp / "stock.db")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.close()
    cmd = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
           "--backend-store-uri", f"sqlite:///{tmp / 'stock.db'}", "--artifacts-destination", str(tmp / "stock-art")]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp,
                            env=dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true"))
    url = f"http://127.0.0.1:{port}"
    wait_healthy(url + "/health", proc, "mlflow server")
    return url, proc


def workload(client, exp_id: str, runs: int, metrics: int) -> list[float]:
    """Seconds taken by each of `runs` runs: create, one log_batch of `metrics` metrics, 10 params
    and 5 tags, terminate."""
    from mlflow.entities import Metric, Param, RunTag

    keys = max(1, metrics // 10)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run = client.create_run(exp_id)
        now = int(time.time() * 1000)
        client.log_batch(
            run.info.run_id,
            metrics=[Metric(f"m{k}", k * 0.1 + s, now, s) for k in range(keys) for s in range(metrics // keys)],
            params=[Param(f"p{i}", str(i)) for i in range(10)],
            tags=[RunTag(f"t{i}", "x") for i in range(5)],
        )
        client.set_terminated(run.info.run_id)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--runs", type=int, default=5, help="runs per round and server")
    parser.add_argument("--metrics", type=int, default=100, help="metrics per log_batch")
    parser.add_argument("--stock-journal", choices=("wal", "default"), default="wal",
                        help="SQLite journal of the stock server's file (the workspace uses WAL)")
    args = parser.parse_args()

    os.environ.update(MLFLOW_TRACKING_TOKEN=TOKEN, MLFLOW_DISABLE_TELEMETRY="true",
                      MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT="true")
    from mlflow import MlflowClient

    logging.getLogger("mlflow").setLevel(logging.WARNING)  # no "View run ..." line per run

    tmp = Path(tempfile.mkdtemp(prefix="bench-tracking-"))
    procs = []
    try:
        t0 = time.time()
        ws_url, proc = start_workspace(tmp)
        procs.append(proc)
        stock_url, proc = start_stock(tmp, args.stock_journal == "wal")
        procs.append(proc)
        print(f"servers up in {time.time() - t0:.1f} s (workspace {ws_url}, stock {stock_url}, "
              f"stock SQLite journal: {args.stock_journal})")
        clients = {"workspace": MlflowClient(ws_url), "stock": MlflowClient(stock_url)}
        exps = {name: c.create_experiment(f"bench-{int(time.time())}") for name, c in clients.items()}
        for name, c in clients.items():  # warm-up: imports, first store use, connection pools
            workload(c, exps[name], 3, args.metrics)
        times: dict[str, list[float]] = {name: [] for name in clients}
        for i in range(args.rounds):
            order = list(clients) if i % 2 == 0 else list(reversed(clients))
            for name in order:
                times[name] += workload(clients[name], exps[name], args.runs, args.metrics)
        # The median run time: other processes on a shared machine only add outliers.
        rate = {name: 1 / statistics.median(t) for name, t in times.items()}
        for name in clients:
            mean_rate = len(times[name]) / sum(times[name])
            print(f"{name:>9}: {rate[name]:7.1f} runs/s  {rate[name] * args.metrics:9.0f} metrics/s "
                  f"(median of {len(times[name])} runs; mean {mean_rate:.1f} runs/s)")
        ratio = rate["workspace"] / rate["stock"]
        verdict = "meets" if ratio >= 0.95 else "BELOW"
        print(f"tracking throughput ratio workspace/stock: {ratio:.3f} ({verdict} the 0.95 target)")
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
