"""dbutils.library.restartPython(): a fresh Python process for the notebook, in contexts and notebook jobs.

Real server, the shared real-Spark cluster, the databricks-sdk clients. The kernel process ids are
read inside the kernels (os.getpid()) and checked from this process (/proc).
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import zipfile
from datetime import timedelta
from pathlib import Path

import pytest
from databricks.sdk.service import compute, jobs
from databricks.sdk.service.workspace import ImportFormat, Language

from command_support import environ_of, wait_for

from brickyard.compute.runtime import pid_alive
from brickyard.runtime.dbutils import RESTART_NOTE

pytestmark = pytest.mark.slow
T = timedelta(minutes=3)
NOTE = RESTART_NOTE


def run(w, cluster_id, ctx, code):
    r = w.command_execution.execute_and_wait(cluster_id=cluster_id, context_id=ctx, language=compute.Language.PYTHON,
                                             command=code, timeout=T)
    assert r.status == compute.CommandStatus.FINISHED, r
    return r.results


def text(w, cluster_id, ctx, code) -> str:
    results = run(w, cluster_id, ctx, code)
    assert results.result_type == compute.ResultType.TEXT, (results.summary, results.cause)
    return results.data


def processes_with(arg: str) -> list[int]:
    """Processes whose command line holds `arg` (a kernel's connection file)."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if arg.encode() in (proc / "cmdline").read_bytes().split(b"\0"):
                    found.append(int(proc.name))
            except OSError:
                continue
    return found


def check_restart(server, uw, user, cluster_id, ctx_id, scope):
    """The restart contract on one context of `user`: Python state gone, the same identity, a new process."""
    contexts = server.workspace.services["contexts"]
    old_pid = int(text(uw, cluster_id, ctx_id, "import os, decimal\nx = 1\nprint(os.getpid())"))
    assert contexts.contexts[ctx_id].kernel.provisioner.pid == old_pid
    r = run(uw, cluster_id, ctx_id, "print('before')\ndbutils.library.restartPython()\nprint('after the call')")
    assert r.result_type == compute.ResultType.TEXT, (r.summary, r.cause)
    assert r.data == "before\n" + NOTE
    # Python state is gone: variables and imports.
    r = run(uw, cluster_id, ctx_id, "x")
    assert r.result_type == compute.ResultType.ERROR and r.summary.startswith("NameError"), r
    r = run(uw, cluster_id, ctx_id, "decimal")
    assert r.result_type == compute.ResultType.ERROR and r.summary.startswith("NameError"), r
    # The same context, user and Spark driver; dbutils (widgets, secrets, fs) predefined again.
    code = ("import os, requests\n"
            "me = requests.get(os.environ['DATABRICKS_HOST'] + '/api/2.0/preview/scim/v2/Me',\n"
            "                  headers={'Authorization': 'Bearer ' + os.environ['DATABRICKS_TOKEN']}).json()\n"
            "dbutils.widgets.text('w', 'v0')\n"
            "print(os.getpid(), me['userName'], os.environ['BRICKYARD_USER'], 'BRICKYARD_SPARE_KERNEL' in os.environ,\n"
            f"      spark.range(3).count(), dbutils.widgets.get('w'), dbutils.secrets.get({scope!r}, 'k') == 's3cr3t',\n"
            "      os.environ['BRICKYARD_CONTEXT_ID'])")
    new_pid, *rest = text(uw, cluster_id, ctx_id, code).split()
    assert rest == [user, user, "False", "3", "v0", "True", f"ctx-{ctx_id}"]
    assert int(new_pid) != old_pid and contexts.contexts[ctx_id].kernel.provisioner.pid == int(new_pid)
    assert not pid_alive(old_pid)
    env = environ_of(int(new_pid))
    assert env["BRICKYARD_USER"] == user and "BRICKYARD_SPARE_KERNEL" not in env
    assert text(uw, cluster_id, ctx_id, "y = 2\nprint(y * 21)") == "42"
    return old_pid, int(new_pid)


def test_restart_python_in_contexts_from_a_spare_and_fresh(server, w, cluster_id, unique):
    """Both kinds of context kernel: the cluster's spare (started without a user, bound later: the new
    process must be the user's from its start) and a kernel started for the context."""
    contexts = server.workspace.services["contexts"]
    spare_pid = wait_for(lambda: contexts.spare_pid(cluster_id), what="a spare kernel")
    user = unique("restart-user")
    _, token = server.new_user(user)
    uw = server.client(token)
    scope = unique("restart-scope")
    uw.secrets.create_scope(scope)
    uw.secrets.put_secret(scope, "k", string_value="s3cr3t")
    # The first context takes the spare; the second, created at once, starts its own kernel (the spare's
    # replacement starts seconds later).
    first = uw.command_execution.create(cluster_id=cluster_id, language=compute.Language.PYTHON).context_id
    second = uw.command_execution.create(cluster_id=cluster_id, language=compute.Language.PYTHON).context_id
    try:
        for ctx_id in (first, second):
            wait_for(lambda c=ctx_id: uw.command_execution.context_status(cluster_id, c).status
                     == compute.ContextStatus.RUNNING, what="a running context")
        assert contexts.contexts[first].kernel.provisioner.pid == spare_pid
        assert contexts.contexts[first].kernel._launch_args["env"]["BRICKYARD_SPARE_KERNEL"] == "1"
        assert "BRICKYARD_SPARE_KERNEL" not in contexts.contexts[second].kernel._launch_args["env"]
        check_restart(server, uw, user, cluster_id, first, scope)
        check_restart(server, uw, user, cluster_id, second, scope)
        # A second restart of the same context works too.
        check_restart(server, uw, user, cluster_id, first, scope)
    finally:
        for ctx_id in (first, second):
            uw.command_execution.destroy(cluster_id, ctx_id)
        uw.secrets.delete_scope(scope)


def test_commands_queued_behind_a_restart_run_in_the_new_process(server, w, cluster_id):
    """Commands sent while the restart is under way wait for it, then run in the new process; destroying the
    context right after a restart leaves no kernel behind."""
    contexts = server.workspace.services["contexts"]
    ctx = w.command_execution.create_and_wait(cluster_id=cluster_id, language=compute.Language.PYTHON, timeout=T)
    destroyed = False
    try:
        old_pid = int(text(w, cluster_id, ctx.id, "import os\nx = 5\nprint(os.getpid())"))
        restart = w.command_execution.execute(cluster_id=cluster_id, context_id=ctx.id,
                                              language=compute.Language.PYTHON,
                                              command="dbutils.library.restartPython()").command_id
        queued = [w.command_execution.execute(cluster_id=cluster_id, context_id=ctx.id,
                                              language=compute.Language.PYTHON, command=code).command_id
                  for code in ("print(os.getpid())", "print(globals().get('x'))",
                               "import os\nprint(os.getpid(), spark.range(4).count())")]
        wait = [w.command_execution.wait_command_status_command_execution_finished_or_error(
            cluster_id=cluster_id, context_id=ctx.id, command_id=c, timeout=T) for c in [restart, *queued]]
        assert wait[0].results.data == RESTART_NOTE
        assert wait[1].results.result_type == compute.ResultType.ERROR and "NameError" in wait[1].results.summary
        assert wait[2].results.data == "None"
        new_pid, count = wait[3].results.data.split()
        assert int(new_pid) != old_pid and count == "4" and not pid_alive(old_pid)
        # A destroy while the process is being replaced: the new process is stopped too, nothing outlives it.
        context = contexts.contexts[ctx.id]
        connection_file = os.path.realpath(context.kernel.connection_file)
        w.command_execution.execute(cluster_id=cluster_id, context_id=ctx.id, language=compute.Language.PYTHON,
                                    command="dbutils.library.restartPython()")
        wait_for(lambda: context.restarting, timeout=120, what="the restart to begin")
        w.command_execution.destroy(cluster_id, ctx.id)
        destroyed = True
        wait_for(lambda: not context.restarting and not processes_with(connection_file), timeout=180,
                 what="the context's kernel to stop")
        assert not pid_alive(int(new_pid))
    finally:
        if not destroyed:
            w.command_execution.destroy(cluster_id, ctx.id)


def wheel(folder: Path, name: str, version: str) -> Path:
    """A pure-Python wheel (PEP 427) holding one module, `name`, with VERSION = version.

    Written with zipfile: this venv has setuptools but not the `wheel` package, so setuptools cannot
    build one offline; the file is what bdist_wheel would produce for such a project.
    """
    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}.py": f"VERSION = {version!r}\n",
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: brickyard-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, body in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(body.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(body.encode())}")
    files[f"{dist}/RECORD"] = "\n".join(record + [f"{dist}/RECORD,,"]) + "\n"
    out = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(out, "w") as zf:
        for path, body in files.items():
            zf.writestr(path, body)
    return out


def test_pip_upgrade_of_an_imported_package_needs_restart_python(w, cluster_id, unique, tmp_path):
    name = unique("restartprobe").replace("-", "_")
    v1, v2 = wheel(tmp_path, name, "1.0"), wheel(tmp_path, name, "2.0")
    ctx = w.command_execution.create_and_wait(cluster_id=cluster_id, language=compute.Language.PYTHON, timeout=T)
    try:
        run(w, cluster_id, ctx.id, f"%pip install --no-index --no-deps {v1}")
        assert text(w, cluster_id, ctx.id, f"import {name}\nprint({name}.VERSION)") == "1.0"
        out = text(w, cluster_id, ctx.id, f"%pip install --no-index --no-deps {v2}")
        assert f"Successfully installed {name}-2.0" in out
        # Without a restart the process keeps the module it imported.
        assert text(w, cluster_id, ctx.id, f"import {name}\nprint({name}.VERSION)") == "1.0"
        assert text(w, cluster_id, ctx.id, "dbutils.library.restartPython()").startswith(NOTE)
        assert text(w, cluster_id, ctx.id, f"import {name}\nprint({name}.VERSION)") == "2.0"
    finally:
        w.command_execution.destroy(cluster_id, ctx.id)


NOTEBOOK = """# Databricks notebook source
import json, os
x = 41
dbutils.fs.put("{marker}/pid", str(os.getpid()), True)

# COMMAND ----------

print("restarting")
dbutils.library.restartPython()
dbutils.fs.put("{marker}/after-the-call", "ran", True)

# COMMAND ----------

import json, os
state = {{
    "x_gone": "x" not in globals(),
    "pid_changed": int(dbutils.fs.head("{marker}/pid")) != os.getpid(),
    "old_pid": int(dbutils.fs.head("{marker}/pid")),
    "after_the_call_ran": any(f.name == "after-the-call" for f in dbutils.fs.ls("{marker}")),
    "widget": dbutils.widgets.get("p"),
    "count": spark.range(7).count(),
}}

# COMMAND ----------

dbutils.notebook.exit(json.dumps(state))
"""


def test_notebook_job_goes_on_in_the_restarted_process(w, cluster_id, unique):
    marker = f"/tmp/{unique('restart-job')}"
    path = f"/Shared/jobs/{unique('restart')}"
    w.workspace.mkdirs(path.rsplit("/", 1)[0])
    w.workspace.import_(path, content=base64.b64encode(NOTEBOOK.format(marker=marker).encode()).decode(),
                        format=ImportFormat.SOURCE, language=Language.PYTHON, overwrite=True)
    task = jobs.SubmitTask(task_key="nb", existing_cluster_id=cluster_id, notebook_task=jobs.NotebookTask(
        notebook_path=path, base_parameters={"p": "kept"}), timeout_seconds=300)
    run = w.jobs.submit_and_wait(run_name="restart", tasks=[task], timeout=timedelta(minutes=6))
    assert run.state.result_state == jobs.RunResultState.SUCCESS, run.state
    out = w.jobs.get_run_output(run.tasks[0].run_id)
    state = json.loads(out.notebook_output.result)
    assert state == {"x_gone": True, "pid_changed": True, "old_pid": state["old_pid"], "after_the_call_ran": False,
                     "widget": "kept", "count": 7}
    assert not pid_alive(state["old_pid"])
    w.dbfs.delete(marker, recursive=True)


def test_restart_python_in_a_jupyter_kernel_keeps_the_frontend_connected(server, cluster_id, unique, tmp_path):
    """The kernelspec's stand-in (what JupyterLab, VS Code, nbclient start) over the relay: the cell ends with the
    note, the next cell (sent at once) runs in a new process of the same remote kernel, the connection stays."""
    import subprocess
    import sys

    from jupyter_client.manager import start_new_kernel

    user = unique("restart-lab")
    _, token = server.new_user(user)
    data_dir = tmp_path / "jupyter"
    env = {**os.environ, "DATABRICKS_TOKEN": token}
    env.pop("DATABRICKS_HOST", None)
    subprocess.run([sys.executable, "-m", "brickyard.cli", "jupyter", "--host", server.url, "--kernelspecs-only",
                    "--data-dir", str(data_dir), "--cluster", cluster_id], env=env, check=True, timeout=120,
                   capture_output=True)
    os.environ["JUPYTER_PATH"] = str(data_dir)
    try:
        km, kc = start_new_kernel(kernel_name=f"brickyard-{cluster_id}", startup_timeout=120)
    finally:
        del os.environ["JUPYTER_PATH"]
    kernels = server.workspace.services["kernels"]

    def run_cell(code):
        msgs = []
        reply = kc.execute_interactive(code, timeout=120, output_hook=msgs.append)
        out = "".join(m["content"].get("text", "") for m in msgs if m["msg_type"] == "stream")
        out += "".join(m["content"]["data"].get("text/plain", "") for m in msgs
                       if m["msg_type"] in ("display_data", "execute_result"))
        return reply["content"], out

    try:
        content, out = run_cell("import os\nx = 1\nprint(os.getpid())")
        old_pid = int(out)
        remote = [k for k in kernels.kernels.values() if k.owner.user_name == user]
        assert len(remote) == 1 and remote[0].km.provisioner.pid == old_pid
        content, out = run_cell("dbutils.library.restartPython()\nprint('after the call')")
        assert content["status"] == "ok" and out == RESTART_NOTE
        # Sent at once: the relay holds it until the new process is up.
        content, out = run_cell("print('x' in globals())")
        assert content["status"] == "ok" and out == "False\n"
        content, out = run_cell("import os\nprint(os.getpid(), spark.range(5).count(), os.environ['BRICKYARD_USER'])")
        new_pid, count, who = out.split()
        assert int(new_pid) != old_pid and count == "5" and who == user and not pid_alive(old_pid)
        assert remote[0].state == "RUNNING" and remote[0].km.provisioner.pid == int(new_pid)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    wait_for(lambda: remote[0].state == "TERMINATED" and not pid_alive(int(new_pid)), what="the kernel to end")


def test_restart_python_in_a_child_notebook_restarts_the_kernel(w, cluster_id, unique):
    """A notebook run with dbutils.notebook.run runs in the caller's kernel (its output hidden): its
    restartPython() restarts that process and ends the calling command, which shows the note."""
    child = f"/Shared/jobs/{unique('restart-child')}"
    w.workspace.mkdirs(child.rsplit("/", 1)[0])
    source = "# Databricks notebook source\nprint('in the child')\ndbutils.library.restartPython()\n"
    w.workspace.import_(child, content=base64.b64encode(source.encode()).decode(), format=ImportFormat.SOURCE,
                        language=Language.PYTHON, overwrite=True)
    ctx = w.command_execution.create_and_wait(cluster_id=cluster_id, language=compute.Language.PYTHON, timeout=T)
    try:
        old_pid = int(text(w, cluster_id, ctx.id, "import os\nx = 1\nprint(os.getpid())"))
        assert text(w, cluster_id, ctx.id, f"dbutils.notebook.run({child!r}, 60)\nprint('after')") == NOTE
        assert text(w, cluster_id, ctx.id, "print('x' in globals())") == "False"
        assert int(text(w, cluster_id, ctx.id, "import os\nprint(os.getpid())")) != old_pid
        assert not pid_alive(old_pid)
    finally:
        w.command_execution.destroy(cluster_id, ctx.id)
