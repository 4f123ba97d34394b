"""Helpers for tests that run code on a cluster through the SDK's Command Execution API (1.2)."""
from __future__ import annotations

import time
from datetime import timedelta

from databricks.sdk.service import compute

T = timedelta(minutes=4)


def run(w, cluster_id, ctx, code):  # noqa: ANN001, ANN201
    """The results of Python `code` run in context `ctx`."""
    return w.command_execution.execute_and_wait(cluster_id=cluster_id, context_id=ctx,
                                                language=compute.Language.PYTHON, command=code, timeout=T).results


def text(w, cluster_id, ctx, code) -> str:  # noqa: ANN001
    """The text output of Python `code` (fails the test on any other result type)."""
    r = run(w, cluster_id, ctx, code)
    assert r.result_type == compute.ResultType.TEXT, (r.summary, r.cause)
    return r.data


def wait_for(fn, timeout=180, what="condition"):  # noqa: ANN001, ANN201
    """fn()'s first truthy value, polled every 0.2 s; an AssertionError after `timeout` seconds."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if value := fn():
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def environ_of(pid: int) -> dict[str, str]:
    """The environment of a live process."""
    with open(f"/proc/{pid}/environ", "rb") as fh:
        return dict(e.decode().split("=", 1) for e in fh.read().split(b"\0") if b"=" in e)
