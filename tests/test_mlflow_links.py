"""Run links after a notebook cell on a team server: they use the workspace's public URL
(BRICKYARD_PUBLIC_URL), while the kernel keeps calling the workspace on loopback."""
from __future__ import annotations

import base64
import re
from datetime import timedelta

import pytest
from databricks.sdk.service import compute, jobs
from databricks.sdk.service.workspace import ImportFormat, Language

from command_support import T, text
from conftest import server_with_env

PUBLIC = "https://brickyard.example.test"  # never resolved: the kernel must not call it
CELL = """
import mlflow
mlflow.set_experiment({exp!r})
with mlflow.start_run(run_name="linked") as run:
    mlflow.log_param("p", 1)
print("RUN", run.info.run_id, run.info.experiment_id)
"""


def _links(output: str) -> list[str]:
    return re.findall(r"https?://[^\s\"'<>]+/ml/#/experiments/[^\s\"'<>]+", output)


@pytest.mark.slow
def test_run_links_use_the_public_url(tmp_path):
    with server_with_env(tmp_path / "home", {"BRICKYARD_PUBLIC_URL": PUBLIC + "/"}) as server:
        w = server.client()
        cluster = w.clusters.create_and_wait(
            cluster_name="links", spark_version="17.3.x-cpu-ml-scala2.13", node_type_id="local.medium",
            num_workers=0, spark_conf={"spark.databricks.cluster.profile": "singleNode", "spark.master": "local[*]"},
            custom_tags={"ResourceClass": "SingleNode"}, timeout=timedelta(minutes=5)).cluster_id
        try:
            # A command in an execution context: it logs through the loopback API (the public host does
            # not resolve) and its output links to the run under the public URL.
            ctx = w.command_execution.create_and_wait(cluster_id=cluster, language=compute.Language.PYTHON,
                                                      timeout=T).id
            out = text(w, cluster, ctx, CELL.format(exp="/Shared/links-cmd"))
            run_id, exp_id = re.search(r"RUN (\w+) (\w+)", out).groups()
            expected = f"{PUBLIC}/ml/#/experiments/{exp_id}/runs/{run_id}"
            links = _links(out)
            assert expected in links, out
            assert all(link.startswith(PUBLIC + "/ml/") for link in links), links
            assert "127.0.0.1" not in out
            host = text(w, cluster, ctx, "import os; print(os.environ['DATABRICKS_HOST'])")
            assert host == server.url  # the API URL stays loopback

            # A notebook job: the run page's executed notebook links the same way.
            path = "/Shared/links-nb"
            source = "# Databricks notebook source\n" + CELL.format(exp="/Shared/links-job")
            w.workspace.import_(path, content=base64.b64encode(source.encode()).decode(),
                                format=ImportFormat.SOURCE, language=Language.PYTHON, overwrite=True)
            run = w.jobs.submit(run_name="links", tasks=[jobs.SubmitTask(
                task_key="t", existing_cluster_id=cluster, notebook_task=jobs.NotebookTask(notebook_path=path))]
            ).result(timeout=timedelta(minutes=5))
            assert run.state.result_state == jobs.RunResultState.SUCCESS
            page = w.jobs.export_run(run.tasks[0].run_id).views[0].content
            job_exp = w.experiments.get_by_name("/Shared/links-job").experiment.experiment_id
            job_links = _links(page)
            assert job_links and all(link.startswith(f"{PUBLIC}/ml/#/experiments/{job_exp}") for link in job_links)
            assert "127.0.0.1" not in " ".join(job_links)
        finally:
            w.clusters.permanent_delete(cluster)
