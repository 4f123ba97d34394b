"""Jobs pages in a real browser: create a notebook job through the form, Run now, watch the run
reach SUCCESS (htmx polling), and read the executed notebook on the run page."""
from __future__ import annotations

import base64
import re

import pytest
import requests
from databricks.sdk.service import jobs
from databricks.sdk.service.compute import ClusterSpec
from databricks.sdk.service.workspace import ImportFormat, Language
from ui_support import _new_page, csrf_of, login_with_token, session_cookies, shot

pytestmark = pytest.mark.ui

RUN_WAIT_MS = 300_000

NOTEBOOK = """# Databricks notebook source
# MAGIC %md # Report for the UI test

# COMMAND ----------

dbutils.widgets.text("who", "nobody")
who = dbutils.widgets.get("who")
print(f"hello {who} <script>document.title='pwned-by-print'</script>")

# COMMAND ----------

displayHTML("<p id='inside-frame'>html output</p><script>parent.document.title='pwned-by-html'</script>")

# COMMAND ----------

display(spark.range(3).toDF("n"))

# COMMAND ----------

import matplotlib.pyplot as plt
plt.plot([1, 2, 3], [1, 4, 9])

# COMMAND ----------

dbutils.notebook.exit(f"done-{who}")
"""


FAILING = """# Databricks notebook source
who = dbutils.widgets.get("who")
print(f"hello {who}")

# COMMAND ----------

raise RuntimeError(f"ui says no <b>{who}</b>")
"""


def import_notebook(w, path: str, source: str) -> str:
    w.workspace.mkdirs(path.rsplit("/", 1)[0])
    w.workspace.import_(path, content=base64.b64encode(source.encode()).decode(), format=ImportFormat.SOURCE,
                        language=Language.PYTHON, overwrite=True)
    return path


def test_create_form_validates_and_lists_notebooks(page, server, w, unique):
    path = import_notebook(w, f"/Users/admin/uijobs/{unique('picker')}", "# Databricks notebook source\nprint(1)\n")
    page.goto("/jobs")
    shot(page, "jobs-list")
    page.click("#create-job")
    assert page.url.endswith("/jobs/create")
    # The picker offers the notebooks the user can read.
    options = page.eval_on_selector_all("#notebook-paths option", "els => els.map(e => e.value)")
    assert path in options
    # A bad parameter line is refused with the reason, the form keeps what was typed.
    page.fill("input[name=name]", "bad params")
    page.fill("#notebook-path", path)
    page.check("#compute-new")
    page.fill("#job-params", "no equals sign here")
    page.click("#create-job-submit")
    assert "line 1: write key=value" in page.locator("#form-error").inner_text()
    assert page.input_value("#job-params") == "no equals sign here"
    # A bad cron expression is the service's own message.
    page.fill("#job-params", "a=1")
    page.fill("#job-cron", "not a cron")
    page.click("#create-job-submit")
    assert "schedule" in page.locator("#form-error").inner_text().lower()
    assert page.input_value("#job-cron") == "not a cron"
    # (the refused forms came back as 400 documents, which the browser logs)
    assert all("status of 400" in e for e in page.console_errors)
    page.console_errors.clear()
    # Fixed: a scheduled, paused job on a new job cluster (never run here).
    name = unique("uijob-sched")
    page.fill("input[name=name]", name)
    page.fill("#job-cron", "0 0 6 * * ?")
    page.fill("input[name=timezone]", "Europe/Paris")
    page.check("#job-paused")
    with page.expect_navigation():
        page.click("#create-job-submit")
    job_id = int(re.search(r"/jobs/(\d+)$", page.url).group(1))
    job = w.jobs.get(job_id)
    assert job.settings.name == name
    assert job.settings.schedule.quartz_cron_expression == "0 0 6 * * ?"
    assert job.settings.schedule.timezone_id == "Europe/Paris"
    assert job.settings.schedule.pause_status == jobs.PauseStatus.PAUSED
    task = job.settings.tasks[0]
    assert task.notebook_task.notebook_path == path and task.notebook_task.base_parameters == {"a": "1"}
    assert task.new_cluster.num_workers == 0 and task.new_cluster.spark_conf["spark.master"] == "local[*]"
    assert page.locator("#job-pause").inner_text() == "Paused"
    # Resume from the page: the schedule is unpaused for the API too.
    with page.expect_navigation():
        page.click("#toggle-pause")
    assert w.jobs.get(job_id).settings.schedule.pause_status == jobs.PauseStatus.UNPAUSED
    assert page.locator("#job-pause").inner_text() == "Active"
    shot(page, "job-page")
    # Listed, and deleted through the page.
    page.goto("/jobs")
    assert page.locator(f"tr[data-job-id='{job_id}'] a.job-link").inner_text() == name
    page.goto(f"/jobs/{job_id}")
    page.once("dialog", lambda d: d.accept())
    with page.expect_navigation():
        page.click("#delete-job")
    assert page.url.endswith("/jobs")
    assert not any(j.job_id == job_id for j in w.jobs.list(name=name))
    assert page.console_errors == []


def test_job_pages_need_a_session_and_csrf(anon_page, page, server, w, unique):
    anon_page.goto("/jobs/create")
    assert "/login?next=%2Fjobs%2Fcreate" in anon_page.url
    # A form post without the CSRF token creates nothing.
    sid = session_cookies(page)["by_session"]
    name = unique("csrfjob")
    r = requests.post(server.url + "/jobs/create", cookies={"by_session": sid}, allow_redirects=False, timeout=30,
                      data={"name": name, "notebook_path": "/Shared/x", "compute": "existing",
                            "cluster_id": "0000-000000-nocluster"})
    assert r.status_code == 403 and "Request refused" in r.text
    assert list(w.jobs.list(name=name)) == []


@pytest.mark.slow
def test_notebook_job_from_the_form_runs_and_shows_the_executed_notebook(page, server, w, cluster_id, unique):
    path = import_notebook(w, f"/Users/admin/uijobs/{unique('report')}", NOTEBOOK)
    name = unique("uijob")
    page.goto("/jobs/create")
    page.fill("input[name=name]", name)
    page.fill("#notebook-path", path)
    page.check("#compute-existing")
    page.select_option("#cluster-id", cluster_id)
    page.fill("#job-params", "who=ui-form\n# a comment line\n")
    shot(page, "job-create")
    with page.expect_navigation():
        page.click("#create-job-submit")
    job_id = int(re.search(r"/jobs/(\d+)$", page.url).group(1))
    task = w.jobs.get(job_id).settings.tasks[0]
    assert task.existing_cluster_id == cluster_id and task.notebook_task.base_parameters == {"who": "ui-form"}

    with page.expect_navigation():
        page.click("#run-now")
    run_id = int(re.search(rf"/jobs/{job_id}/runs/(\d+)$", page.url).group(1))
    # The page polls the run (htmx) until it ends; the SDK sees the same outcome.
    page.wait_for_selector("#run-body[data-state=SUCCESS]", timeout=RUN_WAIT_MS)
    run = w.jobs.get_run(run_id)
    assert run.job_id == job_id and run.state.result_state == jobs.RunResultState.SUCCESS
    assert page.locator("#run-state").inner_text() == "SUCCESS"
    assert page.locator(".task-result").inner_text() == "done-ui-form"
    assert w.jobs.get_run_output(run.tasks[0].run_id).notebook_output.result == "done-ui-form"

    nb = page.locator(".notebook")
    assert nb.locator(".nb-cell").count() == 6
    assert nb.locator(".nb-md h1").inner_text() == "Report for the UI test"
    # printed text is text: the <script> shows as characters and runs nothing
    stream = nb.locator("pre.nb-stream").first.inner_text()
    assert "hello ui-form <script>document.title='pwned-by-print'</script>" in stream
    assert page.locator(".notebook script").count() == 0
    # the Spark DataFrame as a table
    table = nb.locator("table.nb-table")
    assert table.locator("th").all_inner_texts() == ["n"]
    assert table.locator("tbody td").all_inner_texts() == ["0", "1", "2"]
    # the plot as an image that decodes
    img = nb.locator("img.nb-image")
    assert img.count() == 1 and img.get_attribute("src").startswith("data:image/png;base64,")
    assert page.evaluate("el => el.naturalWidth > 0", img.element_handle())
    # the HTML output in a sandboxed frame (no allow-same-origin, no scripts)
    frame_el = nb.locator("iframe.nb-html")
    assert frame_el.count() == 1
    assert frame_el.get_attribute("sandbox") == ""
    frame_el.scroll_into_view_if_needed()
    frame = page.frame_locator("iframe.nb-html")
    assert frame.locator("#inside-frame").inner_text() == "html output"
    assert "pwned" not in page.title()
    # the frame's document is served with a policy of its own that forbids scripts
    frame_src = frame_el.get_attribute("src")
    r = requests.get(server.url + frame_src, cookies=session_cookies(page), timeout=30)
    assert r.status_code == 200 and "script-src" not in r.headers["content-security-policy"]
    assert "default-src 'none'" in r.headers["content-security-policy"]
    # and only to a signed-in user
    r = requests.get(server.url + frame_src, allow_redirects=False, timeout=30)
    assert r.status_code == 303
    shot(page, "job-run")

    # The job page lists the run with its final state, so does Job runs.
    page.goto(f"/jobs/{job_id}")
    assert page.locator(f"tr[data-run-id='{run_id}'] .run-state").inner_text() == "SUCCESS"
    page.goto("/jobs")
    page.click("#job-runs")
    assert page.locator(f"tr[data-run-id='{run_id}'] .run-state").inner_text() == "SUCCESS"
    assert page.locator(f"tr[data-run-id='{run_id}'] a[href='/jobs/{job_id}']").inner_text() == name
    # The run_page_url the API gives (a Databricks hash route) opens the same page.
    assert run.run_page_url == f"{server.url}/#job/{job_id}/run/{run_id}"
    page.goto(run.run_page_url)
    page.wait_for_url(f"**/jobs/{job_id}/runs/{run_id}")
    assert page.locator("#run-state").inner_text() == "SUCCESS"
    # A one-time run (runs/submit) has a page of its own too, reached by its run_page_url; a failing
    # notebook shows its error and the cells that ran.
    failing = import_notebook(w, f"/Users/admin/uijobs/{unique('failing')}", FAILING)
    sub = w.jobs.submit(run_name=unique("ui-submit"), tasks=[jobs.SubmitTask(
        task_key="nb", existing_cluster_id=cluster_id,
        notebook_task=jobs.NotebookTask(notebook_path=failing, base_parameters={"who": "submit"}))]).run_id
    page.goto(w.jobs.get_run(sub).run_page_url)
    page.wait_for_url(f"**/jobs/runs/{sub}")
    page.wait_for_selector("#run-body[data-state=FAILED]", timeout=RUN_WAIT_MS)
    assert w.jobs.get_run(sub).state.result_state == jobs.RunResultState.FAILED
    assert "ui says no <b>submit</b>" in page.locator(".task-error").inner_text()
    assert "hello submit" in page.locator("pre.nb-stream").first.inner_text()
    error = page.locator("pre.nb-error").last.inner_text()
    assert "RuntimeError: ui says no <b>submit</b>" in error
    # A task run's id (the run_page_url of a task) opens its job run at the task.
    task_run_id = run.tasks[0].run_id
    page.goto(f"/jobs/{job_id}/runs/{task_run_id}")
    assert page.url.endswith(f"/jobs/{job_id}/runs/{run_id}#task-{task_run_id}")
    # The only complaints: the browser refusing the HTML output's script in its sandboxed frame.
    assert page.console_errors and all("Blocked script execution" in e and "sandboxed" in e and "/output/2/0" in e
                                       for e in page.console_errors), page.console_errors
    w.jobs.delete(job_id)


def test_other_users_see_only_their_jobs(browser, server, w, unique):
    name = unique("adminjob")
    spec = ClusterSpec(spark_version="17.3.x-cpu-ml-scala2.13", node_type_id="local.small", num_workers=0)
    job_id = w.jobs.create(name=name, tasks=[jobs.Task(task_key="t", new_cluster=spec, notebook_task=jobs.NotebookTask(
        notebook_path="/Shared/nothing"))]).job_id
    _, token = server.new_user(unique("jobviewer"))
    context, page = _new_page(browser, server)
    try:
        login_with_token(page, token)
        page.goto("/jobs")
        assert page.locator(f"tr[data-job-id='{job_id}']").count() == 0
        response = page.goto(f"/jobs/{job_id}")
        assert response.status == 403
        assert "does not have Manage permission on job" in page.locator("main").inner_text()
        # Run now through a forged form post is refused by the service as well.
        r = requests.post(f"{server.url}/jobs/{job_id}/run-now", cookies=session_cookies(page),
                          headers={"X-CSRF-Token": csrf_of(page)}, allow_redirects=False, timeout=30)
        assert r.status_code == 403
        assert list(w.jobs.list_runs(job_id=job_id)) == []
    finally:
        context.close()
        w.jobs.delete(job_id)
